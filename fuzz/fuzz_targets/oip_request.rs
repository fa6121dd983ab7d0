#![no_main]
//! Fuzz target `oip_request`: see `streamgate::fuzzing::oip_request`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamgate::fuzzing::oip_request(data));
