#![no_main]
//! SCRAM-SHA-256 client: decoding of the server-first and server-final messages.
//!
//! The input, if valid UTF-8, is split at the first newline: the part before is given to
//! `ScramClient::client_final` as the server-first message, the part after to
//! `verify_server_final` as the server-final message. The client's nonce is "abc".
//!
//! The server-first message carries the PBKDF2 iteration count (`i=`). The client accepts up
//! to 10,000,000, and one such input costs about 12 seconds in a fuzzing build, so inputs whose
//! count is above `MAX_ITERATIONS` are skipped here to keep the fuzzer fast. The cap is in this
//! harness only: the count the client uses is the last `i=` attribute, which is what is checked.

use libfuzzer_sys::fuzz_target;
use tollgate_pg::scram::ScramClient;

/// Largest PBKDF2 iteration count tried (PostgreSQL's default is 4096).
const MAX_ITERATIONS: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (server_first, server_final) = text.split_once('\n').unwrap_or((text, ""));
    let iterations = server_first
        .split(',')
        .filter_map(|part| part.strip_prefix("i="))
        .next_back()
        .and_then(|v| v.parse::<u32>().ok());
    if iterations.is_some_and(|i| i > MAX_ITERATIONS) {
        return;
    }
    let mut client = ScramClient::new("pw", "abc".into());
    assert!(
        client.verify_server_final(server_final).is_err(),
        "server-final accepted before server-first"
    );
    match client.client_final(server_first) {
        Ok(fin) => {
            assert!(fin.starts_with("c=biws,r=abc"), "client-final {fin:?}");
            assert!(fin.contains(",p="), "client-final without proof: {fin:?}");
            let _ = client.verify_server_final(server_final);
        }
        Err(_) => {
            assert!(
                client.verify_server_final(server_final).is_err(),
                "server-final accepted after a rejected server-first"
            );
        }
    }
});
