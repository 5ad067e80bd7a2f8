//! Throwaway services for the end-to-end tests (`tests/`) and the benchmarks
//! (`crates/lodestar-bench`), started from what is on the machine and removed afterwards, so
//! neither assumes a running server.
//!
//! - [`cargo`]: cargo started from a test or xtask without the variables that would rebuild
//!   half of the workspace.
//! - [`postgres`]: a PostgreSQL cluster (`initdb` + `pg_ctl` on a free port in a temp dir).
//! - [`load`]: keep-alive HTTP clients driving a server, every answer checked, latencies as
//!   percentiles (the server load test and `lodestar-bench server`).

pub mod cargo;
pub mod load;
pub mod postgres;
