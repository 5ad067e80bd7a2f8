//! The C ABI: the descriptor a plugin exports and the constructor behind it.
//!
//! The descriptor is a `#[repr(C)]` struct whose first field is always the ABI version, so a
//! host can read that one field from a plugin of any version and refuse a mismatch before it
//! touches anything else.

// The ABI is raw pointers and `extern "C"` functions by nature; every unsafe block says why
// it is sound.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use datafusion_ffi::ffi_option::FFI_Result;
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use datafusion_ffi::schema_provider::FFI_SchemaProvider;

use crate::guard::{Guard, GuardedSchemaProvider, panic_message, plugin_runtime};
use crate::kit::error::chain;
use crate::{ConnectContext, Connector, Options};

/// The version of [`ConnectorDescriptor`] and of the constructor's contract. A host refuses a
/// plugin built for another one.
pub const ABI_VERSION: u32 = 1;

/// The symbol every plugin exports: `extern "C" fn() -> *const ConnectorDescriptor`.
pub const ENTRY_SYMBOL: &str = "lodestar_connector_descriptor";

/// Turns a source's options (a JSON object, UTF-8, `options_len` bytes) into a schema
/// provider, or an error message.
pub type ConnectFn = unsafe extern "C" fn(
    options: *const u8,
    options_len: usize,
    codec: FFI_LogicalExtensionCodec,
) -> FFI_Result<FFI_SchemaProvider>;

/// What a plugin says about itself. Strings are NUL-terminated UTF-8 owned by the plugin and
/// live as long as it is loaded.
#[repr(C)]
pub struct ConnectorDescriptor {
    /// Always the first field: see [`ABI_VERSION`].
    pub abi_version: u32,
    /// `datafusion_ffi::version()` of the plugin: FFI layouts change between its majors.
    pub ffi_version: u64,
    pub name: *const c_char,
    pub version: *const c_char,
    pub datafusion_version: *const c_char,
    /// The JSON Schema of the options, as JSON text.
    pub options_schema: *const c_char,
    pub connect: ConnectFn,
}

// SAFETY: the descriptor is immutable after construction and its pointers are to leaked,
// never-freed strings, so sharing it between threads is sound.
unsafe impl Send for ConnectorDescriptor {}
// SAFETY: as above.
unsafe impl Sync for ConnectorDescriptor {}

impl std::fmt::Debug for ConnectorDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorDescriptor")
            .field("abi_version", &self.abi_version)
            .field("ffi_version", &self.ffi_version)
            .finish_non_exhaustive()
    }
}

/// Builds the descriptor of `C`; `None` if describing it panicked.
pub fn describe<C: Connector>(version: &'static str) -> Option<ConnectorDescriptor> {
    catch_unwind(|| ConnectorDescriptor {
        abi_version: ABI_VERSION,
        ffi_version: datafusion_ffi::version(),
        name: leak(C::NAME),
        version: leak(version),
        datafusion_version: leak(datafusion::DATAFUSION_VERSION),
        options_schema: leak(&C::options_schema().to_string()),
        connect: connect::<C>,
    })
    .ok()
}

/// A C string that lives as long as the plugin: the descriptor is built once per process.
fn leak(s: &str) -> *const c_char {
    CString::new(s.replace('\0', ""))
        .expect("NUL bytes were removed")
        .into_raw()
}

/// The constructor behind [`ConnectorDescriptor::connect`]. Never unwinds: a panic of the
/// connector becomes an error message.
unsafe extern "C" fn connect<C: Connector>(
    options: *const u8,
    options_len: usize,
    codec: FFI_LogicalExtensionCodec,
) -> FFI_Result<FFI_SchemaProvider> {
    // SAFETY: the host passes a pointer and length of a UTF-8 buffer it keeps alive for the
    // duration of this call (see `host::Plugin::connect`).
    let bytes = unsafe { std::slice::from_raw_parts(options, options_len) };
    let outcome = catch_unwind(AssertUnwindSafe(
        || -> Result<FFI_SchemaProvider, String> {
            let options: Options = serde_json::from_slice(bytes)
                .map_err(|e| format!("the options are not a JSON object: {e}"))?;
            let runtime = plugin_runtime(C::NAME)?;
            let cx = ConnectContext {
                runtime: runtime.clone(),
            };
            let provider = C::connect(options, &cx).map_err(|e| chain(e.as_ref()))?;
            let guarded = Arc::new(GuardedSchemaProvider::new(
                provider,
                Guard::new(runtime.clone(), C::NAME),
            ));
            Ok(FFI_SchemaProvider::new_with_ffi_codec(
                guarded,
                Some(runtime),
                codec,
            ))
        },
    ));
    match outcome {
        Ok(Ok(provider)) => FFI_Result::Ok(provider),
        Ok(Err(message)) => FFI_Result::Err(message.as_str().into()),
        Err(panic) => FFI_Result::Err(
            format!("the connector panicked: {}", panic_message(panic.as_ref()))
                .as_str()
                .into(),
        ),
    }
}
