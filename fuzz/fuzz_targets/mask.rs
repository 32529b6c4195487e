#![no_main]
//! The masker: arbitrary bytes through every built-in detector, a custom detector, the encoded
//! (hex/base64) pass and a whole-value column rule, with each strategy. Nothing may panic, every
//! finding must lie inside the input, and the masked output stays within a fixed multiple of
//! the input's length.

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tollgate_core::{ColumnMask, MaskTally, SessionMask};
use tollgate_mask::{ColumnRule, CustomDetector, Kind, KindSet, Mask, MaskSpec, Strategy, find};

/// One compiled mask per strategy, built once.
static MASKS: LazyLock<Vec<Mask>> = LazyLock::new(|| {
    [Strategy::Partial, Strategy::Redact, Strategy::Pseudonym]
        .into_iter()
        .filter_map(mask)
        .collect()
});

fn mask(strategy: Strategy) -> Option<Mask> {
    Mask::new(&MaskSpec {
        detectors: Kind::ALL.iter().map(|&k| (k, strategy)).collect(),
        custom: vec![CustomDetector {
            name: "employee-id".into(),
            pattern: r"EMP-\d{4,8}".into(),
            strategy,
        }],
        column_rules: vec![ColumnRule {
            name: "secrets".into(),
            columns: vec!["*secret*".into()],
            tables: Vec::new(),
            strategy,
        }],
        pseudonym_key: b"fuzzing pseudonym key".to_vec(),
    })
    .ok()
}

/// Longest output per input byte: a one-byte finding may become a redaction label or a
/// pseudonym of a few dozen bytes.
fn bound(input: usize) -> usize {
    40 * input + 64
}

fuzz_target!(|data: &[u8]| {
    let mut found = Vec::new();
    find(data, KindSet::all(), &mut found);
    for f in &found {
        assert!(f.start < f.end && f.end <= data.len(), "{f:?} outside {}", data.len());
    }
    assert_eq!(MASKS.len(), 3, "the fixed specs compile");
    for m in MASKS.iter() {
        let mut tally = MaskTally::default();
        for how in [ColumnMask::Scan, ColumnMask::Rule(0)] {
            let mut out = Vec::new();
            let changed = m.mask(how, data, &mut out, &mut tally);
            if changed {
                assert!(out.len() <= bound(data.len()), "{} -> {}", data.len(), out.len());
            } else {
                assert!(out.is_empty());
            }
        }
        if let Ok(text) = std::str::from_utf8(data) {
            let masked = m.mask_text(text, &mut tally);
            assert!(masked.len() <= bound(text.len()));
        }
    }
});
