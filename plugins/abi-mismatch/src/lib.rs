//! A plugin built for an ABI this Lodestar does not speak: the host must refuse it with an
//! error naming both versions, before calling anything else.
//!
//! Only the first field of the descriptor is shared by every ABI version, so it is all this
//! library provides; a host that read further would find garbage, which is the point.

/// The first field of every descriptor, with a version no host has.
#[repr(C)]
#[derive(Debug)]
pub struct FutureDescriptor {
    pub abi_version: u32,
}

static DESCRIPTOR: FutureDescriptor = FutureDescriptor { abi_version: 999 };

/// The entry point, as every plugin exports it.
#[allow(unsafe_code)] // Exporting an unmangled symbol is what makes this a plugin.
#[unsafe(no_mangle)]
pub extern "C" fn lodestar_connector_descriptor() -> *const FutureDescriptor {
    &DESCRIPTOR
}
