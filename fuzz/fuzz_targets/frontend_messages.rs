#![no_main]
//! Frontend (client to gateway) message decoding.
//!
//! The input is used three ways:
//! - as one message body fed to every frontend body decoder (`parse_parse`, `parse_bind`,
//!   `parse_execute`, `parse_close`, and the `Reader` reads the relay does for Query and
//!   FunctionCall);
//! - as a stream of typed messages walked with `typed_header` (cap 4096, and the relay's
//!   "streamable" cap) and dispatched by type the way the relay does;
//! - as a small program of `Reader` calls (first byte: program length, then one opcode per
//!   byte, then the body the calls read).

use libfuzzer_sys::fuzz_target;
use tollgate_pg::codec::{self, Reader};

/// Message cap used when walking the stream.
const CAP: usize = 4096;
/// Cap the relay uses for message types it streams.
const STREAM_CAP: usize = usize::MAX >> 1;
/// Longest rendering of one Bind parameter: 4096 bytes plus the truncation marker.
const MAX_RENDERED: usize = 4096 + "…[truncated]".len();

fuzz_target!(|data: &[u8]| {
    for tag in [b'Q', b'P', b'B', b'E', b'C', b'F'] {
        decode(tag, data);
    }
    walk(data, CAP);
    walk(data, STREAM_CAP);
    reader_program(data);
});

/// Decodes one frontend message body by type.
fn decode(tag: u8, body: &[u8]) {
    match tag {
        b'Q' => {
            if let Ok(sql) = Reader::new(body).cstr() {
                assert!(!sql.contains('\0'));
            }
        }
        b'P' => {
            if let Ok(p) = codec::parse_parse(body) {
                assert!(!p.name.contains('\0') && !p.query.contains('\0'));
            }
        }
        b'B' => {
            if let Ok(b) = codec::parse_bind(body) {
                assert!(!b.portal.contains('\0') && !b.statement.contains('\0'));
                assert!(b.params.len() <= i16::MAX as usize);
                for p in b.params.iter().flatten() {
                    assert!(
                        p.len() <= MAX_RENDERED,
                        "Bind parameter rendered to {} bytes",
                        p.len()
                    );
                }
            }
        }
        b'E' => {
            if let Ok((portal, _max_rows)) = codec::parse_execute(body) {
                assert!(!portal.contains('\0'));
            }
        }
        b'C' => {
            if let Ok((kind, name)) = codec::parse_close(body) {
                assert_eq!(Some(&kind), body.first());
                assert!(!name.contains('\0'));
            }
        }
        b'F' => {
            let _ = codec::read_i32(body, 0);
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
                    return; // incomplete message: the relay waits for more bytes
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

/// Runs a program of `Reader` calls and checks the cursor moves by exactly what was read, and
/// not at all on an error.
fn reader_program(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize % 32).min(rest.len());
    let (ops, body) = rest.split_at(n);
    let mut r = Reader::new(body);
    for &op in ops {
        let before = r.rest().len();
        let consumed = match op & 7 {
            0 => r.cstr().ok().map(|s| {
                assert!(!s.contains('\0'));
                s.len() + 1
            }),
            1 => r.i32().ok().map(|_| 4),
            2 => r.i16().ok().map(|_| 2),
            3 | 4 => {
                let want = match op >> 3 {
                    0 => 0,
                    1 => before,
                    2 => before + 1,
                    3 => usize::MAX,
                    4 => usize::MAX - 1,
                    5 => isize::MAX as usize,
                    k => k as usize - 6,
                };
                r.bytes(want).ok().map(|b| {
                    assert_eq!(b.len(), want);
                    want
                })
            }
            5 => {
                assert_eq!(r.is_empty(), r.rest().is_empty());
                Some(0)
            }
            6 => {
                let _ = codec::read_i16(body, (op >> 3) as usize);
                Some(0)
            }
            _ => {
                let _ = codec::read_i32(body, body.len().saturating_sub((op >> 3) as usize));
                Some(0)
            }
        };
        match consumed {
            Some(c) => assert_eq!(
                r.rest().len(),
                before - c,
                "cursor moved by the wrong amount"
            ),
            None => assert_eq!(r.rest().len(), before, "a failed read moved the cursor"),
        }
    }
}
