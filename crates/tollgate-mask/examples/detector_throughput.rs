//! Detector throughput on realistic result rows.
//!
//! `cargo run --release -p tollgate-mask --example detector_throughput`
//!
//! Builds ~50 MB of row values shaped like a users / payments table (ids, names, e-mails,
//! phones, cards, SSNs, IBANs, amounts, statuses, timestamps, UUIDs and free-text notes with
//! occasional PII), runs `find` with every detector on over each value and reports MB/s and
//! ns per value, overall and per column, then the cost on short ordinary values alone.

use std::hint::black_box;
use std::time::Instant;

use tollgate_core::{ColumnMask, MaskTally, SessionMask};
use tollgate_mask::{Finding, Kind, KindSet, Mask, MaskSpec, Strategy, find};

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
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }
}

const FIRST: &[&str] = &[
    "Alice", "Bob", "Carol", "Dmitri", "Eve", "Fatima", "Gustavo", "Hiro", "Ines", "José",
];
const LAST: &[&str] = &[
    "Johnson", "Smith", "Garcia", "Müller", "Tanaka", "O'Neil", "Nguyen", "Rossi", "Kowalski",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example.org",
    "corp.example.net",
    "uni.example.edu",
];
const STATUS: &[&str] = &[
    "paid",
    "pending",
    "failed",
    "refunded",
    "active",
    "shipped",
    "cancelled",
];
const WORDS: &[&str] = &[
    "customer",
    "asked",
    "about",
    "the",
    "refund",
    "policy",
    "order",
    "delayed",
    "shipping",
    "address",
    "updated",
    "please",
    "call",
    "back",
    "tomorrow",
    "invoice",
    "sent",
    "warehouse",
    "ticket",
    "resolved",
];

const COLUMNS: [&str; 13] = [
    "id",
    "name",
    "email",
    "phone",
    "card",
    "ssn",
    "iban",
    "amount",
    "status",
    "created_at",
    "uuid",
    "note",
    "order_no",
];

fn luhn_complete(prefix: &str) -> String {
    (0..10)
        .map(|d| format!("{prefix}{d}"))
        .find(|s| {
            let sum: u32 = s
                .bytes()
                .rev()
                .enumerate()
                .map(|(i, b)| {
                    let x = u32::from(b - b'0');
                    if i % 2 == 1 {
                        if x * 2 > 9 { x * 2 - 9 } else { x * 2 }
                    } else {
                        x
                    }
                })
                .sum();
            sum.is_multiple_of(10)
        })
        .unwrap_or_default()
}

fn german_iban(bban: &str) -> String {
    let rearranged = format!("{bban}131400"); // D=13 E=14, check digits 00
    let rem = rearranged
        .bytes()
        .fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
    format!("DE{:02}{bban}", 98 - rem)
}

fn value(rng: &mut Rng, column: usize, row: u64) -> String {
    match column {
        0 => (row + 1).to_string(),
        1 => format!("{} {}", rng.pick(FIRST), rng.pick(LAST)),
        2 => format!(
            "{}.{}{}@{}",
            rng.pick(FIRST),
            rng.pick(LAST),
            rng.below(100),
            rng.pick(DOMAINS)
        )
        .to_lowercase()
        .replace('\'', ""),
        3 => match rng.below(3) {
            0 => format!("+1 415-555-{}", rng.digits(4)),
            1 => format!("({}) 555-{}", 200 + rng.below(700), rng.digits(4)),
            _ => format!("+44 20 7946 {}", rng.digits(4)),
        },
        4 => {
            let card = luhn_complete(&format!("4{}", rng.digits(14)));
            if rng.below(2) == 0 {
                card
            } else {
                let b = card.as_bytes();
                let g = |i: usize| std::str::from_utf8(&b[i..i + 4]).unwrap_or_default();
                format!("{} {} {} {}", g(0), g(4), g(8), g(12))
            }
        }
        5 => format!(
            "{}-{:02}-{:04}",
            100 + rng.below(600),
            1 + rng.below(99),
            1 + rng.below(9999)
        ),
        6 => german_iban(&rng.digits(18)),
        7 => format!("{}.{:02}", rng.below(100_000), rng.below(100)),
        8 => rng.pick(STATUS).to_string(),
        9 => format!(
            "2024-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1_000_000)
        ),
        10 => format!(
            "{}-{}-4{}-a{}-{}",
            rng.hex(8),
            rng.hex(4),
            rng.hex(3),
            rng.hex(3),
            rng.hex(12)
        ),
        11 => {
            let n = 4 + rng.below(30) as usize;
            let mut words: Vec<String> = (0..n).map(|_| rng.pick(WORDS).to_string()).collect();
            match rng.below(10) {
                0 => words.push(format!(
                    "contact {}@example.com",
                    rng.pick(FIRST).to_lowercase()
                )),
                1 => words.push(format!("call +1 415-555-{}", rng.digits(4))),
                2 => words.push(format!("password={}", rng.hex(10))),
                _ => {}
            }
            words.join(" ")
        }
        _ => format!("ORD-2024-{:06}", rng.below(1_000_000)),
    }
}

