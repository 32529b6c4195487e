//! Masking throughput on terminal output: large multi-line pieces, as the SSH front masks them.
//!
//! `cargo run --release -p tollgate-mask --example mask_text_throughput`
//!
//! Builds ~64 MB of each kind of output (`seq` lines, log lines full of PII, `ls -l` and
//! syslog lines, NUL bytes, random base64 wrapped at 76), cuts it into pieces of at most
//! 32 KiB ending at a line end (as `StreamMask` does) and times `Mask::mask(ColumnMask::Scan,
//! piece)` with every built-in detector at its default strategy. Prints MB/s per input (best of
//! three) and how many pieces changed, then the detector pass (`find`) alone.

use std::hint::black_box;
use std::time::Instant;

use tollgate_core::{ColumnMask, MaskTally, SessionMask};
use tollgate_mask::{Kind, KindSet, Mask, MaskSpec, Strategy, find};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const SIZE: usize = 64 << 20;
const PIECE: usize = 32 << 10;

fn lines(mut line: impl FnMut(&mut Rng, u64) -> String) -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(SIZE + 256);
    let mut n = 0;
    while out.len() < SIZE {
        out.extend_from_slice(line(&mut rng, n).as_bytes());
        out.push(b'\n');
        n += 1;
    }
    out
}

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    const USERS: &[&str] = &["alice", "bob", "carol", "dmitri", "eve"];
    const MONTHS: &[&str] = &["Jan", "Feb", "Mar", "Nov", "Dec"];
    const FILES: &[&str] = &[
        "Cargo.toml",
        "README.md",
        "src",
        "target",
        "notes-2024-01-15.txt",
        "backup.tar.gz",
    ];
    const DAEMONS: &[&str] = &["sshd", "systemd", "kernel", "cron", "postgres"];
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    vec![
        ("seq", lines(|_, n| (n + 1).to_string())),
        (
            "pii log",
            lines(|_, _| {
                "login alice@example.com from 10.1.2.3 card 4111 1111 1111 1111".to_string()
            }),
        ),
        (
            "ls -l",
            lines(|rng, _| {
                format!(
                    "-rw-r--r-- 1 {u} {u} {size:>8} {m} {d:>2} {h:02}:{mi:02} {f}",
                    u = rng.pick(USERS),
                    size = rng.below(10_000_000),
                    m = rng.pick(MONTHS),
                    d = 1 + rng.below(28),
                    h = rng.below(24),
                    mi = rng.below(60),
                    f = rng.pick(FILES)
                )
            }),
        ),
        (
            "syslog",
            lines(|rng, _| {
                let daemon = rng.pick(DAEMONS);
                format!(
                    "{m} {d:>2} {h:02}:{mi:02}:{s:02} host-{hn} {daemon}[{pid}]: \
                     session {sid} opened for user {u} (uid={uid}) in {ms} ms",
                    m = rng.pick(MONTHS),
                    d = 1 + rng.below(28),
                    h = rng.below(24),
                    mi = rng.below(60),
                    s = rng.below(60),
                    hn = rng.below(100),
                    pid = rng.below(100_000),
                    sid = rng.below(1_000_000),
                    u = rng.pick(USERS),
                    uid = 1000 + rng.below(100),
                    ms = rng.below(5000),
                )
            }),
        ),
        ("zeros", vec![0u8; SIZE]),
        (
            "base64",
            lines(|rng, _| {
                (0..76)
                    .map(|_| char::from(B64[rng.below(64) as usize]))
                    .collect()
            }),
        ),
    ]
}

/// Pieces of at most [`PIECE`] bytes, each ending after a line end when there is one.
fn pieces(input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let take = rest.len().min(PIECE);
        let cut = match rest[..take].iter().rposition(|&b| b == b'\n') {
            Some(i) if take == PIECE => i + 1,
            _ => take,
        };
        let (piece, tail) = rest.split_at(cut);
        out.push(piece);
        rest = tail;
    }
    out
}

fn main() {
    let mask = match Mask::new(&MaskSpec {
        detectors: Kind::ALL
            .iter()
            .map(|&k| (k, Strategy::default_for(k)))
            .collect(),
        custom: Vec::new(),
        column_rules: Vec::new(),
        pseudonym_key: b"benchmark pseudonym key".to_vec(),
    }) {
        Ok(mask) => mask,
        Err(e) => {
            eprintln!("mask: {e}");
            std::process::exit(1);
        }
    };
    let only: Option<String> = std::env::args().nth(1);
    let mut out = Vec::with_capacity(4 * PIECE);
    let mut tally = MaskTally::default();
    for (name, input) in inputs() {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let pieces = pieces(&input);
        let mb = input.len() as f64 / 1e6;
        let mut best = f64::MAX;
        let mut changed = 0usize;
        let mut bytes_out = 0usize;
        let rounds = if std::env::var_os("FIND_ONLY").is_some() {
            0
        } else {
            3
        };
        for _ in 0..rounds {
            changed = 0;
            bytes_out = 0;
            let t0 = Instant::now();
            for &piece in &pieces {
                out.clear();
                if mask.mask(ColumnMask::Scan, black_box(piece), &mut out, &mut tally) {
                    changed += 1;
                    bytes_out += out.len();
                } else {
                    bytes_out += piece.len();
                }
            }
            best = best.min(t0.elapsed().as_secs_f64());
        }
        // The detector pass alone (no encoded pass, no rewrite).
        let mut found = Vec::new();
        let mut best_find = f64::MAX;
        let mut findings = 0usize;
        for _ in 0..3 {
            findings = 0;
            let t0 = Instant::now();
            for &piece in &pieces {
                found.clear();
                find(black_box(piece), KindSet::all(), &mut found);
                findings += found.len();
            }
            best_find = best_find.min(t0.elapsed().as_secs_f64());
        }
        println!(
            "{name:<8} mask {:>6.0} MB/s  find {:>6.0} MB/s  ({:.0} MB, {} pieces, {changed} changed, \
             {:.0} MB out, {findings} findings)",
            mb / best,
            mb / best_find,
            mb,
            pieces.len(),
            bytes_out as f64 / 1e6
        );
    }
}
