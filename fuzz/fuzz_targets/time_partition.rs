//! Fuzz target `time_partition`: see `lodestar_fuzz::time_partition`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lodestar_fuzz::time_partition(data));
