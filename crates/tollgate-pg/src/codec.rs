//! PostgreSQL wire format: framing, the few decoders the gateway needs, and message builders.
//!
//! Only what a decision needs is decoded; everything else is relayed as bytes. All decoders are
//! total: a short or malformed body yields [`PgError::Protocol`], never a panic.

use bytes::{BufMut, BytesMut};

use crate::PgError;

/// Protocol 3.0 version code in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// SSLRequest code.
pub const SSL_REQUEST: i32 = 80_877_103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// CancelRequest code.
pub const CANCEL_REQUEST: i32 = 80_877_102;

/// Largest startup-phase packet accepted (startup, password, SASL): they are small by nature.
pub const MAX_STARTUP_BYTES: usize = 16 * 1024;

/// Reads a big-endian i32 at `at`.
pub fn read_i32(buf: &[u8], at: usize) -> Result<i32, PgError> {
    at.checked_add(4)
        .and_then(|end| buf.get(at..end))
        .and_then(|b| b.try_into().ok())
        .map(i32::from_be_bytes)
        .ok_or_else(|| PgError::protocol("message too short"))
}

/// Reads a big-endian i16 at `at`.
pub fn read_i16(buf: &[u8], at: usize) -> Result<i16, PgError> {
    at.checked_add(2)
        .and_then(|end| buf.get(at..end))
        .and_then(|b| b.try_into().ok())
        .map(i16::from_be_bytes)
        .ok_or_else(|| PgError::protocol("message too short"))
}

/// A cursor over a message body.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from the start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// A NUL-terminated string.
    pub fn cstr(&mut self) -> Result<&'a str, PgError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| PgError::protocol("unterminated string"))?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| PgError::protocol("string is not valid UTF-8"))?;
        self.pos += end + 1;
        Ok(s)
    }
    /// A big-endian i32.
    pub fn i32(&mut self) -> Result<i32, PgError> {
        let v = read_i32(self.buf, self.pos)?;
        self.pos += 4;
        Ok(v)
    }
    /// A big-endian i16.
    pub fn i16(&mut self) -> Result<i16, PgError> {
        let v = read_i16(self.buf, self.pos)?;
        self.pos += 2;
        Ok(v)
    }
    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], PgError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| PgError::protocol("length overflow"))?;
        let b = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| PgError::protocol("message too short"))?;
        self.pos = end;
        Ok(b)
    }
    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
    /// Whether the body is exhausted.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// The header of a typed message at the start of `buf`: `(type, total length including type byte)`.
/// Returns `Ok(None)` when fewer than 5 bytes are buffered.
pub fn typed_header(buf: &[u8], cap: usize) -> Result<Option<(u8, usize)>, PgError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = read_i32(buf, 1)?;
    if len < 4 {
        return Err(PgError::protocol(format!(
            "invalid message length {len} for message type {:?}",
            buf[0] as char
        )));
    }
    let len = len as usize;
    if len > cap {
        return Err(PgError::protocol(format!(
            "message of {len} bytes exceeds the limit of {cap} bytes"
        )));
    }
    Ok(Some((buf[0], len + 1)))
}

/// Parsed StartupMessage parameters.
#[derive(Debug, Default, Clone)]
pub struct Startup {
    /// All parameters in order (user, database, application_name, options, …).
    pub params: Vec<(String, String)>,
}

impl Startup {
    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes the body of a StartupMessage (after length and version).
pub fn parse_startup(body: &[u8]) -> Result<Startup, PgError> {
    let mut r = Reader::new(body);
    let mut params = Vec::new();
    loop {
        let key = r.cstr()?;
        if key.is_empty() {
            break;
        }
        let value = r.cstr()?;
        params.push((key.to_string(), value.to_string()));
        if params.len() > 64 {
            return Err(PgError::protocol("too many startup parameters"));
        }
    }
    Ok(Startup { params })
}

/// Fields of an ErrorResponse or NoticeResponse we care about.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    /// Severity (`ERROR`, `FATAL`, …).
    pub severity: String,
    /// SQLSTATE.
    pub code: String,
    /// Primary message.
    pub message: String,
}

