//! `connector: generate` — the plugin of the `generate` connector (crate `lodestar-generate`):
//! a deterministic event table, computed rather than read, that proves and measures the
//! plugin path without any service.

/// A plugin has its own allocator, apart from the host's: mimalloc, like the `lodestar` binary,
/// so that the rows a scan builds here cost what they cost natively (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

lodestar_connector_api::export_connector!(lodestar_generate::Generate);
