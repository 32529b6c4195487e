#![no_main]
//! Backend (target to gateway) message decoding.
//!
//! The input is used as one ErrorResponse/NoticeResponse body for `codec::parse_error_fields`,
//! and as a stream of typed messages walked with `typed_header` (cap 4096, and the relay's
//! "streamable" cap) and dispatched by type the way the relay and the upstream handshake decode
//! them: ErrorResponse/NoticeResponse, CommandComplete, BackendKeyData and Authentication
//! requests (MD5 salt, SASL mechanism list, SASL continue/final payloads).

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tollgate_pg::codec::{self, Reader};

/// Message cap used when walking the stream.
const CAP: usize = 4096;
/// Cap the relay uses for message types it streams.
const STREAM_CAP: usize = usize::MAX >> 1;

fuzz_target!(|data: &[u8]| {
    check_error_fields(data);
    walk(data, CAP);
    walk(data, STREAM_CAP);
});

/// Decodes an ErrorResponse body, then checks that re-encoding the decoded fields with
/// `codec::error_response` and decoding again gives the same fields.
fn check_error_fields(body: &[u8]) {
    let f = codec::parse_error_fields(body);
    for s in [&f.severity, &f.code, &f.message] {
        assert!(!s.contains('\0'), "NUL inside a decoded field");
    }
    let mut out = BytesMut::new();
    codec::error_response(&mut out, &f.severity, &f.code, &f.message);
    let (tag, len) = match codec::typed_header(&out, STREAM_CAP) {
        Ok(Some(h)) => h,
        other => panic!("re-encoded ErrorResponse has no valid header: {other:?}"),
    };
    assert_eq!(tag, b'E');
    assert_eq!(len, out.len());
    assert_eq!(codec::parse_error_fields(&out[5..]), f);
}

/// Decodes one backend message body by type.
fn decode(tag: u8, body: &[u8]) {
    match tag {
        b'E' | b'N' => check_error_fields(body),
        b'C' => {
            let _ = Reader::new(body).cstr();
        }
        b'K' => {
            let _ = (codec::read_i32(body, 0), codec::read_i32(body, 4));
        }
        b'R' => {
            let Ok(code) = codec::read_i32(body, 0) else {
                return;
            };
            let rest = &body[4..];
            match code {
                5 => {
                    let _ = body.get(4..8);
                }
                10 => {
                    let mut r = Reader::new(rest);
                    while let Ok(m) = r.cstr() {
                        if m.is_empty() {
                            break;
                        }
                    }
                }
                11 | 12 => {
                    let _ = std::str::from_utf8(rest);
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// Walks complete typed messages at the front of `buf` and decodes each.
fn walk(mut buf: &[u8], cap: usize) {
    loop {
        match codec::typed_header(buf, cap) {
            Ok(Some((tag, len))) => {
                assert!(buf.len() >= 5, "header decoded from fewer than 5 bytes");
                assert_eq!(tag, buf[0]);
                assert!(len >= 5, "total length {len} shorter than a header");
                assert!(len <= cap.saturating_add(1), "length {len} above cap {cap}");
                let Some(body) = buf.get(5..len) else {
                    return;
                };
                decode(tag, body);
                buf = &buf[len..];
            }
            Ok(None) => {
                assert!(buf.len() < 5, "no header returned for {} bytes", buf.len());
                return;
            }
            Err(_) => return,
        }
    }
}
