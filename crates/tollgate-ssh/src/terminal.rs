//! What a channel's output goes through on its way to the client: masking that holds back the
//! unfinished end of a stream (so a value split across two data messages is still found), and
//! the recording of the channel as asciicast v2 pieces on the session's chain.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::{ColumnMask, EventKind, MaskTally, SessionLog, SessionMask, TerminalHeader};

/// How long an unfinished line is held back waiting for the rest of it before it is masked and
/// sent as it is.
pub(crate) const HOLD: Duration = Duration::from_millis(25);

/// A line longer than this is cut even without a line end (what is past the cut is held).
const MAX_LINE: usize = 16 * 1024;

/// What is held back of an over-long line: a value starting this close to the end is kept whole.
const KEEP: usize = 512;

/// A PEM block waiting for its end line is held up to this size.
const MAX_PEM: usize = 64 * 1024;

/// Masks one output stream (stdout or stderr of a channel) chunk by chunk.
///
/// Everything up to the last line end goes out masked at once; the unfinished last line is
/// held until more output completes it, or [`HOLD`] passes, or the stream ends. Detectors see
/// whole lines, so a value split across data messages is masked like any other. A line over
/// 16 KiB is cut near its end; an unclosed PEM block is held whole up to 64 KiB.
pub(crate) struct StreamMask {
    mask: Arc<dyn SessionMask>,
    carry: Vec<u8>,
    held_since: Option<Instant>,
    /// What was masked, per detector.
    pub(crate) tally: MaskTally,
}

impl StreamMask {
    pub(crate) fn new(mask: Arc<dyn SessionMask>) -> Self {
        Self {
            mask,
            carry: Vec::new(),
            held_since: None,
            tally: MaskTally::default(),
        }
    }

    /// Takes a chunk; appends what may go out now to `out`.
    pub(crate) fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if chunk.is_empty() {
            return;
        }
        let joined;
        let buf: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            let mut b = std::mem::take(&mut self.carry);
            b.extend_from_slice(chunk);
            joined = b;
            &joined
        };
        let cut = cut_point(buf);
        self.emit(&buf[..cut], out);
        let rest = &buf[cut..];
        if rest.is_empty() {
            self.held_since = None;
        } else {
            if self.held_since.is_none() || cut > 0 {
                self.held_since = Some(Instant::now());
            }
            self.carry.clear();
            self.carry.extend_from_slice(rest);
        }
    }

    /// Sends what is held, masked as it is.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.carry);
        self.emit(&held, out);
        self.held_since = None;
    }

    /// When the held bytes must go out, if any are held.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.held_since.map(|t| t + HOLD)
    }

    /// Whether nothing is held.
    pub(crate) fn is_clear(&self) -> bool {
        self.carry.is_empty()
    }

    fn emit(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        if piece.is_empty() {
            return;
        }
        if !self
            .mask
            .mask(ColumnMask::Scan, piece, out, &mut self.tally)
        {
            out.extend_from_slice(piece);
        }
    }
}

/// Where to cut `buf`: after its last line end, before an unclosed PEM block, or near the end
/// of an over-long line.
fn cut_point(buf: &[u8]) -> usize {
    let mut cut = match memrchr(b'\n', buf) {
        Some(i) => i + 1,
        None => 0,
    };
    if let Some(begin) = unclosed_pem(buf)
        && buf.len() - begin <= MAX_PEM
    {
        let line_start = memrchr(b'\n', &buf[..begin]).map_or(0, |i| i + 1);
        cut = cut.min(line_start);
        return cut;
    }
    if buf.len() - cut > MAX_LINE {
        // An over-long line: keep the last KEEP bytes, cut at a space or control byte if one
        // is near.
        let hard = buf.len() - KEEP;
        let soft = buf[hard.saturating_sub(KEEP)..hard]
            .iter()
            .rposition(|&b| b <= b' ')
            .map(|i| hard.saturating_sub(KEEP) + i + 1);
        cut = soft.unwrap_or(hard);
    }
    cut
}

/// The start of the last `-----BEGIN` with no `-----END` after it.
fn unclosed_pem(buf: &[u8]) -> Option<usize> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let begin = rfind(buf, BEGIN)?;
    if rfind(&buf[begin..], END).is_some() {
        return None;
    }
    Some(begin)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(hay, needle)
}

fn memrchr(byte: u8, buf: &[u8]) -> Option<usize> {
    memchr::memrchr(byte, buf)
}

/// The keystrokes typed on a PTY channel that the target has not echoed yet. Output that is
/// exactly their echo reveals nothing the client did not type, so it skips the hold.
#[derive(Default)]
pub(crate) struct Echo {
    typed: VecDeque<u8>,
}

