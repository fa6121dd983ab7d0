#![no_main]
//! Fuzz target `avro_plain`: see `streamgate::fuzzing::avro_plain`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamgate::fuzzing::avro_plain(data));
