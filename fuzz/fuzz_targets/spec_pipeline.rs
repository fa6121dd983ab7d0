#![no_main]
//! Fuzz target `spec_pipeline`: see `streamgate::fuzzing::spec_pipeline`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamgate::fuzzing::spec_pipeline(data));
