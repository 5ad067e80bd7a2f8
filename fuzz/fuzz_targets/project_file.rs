//! Fuzz target `project_file`: see `lodestar_fuzz::project_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lodestar_fuzz::project_file(data));
