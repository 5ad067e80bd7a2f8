//! The host side: loading a plugin library, checking it, and calling its constructor.
//!
//! A library is loaded once per process and never unloaded: providers, streams and strings
//! handed out by a plugin point into its code, and nothing can prove they are all gone.

// Loading a library and calling into it is unsafe by nature; each block says why it is sound
// given the checks before it.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, c_char};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::catalog::SchemaProvider;
use datafusion_ffi::ffi_option::FFI_Result;
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;

use crate::Options;
use crate::abi::{ABI_VERSION, ConnectFn, ConnectorDescriptor, ENTRY_SYMBOL};
use crate::foreign::ForeignSchema;

/// A loaded, checked plugin.
pub struct Plugin {
    pub path: PathBuf,
    /// The connector name it declares.
    pub name: String,
    pub version: String,
    /// The DataFusion version it was built with.
    pub datafusion_version: String,
    /// The JSON Schema of its options.
    pub options_schema: serde_json::Value,
    connect: ConnectFn,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("datafusion_version", &self.datafusion_version)
            .finish_non_exhaustive()
    }
}

/// Why a library is not a usable plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The dynamic loader refused the file.
    Open { path: PathBuf, message: String },
    /// The library has no entry symbol: it is not a Lodestar connector.
    NoEntryPoint { path: PathBuf },
    /// The entry point returned nothing (describing the connector failed or panicked).
    NoDescriptor { path: PathBuf },
    /// Built for another version of this ABI.
    AbiMismatch {
        path: PathBuf,
        plugin: u32,
        host: u32,
    },
    /// Built with a DataFusion whose FFI layouts differ from the host's.
    DataFusionMismatch {
        path: PathBuf,
        plugin: String,
        host: String,
    },
    /// The descriptor's contents are unusable (a string that is not UTF-8, bad JSON).
    BadDescriptor { path: PathBuf, message: String },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Open { path, message } => write!(
                f,
                "cannot load plugin {}: it is not a shared library this system can load ({message})",
                path.display()
            ),
            LoadError::NoEntryPoint { path } => write!(
                f,
                "{} is not a Lodestar connector plugin: it exports no `{ENTRY_SYMBOL}`",
                path.display()
            ),
            LoadError::NoDescriptor { path } => write!(
                f,
                "plugin {} failed to describe itself (its entry point returned nothing)",
                path.display()
            ),
            LoadError::AbiMismatch { path, plugin, host } => write!(
                f,
                "plugin {} was built for connector ABI version {plugin}, but this Lodestar speaks version {host}",
                path.display()
            ),
            LoadError::DataFusionMismatch { path, plugin, host } => write!(
                f,
                "plugin {} was built with DataFusion {plugin}, but this Lodestar uses DataFusion {host}; their FFI layouts differ",
                path.display()
            ),
            LoadError::BadDescriptor { path, message } => {
                write!(
                    f,
                    "plugin {} has an unusable descriptor: {message}",
                    path.display()
                )
            }
        }
    }
}

