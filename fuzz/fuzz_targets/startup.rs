#![no_main]
//! StartupMessage decoding.
//!
//! The input is used twice: as a StartupMessage body (the parameters after length and version,
//! what `codec::parse_startup` takes), and as a whole startup-phase packet read the way the
//! front reads one (i32 length, i32 request code, then the body).

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tollgate_pg::codec;

fuzz_target!(|data: &[u8]| {
    check_body(data);
    check_packet(data);
});

/// Decodes a StartupMessage body and checks what a successful decode promises.
fn check_body(body: &[u8]) {
    let Ok(startup) = codec::parse_startup(body) else {
        return;
    };
    assert!(
        startup.params.len() <= 64,
        "more than 64 parameters accepted"
    );
    for (k, v) in &startup.params {
        assert!(!k.is_empty(), "empty parameter name accepted");
        assert!(
            !k.contains('\0') && !v.contains('\0'),
            "NUL inside a decoded string"
        );
    }
    if let Some((k, v)) = startup.params.first() {
        assert_eq!(startup.get(k), Some(v.as_str()));
    }

    // Re-encoding the parameters and decoding them again gives the same parameters.
    let pairs: Vec<(&str, &str)> = startup
        .params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut out = BytesMut::new();
    codec::startup_message(&mut out, &pairs);
    assert_eq!(codec::read_i32(&out, 0).ok(), Some(out.len() as i32));
    assert_eq!(codec::read_i32(&out, 4).ok(), Some(codec::PROTOCOL_3_0));
    let again = match codec::parse_startup(&out[8..]) {
        Ok(s) => s,
        Err(e) => panic!("re-encoded startup parameters do not decode: {e}"),
    };
    assert_eq!(again.params, startup.params);
}

/// A startup-phase packet: length, request code or protocol version, body.
fn check_packet(data: &[u8]) {
    let Ok(len) = codec::read_i32(data, 0) else {
        return;
    };
    if !(8..=codec::MAX_STARTUP_BYTES as i32).contains(&len) {
        return;
    }
    let Some(body) = data.get(4..len as usize) else {
        return;
    };
    let Ok(code) = codec::read_i32(body, 0) else {
        panic!("a packet of at least 8 bytes has no request code");
    };
    match code {
        codec::SSL_REQUEST | codec::GSSENC_REQUEST => {}
        codec::CANCEL_REQUEST => {
            let _ = (codec::read_i32(body, 4), codec::read_i32(body, 8));
        }
        v if v >> 16 == 3 => check_body(&body[4..]),
        _ => {}
    }
}
