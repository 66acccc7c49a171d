#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_agent::fuzzing::http_head(data));
