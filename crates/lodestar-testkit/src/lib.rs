//! Throwaway services for the end-to-end tests (`tests/`) and the benchmarks
//! (`crates/lodestar-bench`), started from what is on the machine and removed afterwards, so
//! neither assumes a running server.
//!
//! - [`cargo`]: cargo started from a test or xtask without the variables that would rebuild
//!   half of the workspace.
//! - [`postgres`]: a PostgreSQL cluster (`initdb` + `pg_ctl` on a free port in a temp dir).
//! - [`load`]: keep-alive HTTP clients driving a server, every answer checked, latencies as
//!   percentiles (the server load test and `lodestar-bench server`).
//! - [`s3`] (feature `s3`): an S3-protocol server over a temp directory on a loopback port,
//!   counting requests and bytes and answering faults on demand (the S3 and Amplitude tests).
//! - [`amplitude`] (feature `amplitude`): Amplitude's Export API on a loopback port (the
//!   Amplitude tests).

#[cfg(feature = "amplitude")]
pub mod amplitude;
pub mod cargo;
pub mod load;
pub mod postgres;
#[cfg(feature = "s3")]
pub mod s3;
