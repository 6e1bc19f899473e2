#![no_main]
// See fuzz/src/lib.rs for what this target feeds and checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| syft_mpc_fuzz::handshake(data));
