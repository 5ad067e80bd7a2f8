//! A shared library named like a connector plugin that is not one: it exports a function, but
//! not the entry point, so the host must refuse it by name without calling anything.

/// Something to export, so that the library is a real one with a symbol table.
#[allow(unsafe_code)] // An unmangled symbol: what a library made for something else exports.
#[unsafe(no_mangle)]
pub extern "C" fn lodestar_fixture_not_a_connector() -> u32 {
    42
}
