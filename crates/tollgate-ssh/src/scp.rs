//! The legacy scp protocol (`scp -O`, which runs `scp -t` or `scp -f` on the target), read on
//! the side that sends the files, so each file is recorded with its name and size.
//!
//! The sender writes control lines: `C<mode> <size> <name>\n` followed by the file's bytes and
//! a NUL, `D<mode> 0 <name>\n` to enter a directory and `E\n` to leave it, `T<times>\n` before
//! a file, and `\x01`/`\x02` lines for warnings and errors. The receiver's one-byte answers go
//! the other way and are not read. Nothing is changed: the bytes are forwarded as they come.

use std::time::Instant;

use tollgate_core::{CommandError, CommandStatus, EventKind, FileOp, Outcome, SessionLog};

/// A control line longer than this is not scp: reading stops (the bytes still flow).
const MAX_LINE: usize = 4096;

enum State {
    /// Reading a control line.
    Line,
    /// Inside a file's bytes: how many are left, then its closing NUL.
    Data { left: u64 },
    /// Past the file's bytes: its closing NUL.
    End,
    /// Not the scp protocol any more: nothing more is read.
    Lost,
}

/// Reads one direction of a legacy scp channel and records its files.
pub(crate) struct ScpReader {
    log: SessionLog,
    op: FileOp,
    /// The paths on the scp command line (the destination of `-t`, the sources of `-f`).
    paths: Vec<String>,
    /// Files go into `paths[0]` as a directory (`-t` with `-d` or `-r`, or a path ending in `/`).
    into_dir: bool,
    dirs: Vec<String>,
    state: State,
    line: Vec<u8>,
    /// The file being transferred: its path, size and start.
    file: Option<(String, u64, Instant)>,
    /// Files of `-f` sent so far (to name them after their source path).
    sent: usize,
}

impl ScpReader {
    /// For `scp -t`/`-f` with these paths; `recursive_or_dir` when `-r` or `-d` was given.
    pub(crate) fn new(
        log: SessionLog,
        op: FileOp,
        paths: Vec<String>,
        recursive_or_dir: bool,
    ) -> Self {
        let into_dir = recursive_or_dir || paths.first().is_some_and(|p| p.ends_with('/'));
        Self {
            log,
            op,
            paths,
            into_dir,
            dirs: Vec::new(),
            state: State::Line,
            line: Vec::new(),
            file: None,
            sent: 0,
        }
    }

    /// Which way the files go: `write` for `scp -t` (the client sends), `read` for `-f`.
    pub(crate) fn op(&self) -> FileOp {
        self.op
    }

