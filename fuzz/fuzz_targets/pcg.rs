#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ibau_fuzz::targets::pcg(data));