/// Most keystrokes remembered for their echo.
const MAX_TYPED: usize = 256;

impl Echo {
    /// Notes keystrokes sent to the target (printable ones: control keys echo differently).
    pub(crate) fn typed(&mut self, data: &[u8]) {
        for &b in data {
            if b >= b' ' && b != 0x7f {
                if self.typed.len() == MAX_TYPED {
                    self.typed.pop_front();
                }
                self.typed.push_back(b);
            } else {
                // After a control key the echo is the shell's to decide.
                self.typed.clear();
            }
        }
    }

    /// Whether `output` is the echo of the next keystrokes; if so they are consumed.
    pub(crate) fn is_echo(&mut self, output: &[u8]) -> bool {
        if output.is_empty() || output.len() > self.typed.len() {
            self.typed.clear();
            return false;
        }
        if self.typed.iter().zip(output).all(|(a, b)| a == b) {
            self.typed.drain(..output.len());
            true
        } else {
            self.typed.clear();
            false
        }
    }
}

/// A piece goes on the chain once it holds this many bytes of events…
const PIECE_BYTES: usize = 64 * 1024;
/// …or once its first event is this old.
pub(crate) const PIECE_AGE: Duration = Duration::from_secs(1);

/// The asciicast recording of one channel, written as `terminal` events.
///
/// Output is recorded as the client received it (masked). Two things the client sees unmasked
/// are masked again, a line at a time, before they are recorded: the echo of its own keys and
/// the keys themselves (input events). So a line appears in a recording when it ends, with the
/// time its first key was typed.
pub(crate) struct Recording {
    log: SessionLog,
    mask: Option<Arc<dyn SessionMask>>,
    /// What masking changed in recorded input and echo (not counted as masked output: the
    /// client saw them as typed).
    tally: MaskTally,
    /// The echo of the line being typed, and when it started.
    echo_line: Vec<u8>,
    echo_at: f64,
    /// The keys of the line being typed, and when it started.
    typed_line: Vec<u8>,
    typed_at: f64,
    channel: u32,
    started: Instant,
    header: Option<TerminalHeader>,
    events: Vec<(f64, String, String)>,
    bytes: usize,
    first_at: Option<Instant>,
    /// Output bytes recorded so far, and the most that will be.
    recorded: u64,
    limit: u64,
    unrecorded: u64,
    /// An unfinished UTF-8 sequence at the end of the last output / input.
    partial_out: Vec<u8>,
    partial_in: Vec<u8>,
}

impl Recording {
    /// Starts the recording of a channel; `limit` bounds the output bytes recorded (0: none).
    pub(crate) fn new(
        log: SessionLog,
        mask: Option<Arc<dyn SessionMask>>,
        channel: u32,
        header: TerminalHeader,
        limit: u64,
    ) -> Self {
        let mut recording = Self {
            log,
            mask,
            tally: MaskTally::default(),
            echo_line: Vec::new(),
            echo_at: 0.0,
            typed_line: Vec::new(),
            typed_at: 0.0,
            channel,
            started: Instant::now(),
            header: Some(header),
            events: Vec::new(),
            bytes: 0,
            first_at: None,
            recorded: 0,
            limit,
            unrecorded: 0,
            partial_out: Vec::new(),
            partial_in: Vec::new(),
        };
        // The header goes on the chain at once: the recording is known from the channel's start.
        recording.write();
        recording
    }

    /// Whether more output would be recorded (the limit is not reached).
    pub(crate) fn takes_output(&self) -> bool {
        self.recorded < self.limit
    }

    /// Output the client received.
    pub(crate) fn output(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.end_echo();
        self.record_output(data, None);
    }

    /// The echo of keys the client typed (sent to it unmasked).
    pub(crate) fn echo(&mut self, data: &[u8]) {
        if self.echo_line.is_empty() {
            self.echo_at = self.now();
        }
        self.echo_line.extend_from_slice(data);
        if self.echo_line.len() > MAX_LINE {
            self.end_echo();
        }
    }

