//! The throwaway PostgreSQL cluster of the tests, shared with the benchmarks: see
//! `lodestar_testkit::postgres`.

pub use lodestar_testkit::postgres::*;
