//! One byte-stream type for every transport a session may ride on: plain TCP, TLS as server
//! (client side), TLS as client (target side), and in-memory pipes (API-driven sessions).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

use crate::PgError;
use crate::codec::typed_header;

/// A transport.
pub enum PgStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS accepted from a client.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS opened toward a target.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// In-process pipe.
    Duplex(DuplexStream),
}

macro_rules! each {
    ($self:ident, $s:ident => $method:ident($($arg:expr),*)) => {
        match $self.get_mut() {
            PgStream::Plain($s) => Pin::new($s).$method($($arg),*),
            PgStream::ServerTls($s) => Pin::new($s.as_mut()).$method($($arg),*),
            PgStream::ClientTls($s) => Pin::new($s.as_mut()).$method($($arg),*),
            PgStream::Duplex($s) => Pin::new($s).$method($($arg),*),
        }
    };
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => poll_read(cx, buf))
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => poll_shutdown(cx))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            PgStream::Plain(s) => s.is_write_vectored(),
            PgStream::ServerTls(s) => s.is_write_vectored(),
            PgStream::ClientTls(s) => s.is_write_vectored(),
            PgStream::Duplex(s) => s.is_write_vectored(),
        }
    }
}

/// Reads one complete typed message (for the handshake phases, where messages are small).
/// Returns `(type, body)`; `Ok(None)` on a clean EOF before any byte of a new message.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    cap: usize,
) -> Result<Option<(u8, BytesMut)>, PgError> {
    loop {
        if let Some((tag, len)) = typed_header(buf, cap)? {
            if buf.len() >= len {
                let mut msg = buf.split_to(len);
                let body = msg.split_off(5);
                return Ok(Some((tag, body)));
            }
            buf.reserve(len - buf.len());
        } else {
            buf.reserve(4096);
        }
        let n = stream.read_buf(buf).await.map_err(PgError::Io)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(PgError::protocol(
                "connection closed in the middle of a message",
            ));
        }
    }
}
