//! One-shot execution for the REST API (`tollgate exec`): an in-process client that speaks the
//! protocol to the same front and relay as psql does, so every check and record applies.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tollgate_core::Identity;

use crate::PgError;
use crate::codec::{self, Reader};
use crate::front::PgFront;
use crate::stream::{PgStream, read_message};

/// Result of one `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecResult {
    /// Column names of the last result set.
    pub columns: Vec<String>,
    /// Rows of the last result set, as text; `None` for NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// Command tags, one per statement.
    pub tags: Vec<String>,
    /// Notices the target sent.
    pub notices: Vec<String>,
    /// The error that ended execution, if any: (SQLSTATE, message).
    pub error: Option<(String, String)>,
    /// Whether rows were dropped because the result exceeded the row limit.
    pub truncated: bool,
}

/// Runs `sql` as a simple query on `connection` for an already-authenticated identity.
/// A refusal during startup (no access, unknown connection, target down) comes back as
/// `Err(PgError::Target { code, message })` carrying the SQLSTATE the client would have seen.
pub async fn exec_simple(
    front: Arc<PgFront>,
    identity: Identity,
    connection: &str,
    sql: &str,
    peer: String,
    max_rows: usize,
) -> Result<ExecResult, PgError> {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let session = tokio::spawn(Arc::clone(&front).serve_stream(
        PgStream::Duplex(theirs),
        peer,
        identity.clone(),
    ));
    let mut stream = PgStream::Duplex(ours);
    let result = talk(
        &mut stream,
        &identity,
        connection,
        sql,
        max_rows,
        front.config.max_message_bytes,
    )
    .await;
    drop(stream);
    let _ = session.await;
    result
}

async fn talk(
    stream: &mut PgStream,
    identity: &Identity,
    connection: &str,
    sql: &str,
    max_rows: usize,
    cap: usize,
) -> Result<ExecResult, PgError> {
    let mut out = BytesMut::new();
    codec::startup_message(
        &mut out,
        &[
            ("user", identity.subject.as_str()),
            ("database", connection),
            ("application_name", "tollgate exec"),
            ("client_encoding", "UTF8"),
        ],
    );
    stream.write_all(&out).await.map_err(PgError::Io)?;
    let mut buf = BytesMut::new();
    // Startup: wait for ReadyForQuery or an error.
    loop {
        let (tag, body) = read_message(stream, &mut buf, cap)
            .await?
            .ok_or_else(|| PgError::protocol("session closed during startup"))?;
        match tag {
            b'Z' => break,
            b'E' => {
                let f = codec::parse_error_fields(&body);
                return Err(PgError::Target {
                    code: f.code,
                    message: f.message,
                });
            }
            _ => {}
        }
    }
    out.clear();
    codec::query(&mut out, sql);
    stream.write_all(&out).await.map_err(PgError::Io)?;
    let mut result = ExecResult::default();
    loop {
        let Some((tag, body)) = read_message(stream, &mut buf, cap).await? else {
            if result.error.is_none() {
                result.error = Some((
                    "08006".into(),
                    "session closed before the query finished".into(),
                ));
            }
            break;
        };
        match tag {
            b'T' => {
                result.columns = parse_row_description(&body)?;
                result.rows.clear();
                result.truncated = false;
            }
            b'D' => {
                if result.rows.len() >= max_rows {
                    result.truncated = true;
                } else {
                    result.rows.push(parse_data_row(&body)?);
                }
            }
            b'C' => result.tags.push(Reader::new(&body).cstr()?.to_string()),
            b'E' => {
                let f = codec::parse_error_fields(&body);
                result.error = Some((f.code, f.message));
                if f.severity == "FATAL" {
                    break;
                }
            }
            b'N' => result
                .notices
                .push(codec::parse_error_fields(&body).message),
            b'G' => {
                // COPY FROM STDIN has no input here: end it cleanly.
                out.clear();
                codec::put_message(&mut out, b'f', |b| {
                    codec::put_cstr(b, "tollgate exec has no COPY input")
                });
                stream.write_all(&out).await.map_err(PgError::Io)?;
            }
            b'Z' => break,
            _ => {}
        }
    }
    out.clear();
    codec::put_message(&mut out, b'X', |_| {});
    let _ = stream.write_all(&out).await;
    Ok(result)
}

fn parse_row_description(body: &[u8]) -> Result<Vec<String>, PgError> {
    let mut r = Reader::new(body);
    let n = r.i16()?;
    let mut cols = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        cols.push(r.cstr()?.to_string());
        r.bytes(18)?;
    }
    Ok(cols)
}

fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, PgError> {
    let mut r = Reader::new(body);
    let n = r.i16()?;
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = r.i32()?;
        if len < 0 {
            row.push(None);
        } else {
            row.push(Some(
                String::from_utf8_lossy(r.bytes(len as usize)?).into_owned(),
            ));
        }
    }
    Ok(row)
}