    /// Records the echoed line, masked.
    fn end_echo(&mut self) {
        if self.echo_line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.echo_line);
        let masked = self.masked(&line);
        let at = self.echo_at;
        self.record_output(&masked, Some(at));
    }

    fn masked(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.mask {
            Some(mask) if mask.mask(ColumnMask::Scan, data, &mut out, &mut self.tally) => out,
            _ => data.to_vec(),
        }
    }

    fn now(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e6
    }

    fn record_output(&mut self, data: &[u8], at: Option<f64>) {
        if self.recorded >= self.limit {
            self.unrecorded += data.len() as u64;
            return;
        }
        let room = (self.limit - self.recorded) as usize;
        let (now, over) = data.split_at(room.min(data.len()));
        self.recorded += now.len() as u64;
        self.unrecorded += over.len() as u64;
        let text = without_binary(take_text(&mut self.partial_out, now));
        self.push("o", text, at);
    }

    /// Keys the client typed: recorded a line at a time (at Enter or another control key),
    /// masked.
    pub(crate) fn input(&mut self, data: &[u8]) {
        for &b in data {
            if self.typed_line.is_empty() {
                self.typed_at = self.now();
            }
            self.typed_line.push(b);
            if b < b' ' || self.typed_line.len() > MAX_LINE {
                self.end_typed();
            }
        }
    }

    fn end_typed(&mut self) {
        if self.typed_line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.typed_line);
        let masked = self.masked(&line);
        let at = self.typed_at;
        let text = take_text(&mut self.partial_in, &masked);
        self.push("i", text, Some(at));
    }

    /// A terminal resize.
    pub(crate) fn resize(&mut self, cols: u32, rows: u32) {
        self.end_echo();
        self.push("r", format!("{cols}x{rows}"), None);
    }

    fn push(&mut self, code: &str, data: String, at: Option<f64>) {
        if data.is_empty() {
            return;
        }
        // Microsecond resolution is what asciicast players use.
        let t = at.unwrap_or_else(|| self.now());
        self.bytes += data.len() + 16;
        self.events.push((t, code.to_string(), data));
        let now = Instant::now();
        let first = *self.first_at.get_or_insert(now);
        if self.bytes >= PIECE_BYTES || now.duration_since(first) >= PIECE_AGE {
            self.write();
        }
    }

    /// When the pending events must be written even if nothing more comes.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + PIECE_AGE)
    }

    /// Writes the pending events as one `terminal` event.
    pub(crate) fn write(&mut self) {
        if self.events.is_empty() && self.header.is_none() && self.unrecorded == 0 {
            return;
        }
        self.log.append(EventKind::Terminal {
            channel: self.channel,
            header: self.header.take(),
            events: std::mem::take(&mut self.events),
            unrecorded: std::mem::take(&mut self.unrecorded),
        });
        self.bytes = 0;
        self.first_at = None;
    }

    /// Writes what is pending, including an unfinished line or UTF-8 sequence.
    pub(crate) fn finish(&mut self) {
        self.end_echo();
        self.end_typed();
        let out = std::mem::take(&mut self.partial_out);
        if !out.is_empty() {
            self.push("o", String::from_utf8_lossy(&out).into_owned(), None);
        }
        let typed = std::mem::take(&mut self.partial_in);
        if !typed.is_empty() {
            self.push("i", String::from_utf8_lossy(&typed).into_owned(), None);
        }
        self.write();
    }
}

/// Whether a character is one a terminal shows or acts on: printable text and the controls a
/// terminal uses (BEL, BS, TAB, LF, VT, FF, CR, ESC).
fn terminal_char(c: char) -> bool {
    !c.is_control() || matches!(c, '\x07'..='\x0d' | '\x1b')
}

/// Output with each run of binary bytes (other control characters, invalid UTF-8) recorded as
/// one U+FFFD: a terminal shows nothing of them, and escaped one by one in JSON they would take
/// six bytes each in the trail.
fn without_binary(text: String) -> String {
    if text.chars().all(terminal_char) {
        return text;
    }
    let mut out = String::with_capacity(text.len().min(4096));
    let mut in_run = false;
    for c in text.chars() {
        if terminal_char(c) && c != '\u{fffd}' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('\u{fffd}');
            in_run = true;
        }
    }
    out
}

/// `partial` + `data` as text, keeping an unfinished UTF-8 sequence at the end for later;
/// invalid bytes become U+FFFD.
fn take_text(partial: &mut Vec<u8>, data: &[u8]) -> String {
    let joined;
    let bytes: &[u8] = if partial.is_empty() {
        data
    } else {
        let mut b = std::mem::take(partial);
        b.extend_from_slice(data);
        joined = b;
        &joined
    };
    let mut end = bytes.len();
    // An unfinished sequence is at most 3 bytes: a lead byte and its continuations.
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        if b >= 0xC0 {
            let need = if b >= 0xF0 {
                4
            } else if b >= 0xE0 {
                3
            } else {
                2
            };
            if need > back {
                end = bytes.len() - back;
            }
        }
        break;
    }
    partial.extend_from_slice(&bytes[end..]);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// For the fuzz target `terminal`: the input, cut into chunks of varying sizes, goes through a