/// Values as one buffer plus (start, end, column) ranges.
struct Table {
    bytes: Vec<u8>,
    values: Vec<(usize, usize, usize)>,
}

fn build(target: usize) -> Table {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut t = Table {
        bytes: Vec::with_capacity(target + 1024),
        values: Vec::new(),
    };
    let mut row = 0;
    while t.bytes.len() < target {
        for column in 0..COLUMNS.len() {
            let v = value(&mut rng, column, row);
            let start = t.bytes.len();
            t.bytes.extend_from_slice(v.as_bytes());
            t.values.push((start, t.bytes.len(), column));
        }
        row += 1;
    }
    t
}

fn main() {
    let table = build(50 << 20);
    let kinds = KindSet::all();
    let mut out: Vec<Finding> = Vec::with_capacity(16);
    let mb = table.bytes.len() as f64 / 1e6;
    println!(
        "{} values, {:.1} MB, {} columns",
        table.values.len(),
        mb,
        COLUMNS.len()
    );

    let mut best = f64::MAX;
    let mut findings = 0usize;
    for _ in 0..3 {
        findings = 0;
        let t0 = Instant::now();
        for &(s, e, _) in &table.values {
            out.clear();
            find(black_box(&table.bytes[s..e]), kinds, &mut out);
            findings += out.len();
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "all rows:  {:.0} MB/s, {:.1} ns/value, {} findings (best of 3)",
        mb / best,
        best * 1e9 / table.values.len() as f64,
        findings
    );

    // The whole masking pass the gateway runs on a value: detectors, the hex/base64 pass and
    // the rewrite with each finding's strategy.
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
    let mut best = f64::MAX;
    let mut changed = 0usize;
    let mut masked = Vec::with_capacity(256);
    let mut tally = MaskTally::default();
    for _ in 0..3 {
        changed = 0;
        let t0 = Instant::now();
        for &(s, e, _) in &table.values {
            masked.clear();
            if mask.mask(
                ColumnMask::Scan,
                black_box(&table.bytes[s..e]),
                &mut masked,
                &mut tally,
            ) {
                changed += 1;
            }
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "masking:   {:.0} MB/s, {:.1} ns/value, {} values changed (detect + encoded pass + rewrite, best of 3)",
        mb / best,
        best * 1e9 / table.values.len() as f64,
        changed
    );

    println!("per column (values copied contiguously; ns/value, MB/s):");
    for (c, name) in COLUMNS.iter().enumerate() {
        let mut column = Table {
            bytes: Vec::new(),
            values: Vec::new(),
        };
        for &(s, e, _) in table.values.iter().filter(|v| v.2 == c) {
            let start = column.bytes.len();
            column.bytes.extend_from_slice(&table.bytes[s..e]);
            column.values.push((start, column.bytes.len(), c));
        }
        let t0 = Instant::now();
        let mut n = 0;
        for &(s, e, _) in &column.values {
            out.clear();
            find(black_box(&column.bytes[s..e]), kinds, &mut out);
            n += out.len();
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "  {name:<10} {:>7.1} ns  {:>7.0} MB/s  {:>8} findings",
            secs * 1e9 / column.values.len() as f64,
            column.bytes.len() as f64 / 1e6 / secs,
            n
        );
    }

    let short = [
        "0",
        "42",
        "2024-01-15 10:00:00",
        "paid",
        "1234.56",
        "true",
        "ORD-2024-000123",
        "12:30:45",
    ];
    let iterations = 5_000_000;
    for v in short {
        let t0 = Instant::now();
        for _ in 0..iterations {
            out.clear();
            find(black_box(v.as_bytes()), kinds, &mut out);
        }
        let ns = t0.elapsed().as_secs_f64() * 1e9 / iterations as f64;
        println!(
            "short value {v:<22} {ns:>6.1} ns/value ({} findings)",
            out.len()
        );
    }
}
