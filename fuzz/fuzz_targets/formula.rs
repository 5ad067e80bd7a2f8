//! Fuzz target `formula`: see `lodestar_fuzz::formula`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lodestar_fuzz::formula(data));
