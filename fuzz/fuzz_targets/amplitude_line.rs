//! Fuzz target `amplitude_line`: see `lodestar_fuzz::amplitude_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lodestar_fuzz::amplitude_line(data));
