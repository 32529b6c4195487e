#![no_main]
//! SSH terminal output (`tollgate_ssh::fuzz_terminal`): the input, cut into chunks of varying
//! sizes, goes through the output mask, the asciicast recording and the legacy scp reader. None
//! may panic, and the mask must hand on every byte once, in order.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = tollgate_ssh::fuzz_terminal(data) {
        panic!("{e}");
    }
});
