#![no_main]
//! Fuzz target `openai_body`: see `streamgate::fuzzing::openai_body`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamgate::fuzzing::openai_body(data));