impl LoadError {
    /// The library the error is about.
    pub fn path(&self) -> &Path {
        match self {
            LoadError::Open { path, .. }
            | LoadError::NoEntryPoint { path }
            | LoadError::NoDescriptor { path }
            | LoadError::AbiMismatch { path, .. }
            | LoadError::DataFusionMismatch { path, .. }
            | LoadError::BadDescriptor { path, .. } => path,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> String {
        let file = self
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self {
            LoadError::Open { .. } | LoadError::NoEntryPoint { .. } => format!(
                "a file named like {file} on the plugin path must be a connector plugin built for this platform; remove or rename it if it is something else, or rebuild the plugin (`cargo xtask plugins` builds the bundled ones)"
            ),
            LoadError::NoDescriptor { .. } | LoadError::BadDescriptor { .. } => format!(
                "the plugin is broken: rebuild {file} with `lodestar_connector_api::export_connector!`, or remove it from the plugin path"
            ),
            LoadError::AbiMismatch { .. } => format!(
                "rebuild {file} against this Lodestar's lodestar-connector-api, or use the Lodestar it was built for"
            ),
            LoadError::DataFusionMismatch { host, .. } => format!(
                "rebuild {file} with DataFusion {host} (the version lodestar-connector-api re-exports), or use a Lodestar built with the plugin's DataFusion"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// Loads the plugin at `path`, or returns the one already loaded from there.
///
/// The ABI version is read and checked before anything else of the library is used, then the
/// DataFusion FFI version; only then are the other fields read.
pub fn load(path: &Path) -> Result<Arc<Plugin>, LoadError> {
    static LOADED: Mutex<Option<HashMap<PathBuf, Arc<Plugin>>>> = Mutex::new(None);
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let loaded = loaded.get_or_insert_with(HashMap::new);
    if let Some(plugin) = loaded.get(&key) {
        return Ok(Arc::clone(plugin));
    }
    let plugin = Arc::new(open(&key)?);
    loaded.insert(key, Arc::clone(&plugin));
    Ok(plugin)
}

fn open(path: &Path) -> Result<Plugin, LoadError> {
    let path_buf = path.to_path_buf();
    // SAFETY: loading runs the library's initialisers. Plugins are libraries the user put on
    // the plugin path to be run; that is the trust this whole mechanism rests on.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open {
        path: path_buf.clone(),
        message: e.to_string(),
    })?;
    // Never unloaded: see the module documentation.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol's type is fixed by the ABI for every version: a function without
    // arguments returning a pointer to a descriptor.
    let entry = unsafe {
        library.get::<extern "C" fn() -> *const ConnectorDescriptor>(ENTRY_SYMBOL.as_bytes())
    }
    .map_err(|_| LoadError::NoEntryPoint {
        path: path_buf.clone(),
    })?;
    let descriptor = entry();
    if descriptor.is_null() {
        return Err(LoadError::NoDescriptor { path: path_buf });
    }
    // SAFETY: every ABI version starts its descriptor with the version as a `u32`, so this one
    // read is valid whatever version the plugin was built for.
    let abi_version = unsafe { descriptor.cast::<u32>().read() };
    if abi_version != ABI_VERSION {
        return Err(LoadError::AbiMismatch {
            path: path_buf,
            plugin: abi_version,
            host: ABI_VERSION,
        });
    }
    // SAFETY: same ABI version, so the pointer is to a `ConnectorDescriptor` of this layout,
    // which the plugin keeps alive for as long as it is loaded (forever, see above).
    let descriptor: &'static ConnectorDescriptor = unsafe { &*descriptor };
    let string = |field: &str, ptr: *const c_char| -> Result<String, LoadError> {
        if ptr.is_null() {
            return Err(LoadError::BadDescriptor {
                path: path_buf.clone(),
                message: format!("`{field}` is missing"),
            });
        }
        // SAFETY: non-null, and the ABI makes it a NUL-terminated string the plugin keeps.
        unsafe { CStr::from_ptr(ptr) }
            .to_str()
            .map(str::to_string)
            .map_err(|_| LoadError::BadDescriptor {
                path: path_buf.clone(),
                message: format!("`{field}` is not UTF-8"),
            })
    };
    let datafusion_version = string("datafusion_version", descriptor.datafusion_version)?;
    if descriptor.ffi_version != datafusion_ffi::version() {
        return Err(LoadError::DataFusionMismatch {
            path: path_buf,
            plugin: datafusion_version,
            host: datafusion::DATAFUSION_VERSION.to_string(),
        });
    }
    let schema_text = string("options_schema", descriptor.options_schema)?;
    let options_schema =
        serde_json::from_str(&schema_text).map_err(|e| LoadError::BadDescriptor {
            path: path_buf.clone(),
            message: format!("the options schema is not JSON: {e}"),
        })?;
    Ok(Plugin {
        name: string("name", descriptor.name)?,
        version: string("version", descriptor.version)?,
        datafusion_version,
        options_schema,
        connect: descriptor.connect,
        path: path_buf,
    })
}

impl Plugin {
    /// Calls the plugin's constructor with a source's options. The error is the plugin's
    /// message (a panic inside the plugin arrives as an error too). The tables' scans are
    /// planned with a session that leaves out the host's function registry (see
    /// `foreign.rs`: rebuilding it in the plugin cost milliseconds a scan).
    pub fn connect(
        &self,
        options: &Options,
        codec: FFI_LogicalExtensionCodec,
    ) -> Result<Arc<dyn SchemaProvider>, String> {
        let json = serde_json::to_vec(options).map_err(|e| e.to_string())?;
        // SAFETY: the descriptor was checked to be of this ABI version, whose constructor
        // takes a pointer and length of UTF-8 JSON valid for the call; `json` outlives it.
        let result = unsafe { (self.connect)(json.as_ptr(), json.len(), codec) };
        match result {
            FFI_Result::Ok(provider) => Ok(Arc::new(ForeignSchema::new(
                Arc::<dyn SchemaProvider>::from(&provider),
            ))),
            FFI_Result::Err(message) => Err(message.to_string()),
        }
    }
}

/// The file name of connector `name`'s library on this platform: `liblodestar_connector_x.so`.
pub fn library_file_name(name: &str) -> String {
    libloading::library_filename(format!("lodestar_connector_{name}"))
        .to_string_lossy()
        .into_owned()
}

/// The connector name of a library file name, if it is one (`liblodestar_connector_x.so` → `x`).
pub fn connector_of_file(file_name: &str) -> Option<String> {
    let prefix = std::env::consts::DLL_PREFIX;
    let suffix = std::env::consts::DLL_SUFFIX;
    file_name
        .strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .strip_prefix("lodestar_connector_")
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}