/// stream mask that changes nothing, a recording and a legacy scp reader (both ways). None may
/// panic, and the mask must hand on every byte once, in order.
#[doc(hidden)]
pub fn fuzz_terminal(data: &[u8]) -> Result<(), String> {
    struct Unchanged;
    impl SessionMask for Unchanged {
        fn table_columns(&self) -> &[tollgate_core::TableColumn] {
            &[]
        }
        fn column(&self, _: &str, _: Option<usize>) -> ColumnMask {
            ColumnMask::Scan
        }
        fn mask(&self, _: ColumnMask, _: &[u8], _: &mut Vec<u8>, _: &mut MaskTally) -> bool {
            false
        }
        fn counter_names(&self) -> &[String] {
            &[]
        }
    }
    struct Discard;
    impl tollgate_core::Recorder for Discard {
        fn record(&self, _: tollgate_core::Event) {}
    }
    let Some((&seed, rest)) = data.split_first() else {
        return Ok(());
    };
    let log = SessionLog::new("fuzz".into(), Arc::new(Discard));
    let mut mask = StreamMask::new(Arc::new(Unchanged));
    let header = TerminalHeader {
        width: 80,
        height: 24,
        term: None,
        started: 0,
        command: String::new(),
    };
    let mut recording = Recording::new(log.clone(), Some(Arc::new(Unchanged)), 0, header, 4096);
    let mut up = crate::scp::ScpReader::new(
        log.clone(),
        tollgate_core::FileOp::Write,
        vec!["/d/".into()],
        true,
    );
    let mut down =
        crate::scp::ScpReader::new(log, tollgate_core::FileOp::Read, vec!["/a".into()], false);
    let mut echo = Echo::default();
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0usize;
    while at < rest.len() {
        let size = (usize::from(seed.rotate_left(i as u32 % 8)) % 97 + 1).min(rest.len() - at);
        let chunk = &rest[at..at + size];
        at += size;
        i += 1;
        mask.push(chunk, &mut out);
        if i.is_multiple_of(3) {
            mask.flush(&mut out);
        }
        echo.typed(chunk);
        let _ = echo.is_echo(chunk);
        recording.output(chunk);
        recording.input(chunk);
        recording.echo(chunk);
        up.feed(chunk);
        down.feed(chunk);
    }
    mask.flush(&mut out);
    recording.finish();
    up.close();
    down.close();
    if out != rest {
        return Err(format!(
            "the stream mask handed on {} bytes for {} (or changed their order)",
            out.len(),
            rest.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Masks `4111 1111 1111 1111`-like runs of the letter X for the tests: any `SECRET-` and
    /// the digits after it.
    struct XMask;

    impl SessionMask for XMask {
        fn table_columns(&self) -> &[tollgate_core::TableColumn] {
            &[]
        }
        fn column(&self, _: &str, _: Option<usize>) -> ColumnMask {
            ColumnMask::Scan
        }
        fn mask(&self, _: ColumnMask, value: &[u8], out: &mut Vec<u8>, t: &mut MaskTally) -> bool {
            let text = String::from_utf8_lossy(value);
            let mut changed = false;
            let mut result = String::new();
            let mut rest: &str = &text;
            while let Some(i) = rest.find("SECRET-") {
                result.push_str(&rest[..i]);
                let after = &rest[i + 7..];
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                if digits >= 8 {
                    result.push_str("[masked]");
                    rest = &after[digits..];
                    changed = true;
                    t.bump(0);
                } else {
                    result.push_str("SECRET-");
                    rest = after;
                }
            }
            result.push_str(rest);
            if changed {
                out.extend_from_slice(result.as_bytes());
            }
            changed
        }
        fn counter_names(&self) -> &[String] {
            &[]
        }
    }

    fn masked_in_pieces(text: &str, split: &[usize]) -> String {
        let mut m = StreamMask::new(Arc::new(XMask));
        let mut out = Vec::new();
        let mut at = 0;
        for &s in split {
            m.push(&text.as_bytes()[at..s], &mut out);
            at = s;
        }
        m.push(&text.as_bytes()[at..], &mut out);
        m.flush(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_value_split_anywhere_is_masked() {
        let text = "id 7\r\ntoken SECRET-1234567890 ok\r\nnext line\r\n";
        let whole = masked_in_pieces(text, &[]);
        assert_eq!(whole, "id 7\r\ntoken [masked] ok\r\nnext line\r\n");
        for i in 1..text.len() {
            assert_eq!(masked_in_pieces(text, &[i]), whole, "split at {i}");
            for j in i..text.len() {
                assert_eq!(masked_in_pieces(text, &[i, j]), whole, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn complete_lines_go_out_at_once_and_the_rest_is_held() {
        let mut m = StreamMask::new(Arc::new(XMask));
        let mut out = Vec::new();
        m.push(b"one\ntwo SECRET-1234", &mut out);
        assert_eq!(out, b"one\n");
        assert!(!m.is_clear());
        assert!(m.deadline().is_some());
        m.push(b"5678\n$ ", &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "one\ntwo [masked]\n");
        m.flush(&mut out);
        assert_eq!(String::from_utf8_lossy(&out), "one\ntwo [masked]\n$ ");
        assert!(m.is_clear() && m.deadline().is_none());
    }

    #[test]
    fn long_lines_and_pem_blocks() {
        // No line end at all (binary output): the stream moves, a bounded tail is held.
        let mut m = StreamMask::new(Arc::new(XMask));
        let mut out = Vec::new();
        let zeros = vec![0u8; 32 * 1024];
        for _ in 0..10 {
            m.push(&zeros, &mut out);
        }
        assert!(
            out.len() >= 10 * 32 * 1024 - MAX_LINE - KEEP,
            "{}",
            out.len()
        );
        m.flush(&mut out);
        assert_eq!(out.len(), 10 * 32 * 1024);
        // A PEM block is held until its end line.
        let mut m = StreamMask::new(Arc::new(XMask));
        let mut out = Vec::new();
        m.push(b"x\n-----BEGIN PRIVATE KEY-----\nAAAA\n", &mut out);
        assert_eq!(out, b"x\n");
        m.push(b"-----END PRIVATE KEY-----\n", &mut out);
        assert!(m.is_clear());
        assert!(String::from_utf8_lossy(&out).ends_with("-----END PRIVATE KEY-----\n"));
    }

    #[test]
    fn echo_of_typed_keys_is_recognised() {
        let mut e = Echo::default();
        e.typed(b"ls");
        assert!(e.is_echo(b"l"));
        assert!(e.is_echo(b"s"));
        assert!(!e.is_echo(b"x"));
        e.typed(b"abc");
        assert!(!e.is_echo(b"abcd"), "more than was typed");
        e.typed(b"ab\r");
        assert!(!e.is_echo(b"a"), "after Enter the echo is unknown");
    }

    #[test]
    fn binary_runs_are_recorded_as_one_replacement_character() {
        assert_eq!(
            without_binary("plain\r\n\x1b[1mbold\x07".into()),
            "plain\r\n\x1b[1mbold\x07"
        );
        assert_eq!(
            without_binary("a\0\0\0b\x01\u{fffd}c".into()),
            "a\u{fffd}b\u{fffd}c"
        );
        let mut r = Recording::new(
            SessionLog::new("s".into(), Arc::new(Discard)),
            None,
            0,
            TerminalHeader {
                width: 80,
                height: 24,
                term: None,
                started: 0,
                command: String::new(),
            },
            100,
        );
        r.output(&[0u8; 60]);
        r.output(&[b'x'; 60]);
        assert_eq!(r.recorded, 100, "raw bytes count toward the limit");
        assert_eq!(r.unrecorded, 20);
        assert_eq!(r.events.len(), 2);
        assert_eq!(r.events[0].2, "\u{fffd}");
        assert_eq!(r.events[1].2, "x".repeat(40));
    }

    struct Discard;

    impl tollgate_core::Recorder for Discard {
        fn record(&self, _: tollgate_core::Event) {}
    }

    #[test]
    fn the_fuzz_entry_point_accepts_what_it_is_given() {
        assert_eq!(fuzz_terminal(b""), Ok(()));
        assert_eq!(
            fuzz_terminal(b"\x07C0644 3 a\nabc\0line\r\n\x1b[1m"),
            Ok(())
        );
        let noise: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 256) as u8).collect();
        assert_eq!(fuzz_terminal(&noise), Ok(()));
    }

    #[test]
    fn text_keeps_unfinished_utf8_for_later() {
        let mut p = Vec::new();
        let euro = "€".as_bytes();
        assert_eq!(take_text(&mut p, &[b'a', euro[0]]), "a");
        assert_eq!(take_text(&mut p, &euro[1..2]), "");
        assert_eq!(take_text(&mut p, &[euro[2], b'b']), "€b");
        assert!(p.is_empty());
        assert_eq!(take_text(&mut p, &[0xff, b'c']), "\u{fffd}c");
    }
}