/// Decodes an ErrorResponse/NoticeResponse body.
pub fn parse_error_fields(body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    let mut r = Reader::new(body);
    while !r.is_empty() {
        let Ok(tag) = r.bytes(1) else { break };
        if tag[0] == 0 {
            break;
        }
        let Ok(value) = r.cstr() else { break };
        match tag[0] {
            b'V' => out.severity = value.to_string(),
            b'S' if out.severity.is_empty() => out.severity = value.to_string(),
            b'C' => out.code = value.to_string(),
            b'M' => out.message = value.to_string(),
            _ => {}
        }
    }
    out
}

/// A decoded Parse message.
pub struct ParseMsg<'a> {
    /// Statement name ("" = unnamed).
    pub name: &'a str,
    /// SQL text.
    pub query: &'a str,
}

/// Decodes a Parse body.
pub fn parse_parse(body: &[u8]) -> Result<ParseMsg<'_>, PgError> {
    let mut r = Reader::new(body);
    let name = r.cstr()?;
    let query = r.cstr()?;
    let n = r.i16()?;
    if n < 0 {
        return Err(PgError::protocol("negative parameter type count in Parse"));
    }
    r.bytes(n as usize * 4)?;
    Ok(ParseMsg { name, query })
}

/// A decoded Bind message.
pub struct BindMsg<'a> {
    /// Portal name.
    pub portal: &'a str,
    /// Statement name.
    pub statement: &'a str,
    /// Parameters rendered as text; binary values as `\x` hex; `None` for NULL.
    pub params: Vec<Option<String>>,
    /// Result column format codes (empty: all text; one: for every column).
    pub result_formats: Vec<i16>,
}

/// Longest rendering of one parameter kept in the record; longer values are cut with a marker.
const MAX_PARAM_CHARS: usize = 4096;

/// Decodes a Bind body.
pub fn parse_bind(body: &[u8]) -> Result<BindMsg<'_>, PgError> {
    let mut r = Reader::new(body);
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let nfmt = r.i16()?;
    if nfmt < 0 {
        return Err(PgError::protocol("negative format count in Bind"));
    }
    let mut formats = Vec::with_capacity(nfmt as usize);
    for _ in 0..nfmt {
        formats.push(r.i16()?);
    }
    let nparams = r.i16()?;
    if nparams < 0 {
        return Err(PgError::protocol("negative parameter count in Bind"));
    }
    if !(formats.len() <= 1 || formats.len() == nparams as usize) {
        return Err(PgError::protocol(
            "Bind format count does not match parameters",
        ));
    }
    let mut params = Vec::with_capacity(nparams as usize);
    for i in 0..nparams as usize {
        let len = r.i32()?;
        if len == -1 {
            params.push(None);
            continue;
        }
        if len < 0 {
            return Err(PgError::protocol("invalid parameter length in Bind"));
        }
        let value = r.bytes(len as usize)?;
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => formats[i],
        };
        params.push(Some(render_param(value, format)));
    }
    let nresults = r.i16()?;
    if nresults < 0 {
        return Err(PgError::protocol("negative result format count in Bind"));
    }
    let mut result_formats = Vec::with_capacity(nresults as usize);
    for _ in 0..nresults {
        result_formats.push(r.i16()?);
    }
    Ok(BindMsg {
        portal,
        statement,
        params,
        result_formats,
    })
}

fn render_param(value: &[u8], format: i16) -> String {
    let text = if format == 0 {
        std::str::from_utf8(value).ok().map(str::to_string)
    } else {
        None
    };
    let mut s = text.unwrap_or_else(|| format!("\\x{}", hex::encode(value)));
    if s.len() > MAX_PARAM_CHARS {
        let mut cut = MAX_PARAM_CHARS;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("…[truncated]");
    }
    s
}

/// Decodes an Execute body: `(portal, max rows)`.
pub fn parse_execute(body: &[u8]) -> Result<(&str, i32), PgError> {
    let mut r = Reader::new(body);
    let portal = r.cstr()?;
    let max = r.i32()?;
    Ok((portal, max))
}

/// Decodes a Close body: `(kind, name)` where kind is `S` or `P`.
pub fn parse_close(body: &[u8]) -> Result<(u8, &str), PgError> {
    let mut r = Reader::new(body);
    let kind = r.bytes(1)?[0];
    let name = r.cstr()?;
    Ok((kind, name))
}

