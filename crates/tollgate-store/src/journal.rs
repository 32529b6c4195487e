//! The audit journal: an append-only file of chained records (record ‖ hash, exactly as in the
//! database's runs) that makes a record durable with one `write` before the database has it.
//!
//! Records enter the journal in chain order. The event writer copies them into SQLite in
//! batches; once every record of a segment is in the database the segment is dropped (the
//! current one is emptied when the writer has caught up). At start, records the journal holds
//! beyond the database's last one are checked against the chain and copied in, so a killed
//! gateway loses nothing it had acknowledged.
//!
//! A segment is a sequence of entries with no header: `record ‖ SHA-256 hash`. A write that
//! failed part-way is cut back off; when even that fails, the segment is closed and the next
//! write starts a new one, so a torn tail only ever ends a segment.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tollgate_audit::Hash;

/// A segment grows to about this size before the next write starts a new one.
const SEGMENT_BYTES: u64 = 4 << 20;

/// One segment file name: its number, zero-padded so names sort in order.
fn segment_name(number: u64) -> String {
    format!("{number:016}.tgj")
}

/// The journal directory of the database at `db_path`.
pub(crate) fn dir_of(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    db_path.with_file_name(name)
}

/// The segments in `dir`, in order.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".tgj"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            found.push((number, path));
        }
    }
    found.sort();
    Ok(found)
}

/// A chained record read back from the journal.
pub(crate) struct Recovered {
    /// Its position in the global order.
    pub gseq: u64,
    /// Session id.
    pub session: String,
    /// Position in the session.
    pub seq: u64,
    /// Time (µs).
    pub at: i64,
    /// The payload, as hashed.
    pub payload: Vec<u8>,
    /// record ‖ hash, as stored in a run.
    pub entry: Vec<u8>,
}

/// Reads the records the journal holds after `last` (the database's last gseq and hash), in
/// order and checked against the chain. Reading stops at the first record that does not follow:
/// a torn tail ends a segment, and anything after a break in the chain is reported and kept
/// aside (renamed `*.broken`), never copied in.
pub(crate) fn recover(
    dir: &Path,
    last: Option<(u64, Hash)>,
) -> std::io::Result<(Vec<Recovered>, Option<String>)> {
    let (mut next, mut head) = match last {
        Some((gseq, hash)) => (gseq + 1, hash),
        None => (0, tollgate_audit::GENESIS),
    };
    let mut out = Vec::new();
    let mut problem = None;
    for (_, path) in segments(dir)? {
        let bytes = fs::read(&path)?;
        let mut pos = 0;
        while pos < bytes.len() {
            let Ok((record, len)) = tollgate_audit::decode_record(&bytes[pos..]) else {
                break;
            };
            let Some(stored) = bytes.get(pos + len..pos + len + 32) else {
                break;
            };
            let entry = &bytes[pos..pos + len + 32];
            pos += len + 32;
            if record.gseq < next {
                continue;
            }
            let hash = tollgate_audit::chain(&head, &entry[..len]);
            if record.gseq != next || hash[..] != stored[..] {
                problem = Some(format!(
                    "{}: record {} does not continue the log at {next}; it and what follows were not recovered",
                    path.display(),
                    record.gseq
                ));
                break;
            }
            head = hash;
            next += 1;
            out.push(Recovered {
                gseq: record.gseq,
                session: record.session.to_string(),
                seq: record.seq,
                at: record.at,
                payload: record.payload.to_vec(),
                entry: entry.to_vec(),
            });
        }
        if problem.is_some() {
            break;
        }
    }
    Ok((out, problem))
}

/// Renames every segment to `*.broken`, keeping what could not be recovered for inspection.
pub(crate) fn set_aside(dir: &Path) -> std::io::Result<()> {
    for (_, path) in segments(dir)? {
        let mut broken = path.clone().into_os_string();
        broken.push(".broken");
        fs::rename(&path, broken)?;
    }
    Ok(())
}

/// The journal as the writer keeps it.
pub(crate) struct Journal {
    dir: PathBuf,
    /// The segment being written, when open.
    file: Option<File>,
    /// Its number.
    number: u64,
    /// Bytes in it.
    len: u64,
    /// The last gseq it holds.
    last: Option<u64>,
    /// Earlier segments and the last gseq each holds, waiting for the database to catch up.
    closed: Vec<(u64, u64)>,
    /// Chained records not written yet, in order.
    pub unwritten: Vec<u8>,
}

impl Journal {
    /// Opens the journal in `dir` after recovery, removing every old segment.
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut number = 0;
        for (n, path) in segments(dir)? {
            number = number.max(n + 1);
            fs::remove_file(path)?;
        }
        let mut journal = Self {
            dir: dir.to_path_buf(),
            file: None,
            number,
            len: 0,
            last: None,
            closed: Vec::new(),
            unwritten: Vec::with_capacity(64 << 10),
        };
        journal.open_segment()?;
        Ok(journal)
    }

    fn open_segment(&mut self) -> std::io::Result<()> {
        let path = self.dir.join(segment_name(self.number));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        self.file = Some(file);
        self.len = 0;
        self.last = None;
        Ok(())
    }

    /// Writes what is unwritten; `last` is the gseq of the last record chained. On failure
    /// nothing of it counts as written and it stays queued.
    pub fn write_out(&mut self, last: Option<u64>) -> std::io::Result<()> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            self.number += 1;
            self.open_segment()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("no journal segment is open"));
        };
        if let Err(e) = file.write_all(&self.unwritten) {
            // Cut off what made it; if even that fails, close the segment so the torn tail ends it.
            if file.set_len(self.len).is_err() {
                self.close_segment();
            }
            return Err(e);
        }
        self.len += self.unwritten.len() as u64;
        self.unwritten.clear();
        self.last = last;
        if self.len >= SEGMENT_BYTES {
            self.close_segment();
        }
        Ok(())
    }

    fn close_segment(&mut self) {
        self.file = None;
        match self.last {
            Some(last) => self.closed.push((self.number, last)),
            None => {
                let _ = fs::remove_file(self.dir.join(segment_name(self.number)));
            }
        }
        self.last = None;
    }

    /// The database holds every record up to `committed`: drops the segments it covers, and
    /// empties the current one when `caught_up` (nothing chained is waiting) and it covers it.
    pub fn release(&mut self, committed: u64, caught_up: bool) {
        let dir = &self.dir;
        self.closed.retain(|&(number, last)| {
            if last <= committed {
                let _ = fs::remove_file(dir.join(segment_name(number)));
                false
            } else {
                true
            }
        });
        if caught_up
            && self.unwritten.is_empty()
            && self.last.is_some_and(|last| last <= committed)
            && let Some(file) = &self.file
            && file.set_len(0).is_ok()
        {
            self.len = 0;
            self.last = None;
        }
    }

    /// Removes the journal once the database holds everything (clean shutdown).
    pub fn remove(&mut self) {
        self.file = None;
        if let Ok(found) = segments(&self.dir) {
            for (_, path) in found {
                let _ = fs::remove_file(path);
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}
