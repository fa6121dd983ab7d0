#![no_main]
//! Fuzz target `avro_confluent`: see `streamgate::fuzzing::avro_confluent`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamgate::fuzzing::avro_confluent(data));
