//! Fuzz target `server_params`: see `lodestar_fuzz::server_params`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lodestar_fuzz::server_params(data));
