#![no_main]
//! SFTP inspection (`tollgate_ssh::fuzz_sftp`): the input is a sequence of chunks from the
//! client and from the target, fed to the inspector of an `sftp` channel with a policy that
//! refuses paths containing `secret`. It may not panic; what it forwards is byte-exact (the
//! client's bytes as they came while nothing was refused, the target's bytes always) and the
//! gateway's own replies reach the client only between the target's packets.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = tollgate_ssh::fuzz_sftp(data) {
        panic!("{e}");
    }
});
