#![no_main]
//! Fuzz target `spec_gateway`: see `streamgate::fuzzing::spec_gateway`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamgate::fuzzing::spec_gateway(data));
