//! `connector: generate` — the plugin of the `generate` connector (crate `lodestar-generate`):
//! a deterministic event table, computed rather than read, that proves and measures the
//! plugin path without any service.
//!
//! The connector is a library of its own because the benchmarks also link it natively, and a
//! program has one global allocator: only this `cdylib` declares the plugin's (mimalloc, like
//! the `lodestar` binary, so that the rows a scan builds here cost what they cost natively).

lodestar_connector_api::export_connector!(lodestar_generate::Generate, allocator = mimalloc);