/// Appends a typed message with its length.
pub fn put_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NUL-terminated string.
pub fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// Appends an ErrorResponse.
pub fn error_response(out: &mut BytesMut, severity: &str, code: &str, message: &str) {
    put_message(out, b'E', |b| {
        b.put_u8(b'S');
        put_cstr(b, severity);
        b.put_u8(b'V');
        put_cstr(b, severity);
        b.put_u8(b'C');
        put_cstr(b, code);
        b.put_u8(b'M');
        put_cstr(b, message);
        b.put_u8(0);
    });
}

/// Appends an Authentication request with the given code and extra bytes.
pub fn auth_request(out: &mut BytesMut, code: i32, extra: &[u8]) {
    put_message(out, b'R', |b| {
        b.put_i32(code);
        b.put_slice(extra);
    });
}

/// Appends a BackendKeyData.
pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    put_message(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// Appends a StartupMessage (untyped).
pub fn startup_message(out: &mut BytesMut, params: &[(&str, &str)]) {
    let at = out.len();
    out.put_i32(0);
    out.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(out, k);
        put_cstr(out, v);
    }
    out.put_u8(0);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a simple Query.
pub fn query(out: &mut BytesMut, sql: &str) {
    put_message(out, b'Q', |b| put_cstr(b, sql));
}

/// Appends a NegotiateProtocolVersion naming the newest minor version we speak (0) and the
/// protocol options we do not understand.
pub fn negotiate_protocol_version(out: &mut BytesMut, unknown: &[&str]) {
    put_message(out, b'v', |b| {
        b.put_i32(0);
        b.put_i32(unknown.len() as i32);
        for o in unknown {
            put_cstr(b, o);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rejects_bad_lengths() {
        assert!(typed_header(b"Q\0\0\0", 100).unwrap().is_none());
        assert!(typed_header(b"Q\0\0\0\x03x", 100).is_err());
        assert!(typed_header(b"Q\xff\xff\xff\xffx", 100).is_err());
        assert!(typed_header(b"Q\0\0\x10\0x", 100).is_err());
        assert_eq!(typed_header(b"Q\0\0\0\x05x", 100).unwrap(), Some((b'Q', 6)));
    }

    #[test]
    fn bind_renders_text_binary_and_null() {
        let mut b = BytesMut::new();
        put_cstr(&mut b, "");
        put_cstr(&mut b, "s1");
        b.put_i16(2);
        b.put_i16(0);
        b.put_i16(1);
        b.put_i16(3);
        b.put_i32(2);
        b.put_slice(b"42");
        b.put_i32(2);
        b.put_slice(&[0xde, 0xad]);
        b.put_i32(-1);
        // Three params but two formats: invalid.
        assert!(parse_bind(&b).is_err());

        let mut b = BytesMut::new();
        put_cstr(&mut b, "p");
        put_cstr(&mut b, "s1");
        b.put_i16(1);
        b.put_i16(1);
        b.put_i16(2);
        b.put_i32(2);
        b.put_slice(&[0xde, 0xad]);
        b.put_i32(-1);
        b.put_i16(1);
        b.put_i16(1);
        let m = parse_bind(&b).unwrap();
        assert_eq!(m.result_formats, vec![1]);
        assert_eq!(m.portal, "p");
        assert_eq!(m.statement, "s1");
        assert_eq!(m.params, vec![Some("\\xdead".to_string()), None]);
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        for body in [&b""[..], b"abc", b"a\0", b"a\0b\0\xff"] {
            let _ = parse_parse(body);
            let _ = parse_bind(body);
            let _ = parse_execute(body);
            let _ = parse_close(body);
            let _ = parse_startup(body);
            let _ = parse_error_fields(body);
        }
        assert!(parse_parse(b"a\0select 1\0\x00\x05").is_err());
    }

    #[test]
    fn error_response_round_trips() {
        let mut b = BytesMut::new();
        error_response(&mut b, "FATAL", "28P01", "nope");
        let (t, len) = typed_header(&b, 1000).unwrap().unwrap();
        assert_eq!(t, b'E');
        let f = parse_error_fields(&b[5..len]);
        assert_eq!(f.code, "28P01");
        assert_eq!(f.message, "nope");
        assert_eq!(f.severity, "FATAL");
    }
}
