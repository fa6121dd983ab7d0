#![no_main]
//! Fuzz target `json_records`: see `streamgate::fuzzing::json_records`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamgate::fuzzing::json_records(data));
