//! A plugin of the host's ABI version built, it says, with DataFusion 54: the FFI structs of
//! another DataFusion major have other layouts, so the host must refuse it after reading the
//! descriptor's version fields, before it calls the constructor.
//!
//! The descriptor is `lodestar_connector_api::abi::ConnectorDescriptor` of ABI version 1,
//! written out by hand so that this fixture needs no DataFusion at all.

use std::ffi::c_char;

/// ABI version 1's descriptor, field for field.
#[repr(C)]
#[derive(Debug)]
pub struct Descriptor {
    pub abi_version: u32,
    pub ffi_version: u64,
    pub name: *const c_char,
    pub version: *const c_char,
    pub datafusion_version: *const c_char,
    pub options_schema: *const c_char,
    /// The constructor: never called by a host that checks the versions first.
    pub connect: extern "C" fn(),
}

// SAFETY: immutable, and its pointers are to static strings.
#[allow(unsafe_code)]
unsafe impl Sync for Descriptor {}

/// The constructor's place; a host that calls it has skipped the version check.
extern "C" fn connect() {
    eprintln!("datafusion_mismatch: the host called the constructor of a refused plugin");
    std::process::abort();
}

static DESCRIPTOR: Descriptor = Descriptor {
    abi_version: 1,
    ffi_version: 54,
    name: c"datafusion_mismatch".as_ptr(),
    version: c"0.1.0".as_ptr(),
    datafusion_version: c"54.0.0".as_ptr(),
    options_schema: c"{\"type\":\"object\"}".as_ptr(),
    connect,
};

/// The entry point, as every plugin exports it.
#[allow(unsafe_code)] // Exporting an unmangled symbol is what makes this a plugin.
#[unsafe(no_mangle)]
pub extern "C" fn lodestar_connector_descriptor() -> *const Descriptor {
    &DESCRIPTOR
}
