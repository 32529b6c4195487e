#![no_main]
//! Message framing over a stream: `stream::read_message`, which the front, the upstream
//! handshake and `exec` use to read whole typed messages.
//!
//! The input is the byte stream. It is read to the end with the startup-phase cap
//! (`MAX_STARTUP_BYTES`) and with a small cap, and every message returned is checked against
//! the bytes it was cut from. Reading from a byte slice never waits, so each call completes on
//! its first poll.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tollgate_pg::codec;
use tollgate_pg::stream::read_message;

fuzz_target!(|data: &[u8]| {
    drain(data, codec::MAX_STARTUP_BYTES);
    drain(data, 64);
});

fn drain(data: &[u8], cap: usize) {
    let mut src = data;
    let mut buf = BytesMut::new();
    let mut offset = 0usize;
    loop {
        let fut = pin!(read_message(&mut src, &mut buf, cap));
        let Poll::Ready(res) = fut.poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("read_message waited on a byte slice");
        };
        match res {
            Ok(Some((tag, body))) => {
                let len = body.len() + 5;
                assert!(len <= cap + 1, "message of {len} bytes above cap {cap}");
                let Some(raw) = data.get(offset..offset + len) else {
                    panic!("message extends past the input");
                };
                assert_eq!(tag, raw[0]);
                assert_eq!(codec::read_i32(raw, 1).ok(), Some(len as i32 - 1));
                assert_eq!(&body[..], &raw[5..]);
                offset += len;
            }
            Ok(None) => {
                assert_eq!(
                    offset,
                    data.len(),
                    "clean end reported in the middle of the input"
                );
                return;
            }
            Err(_) => return,
        }
    }
}