    /// Reads bytes the sender wrote.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Lost => return,
                State::Data { left } => {
                    let take = (*left).min(data.len() as u64) as usize;
                    *left -= take as u64;
                    data = &data[take..];
                    if *left == 0 {
                        self.state = State::End;
                    }
                }
                State::End => {
                    let ok = data[0] == 0;
                    data = &data[1..];
                    self.finish(ok.then_some(()).ok_or("the sender reported an error"));
                    self.state = State::Line;
                }
                State::Line => match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        self.line.extend_from_slice(&data[..i]);
                        data = &data[i + 1..];
                        let line = std::mem::take(&mut self.line);
                        self.control(&line);
                    }
                    None => {
                        self.line.extend_from_slice(data);
                        if self.line.len() > MAX_LINE {
                            self.state = State::Lost;
                        }
                        return;
                    }
                },
            }
        }
    }

    fn control(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        match line.first() {
            Some(b'C') => {
                let mut parts = text[1..].splitn(3, ' ');
                let (_mode, size, name) = (parts.next(), parts.next(), parts.next());
                let (Some(size), Some(name)) = (size.and_then(|s| s.parse::<u64>().ok()), name)
                else {
                    self.state = State::Lost;
                    return;
                };
                let path = self.path_of(name);
                self.file = Some((path, size, Instant::now()));
                self.state = if size == 0 {
                    State::End
                } else {
                    State::Data { left: size }
                };
            }
            Some(b'D') => {
                let name = text[1..].splitn(3, ' ').nth(2).unwrap_or("").to_string();
                self.dirs.push(name);
            }
            Some(b'E') => {
                self.dirs.pop();
            }
            // Times, and the sender's warnings and errors: nothing to record.
            Some(b'T' | b'\x01' | b'\x02') => {}
            _ => self.state = State::Lost,
        }
    }

    /// The path a file of the transfer is recorded under.
    fn path_of(&mut self, name: &str) -> String {
        let join = |base: &str, parts: &[String], name: &str| {
            let mut p = base.trim_end_matches('/').to_string();
            for part in parts.iter().map(String::as_str).chain([name]) {
                p.push('/');
                p.push_str(part);
            }
            p
        };
        match self.op {
            FileOp::Write => match self.paths.first() {
                Some(dest) if self.into_dir || !self.dirs.is_empty() => {
                    join(dest, &self.dirs, name)
                }
                Some(dest) => dest.clone(),
                None => name.to_string(),
            },
            _ => {
                if self.dirs.is_empty() {
                    // A top-level file of `-f`: the sources are sent in order.
                    let source = self.paths.get(self.sent).cloned();
                    self.sent += 1;
                    source.unwrap_or_else(|| name.to_string())
                } else {
                    // Inside a directory sent by `-r`: under the source it came from.
                    let base = self
                        .paths
                        .get(self.sent.min(self.paths.len().saturating_sub(1)));
                    let base = base.map_or(String::new(), |b| {
                        b.rsplit_once('/')
                            .map_or(String::new(), |(d, _)| d.to_string())
                    });
                    join(&base, &self.dirs, name)
                }
            }
        }
    }

    fn finish(&mut self, result: Result<(), &str>) {
        let Some((path, size, started)) = self.file.take() else {
            return;
        };
        let mut outcome = Outcome {
            duration_us: started.elapsed().as_micros() as u64,
            ..Outcome::default()
        };
        if let Err(why) = result {
            outcome.status = CommandStatus::Error;
            outcome.error = Some(CommandError {
                code: "scp".into(),
                message: why.into(),
            });
        }
        self.log.append(EventKind::FileTransfer {
            via: "scp".into(),
            op: self.op,
            path,
            to: None,
            bytes: size,
            outcome,
        });
    }

    /// The channel ended: a file still in transfer is recorded as interrupted.
    pub(crate) fn close(&mut self) {
        if let Some((path, size, started)) = self.file.take() {
            let left = match self.state {
                State::Data { left } => left,
                _ => 0,
            };
            self.log.append(EventKind::FileTransfer {
                via: "scp".into(),
                op: self.op,
                path,
                to: None,
                bytes: size - left,
                outcome: Outcome {
                    status: CommandStatus::Interrupted,
                    duration_us: started.elapsed().as_micros() as u64,
                    ..Outcome::default()
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::{Arc, Mutex};

    use tollgate_core::{Event, Recorder};

    use super::*;

    #[derive(Default)]
    struct Kept(Mutex<Vec<Event>>);

    impl Recorder for Kept {
        fn record(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    fn files(kept: &Kept) -> Vec<(String, u64, CommandStatus)> {
        kept.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::FileTransfer {
                    path,
                    bytes,
                    outcome,
                    ..
                } => Some((path.clone(), *bytes, outcome.status)),
                _ => None,
            })
            .collect()
    }

    fn reader(op: FileOp, paths: &[&str], dir: bool) -> (ScpReader, Arc<Kept>) {
        let kept = Arc::new(Kept::default());
        let log = SessionLog::new("s".into(), Arc::clone(&kept) as Arc<dyn Recorder>);
        let paths = paths.iter().map(|p| p.to_string()).collect();
        (ScpReader::new(log, op, paths, dir), kept)
    }

    fn stream() -> Vec<u8> {
        let mut s = b"T1700000000 0 1700000000 0\nC0644 5 a.txt\nhello\0".to_vec();
        s.extend_from_slice(b"D0755 0 sub\nC0600 3 b.bin\n\x00\x01\x02\0E\nC0644 0 empty\n\0");
        s
    }

    #[test]
    fn files_are_recorded_with_paths_and_sizes_however_the_stream_is_cut() {
        let whole = stream();
        for cut in 0..whole.len() {
            let (mut r, kept) = reader(FileOp::Write, &["/srv/in"], true);
            r.feed(&whole[..cut]);
            r.feed(&whole[cut..]);
            r.close();
            assert_eq!(
                files(&kept),
                [
                    ("/srv/in/a.txt".to_string(), 5, CommandStatus::Ok),
                    ("/srv/in/sub/b.bin".to_string(), 3, CommandStatus::Ok),
                    ("/srv/in/empty".to_string(), 0, CommandStatus::Ok),
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn downloads_are_named_after_their_sources_and_an_unfinished_file_is_interrupted() {
        let (mut r, kept) = reader(FileOp::Read, &["/etc/hosts", "/var/log/app.log"], false);
        r.feed(b"C0644 4 hosts\nabcd\0C0644 10 app.log\n12345");
        r.close();
        assert_eq!(
            files(&kept),
            [
                ("/etc/hosts".to_string(), 4, CommandStatus::Ok),
                (
                    "/var/log/app.log".to_string(),
                    5,
                    CommandStatus::Interrupted
                ),
            ]
        );
        // A single file to a named destination keeps that name.
        let (mut r, kept) = reader(FileOp::Write, &["/tmp/renamed.txt"], false);
        r.feed(b"C0644 2 orig.txt\nhi\0");
        assert_eq!(
            files(&kept),
            [("/tmp/renamed.txt".to_string(), 2, CommandStatus::Ok)]
        );
        // Not scp: reading stops, nothing is recorded.
        let (mut r, kept) = reader(FileOp::Write, &["/tmp/"], false);
        r.feed(b"hello there\n");
        r.feed(b"C0644 2 x\nhi\0");
        assert!(files(&kept).is_empty());
    }
}
