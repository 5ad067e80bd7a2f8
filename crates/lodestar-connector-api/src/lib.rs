//! The contract between Lodestar and its connector plugins, and the SDK to write one.
//!
//! A connector plugin is a `cdylib` that Lodestar loads at run time. It exports one C-ABI
//! symbol, [`ENTRY_SYMBOL`], returning a [`ConnectorDescriptor`]: the ABI version, the
//! connector's name and version, the DataFusion version it was built with, the JSON Schema
//! of its options, and a constructor. The constructor turns a source's options into a
//! `datafusion-ffi` schema provider, so tables, projection/filter/limit pushdown and streaming
//! all cross the boundary through DataFusion's own FFI types. No Rust trait object ever
//! crosses it: there is no stable Rust ABI.
//!
//! # Writing a connector
//!
//! Implement [`Connector`] and call [`export_connector!`]; everything unsafe lives in this
//! crate.
//!
//! ```
//! use std::sync::Arc;
//! use lodestar_connector_api::{Connector, ConnectContext, Options, BoxError, export_connector};
//! use lodestar_connector_api::datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
//!
//! struct Nothing;
//!
//! impl Connector for Nothing {
//!     const NAME: &'static str = "nothing";
//!
//!     fn options_schema() -> serde_json::Value {
//!         serde_json::json!({
//!             "type": "object",
//!             "properties": { "greeting": { "type": "string" } },
//!             "additionalProperties": false
//!         })
//!     }
//!
//!     fn connect(_options: Options, _cx: &ConnectContext) -> Result<Arc<dyn SchemaProvider>, BoxError> {
//!         Ok(Arc::new(MemorySchemaProvider::new()))
//!     }
//! }
//!
//! export_connector!(Nothing);
//! ```
//!
//! In `Cargo.toml`, build it as a `cdylib` named `lodestar_connector_<name>`, so the host finds
//! `liblodestar_connector_<name>.so` (`.dylib`, `.dll`) on its plugin path.
//!
//! # Guarantees the SDK gives the host
//!
//! - A panic in the connector (in `connect`, in planning a scan, in a stream) becomes an error
//!   of that call; it never unwinds across the C ABI (which would abort the host).
//! - The connector's async work runs on a Tokio runtime owned by the plugin: the plugin has its
//!   own copy of Tokio, and the host's runtime is invisible to it.

mod abi;
#[cfg(feature = "host")]
mod foreign;
mod guard;
#[cfg(feature = "host")]
pub mod host;
pub mod kit;

use std::sync::Arc;

pub use abi::{ABI_VERSION, ConnectorDescriptor, ENTRY_SYMBOL};
pub use datafusion;
pub use datafusion_ffi;
pub use guard::PANIC_DETAILS_VAR;
pub use serde_json;
pub use tokio;

use datafusion::catalog::SchemaProvider;

/// A source's options as written in `lodestar.yaml` (after `${ENV}` interpolation), without
/// `connector`. They have been checked against [`Connector::options_schema`] by the host.
pub type Options = serde_json::Map<String, serde_json::Value>;

/// The error a connector returns; its message reaches the user, naming the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a connector gets to work with while connecting.
#[derive(Debug)]
pub struct ConnectContext {
    runtime: tokio::runtime::Handle,
}

impl ConnectContext {
    /// The plugin's own Tokio runtime: spawn on it, or `block_on` it to do async work while
    /// connecting. Providers handed back keep running their futures and streams on it.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}

/// A connector: a kind of source, such as `s3` or `postgres`.
pub trait Connector: 'static {
    /// The name written in `connector:` of a source.
    const NAME: &'static str;

    /// A JSON Schema (an object schema) of the options. The host validates a source's options
    /// against it before [`Connector::connect`] runs, so unknown or missing options are errors
    /// naming the option and its line. Use `"additionalProperties": false` to refuse typos.
    fn options_schema() -> serde_json::Value;

    /// Opens the source: returns a schema provider whose tables are the source's tables.
    fn connect(options: Options, cx: &ConnectContext) -> Result<Arc<dyn SchemaProvider>, BoxError>;
}

/// Exports a [`Connector`] as this library's plugin entry point.
///
/// Call it once, in the crate root of a `cdylib`.
///
/// `export_connector!(MyConnector, allocator = mimalloc)` also declares the library's global
/// allocator: mimalloc, as the `lodestar` binary allocates, in the build that is safe in a
/// library loaded with `dlopen` (mimalloc 2 with local-dynamic thread-locals; the crate's
/// default build crashes the host). Take it unless your crate declares an allocator itself or
/// is also linked into a program as a library: a program has one global allocator
/// (docs/connectors.md, "The allocator").
#[macro_export]
macro_rules! export_connector {
    ($connector:ty, allocator = mimalloc) => {
        $crate::export_connector!($connector);

        /// The plugin's global allocator: mimalloc, built for a library loaded with `dlopen`.
        #[global_allocator]
        static LODESTAR_CONNECTOR_ALLOCATOR: $crate::__private::MiMalloc =
            $crate::__private::MiMalloc;
    };
    ($connector:ty) => {
        /// The plugin entry point Lodestar looks up; see `lodestar_connector_api::ENTRY_SYMBOL`.
        #[allow(unsafe_code)] // Exporting an unmangled symbol is what makes this a plugin.
        #[unsafe(no_mangle)]
        pub extern "C" fn lodestar_connector_descriptor() -> *const $crate::ConnectorDescriptor {
            static DESCRIPTOR: ::std::sync::OnceLock<
                ::std::option::Option<$crate::ConnectorDescriptor>,
            > = ::std::sync::OnceLock::new();
            DESCRIPTOR
                .get_or_init(|| {
                    $crate::__private::describe::<$connector>(env!("CARGO_PKG_VERSION"))
                })
                .as_ref()
                .map_or(::std::ptr::null(), |d| d as *const _)
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::abi::describe;
    pub use mimalloc::MiMalloc;
}

/// The DataFusion version this crate (and so every plugin built with it) was compiled with.
pub fn datafusion_version() -> &'static str {
    datafusion::DATAFUSION_VERSION
}

/// The connector guide's examples, compiled as doctests so the guide cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/connectors.md")]
pub struct ConnectorGuide;
