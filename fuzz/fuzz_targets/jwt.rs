#![no_main]
//! Fuzz target `jwt`: see `streamgate::fuzzing::jwt`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamgate::fuzzing::jwt(data));
