//! Throwaway services for the end-to-end tests (`tests/`) and the benchmarks
//! (`crates/lodestar-bench`), started from what is on the machine and removed afterwards, so
//! neither assumes a running server.
//!
//! - [`postgres`]: a PostgreSQL cluster (`initdb` + `pg_ctl` on a free port in a temp dir).
//! - [`load`]: keep-alive HTTP clients driving a server, every answer checked, latencies as
//!   percentiles (the server load test and `lodestar-bench server`).

pub mod load;
pub mod postgres;
