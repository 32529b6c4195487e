#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Ordinary database values (ids, amounts, dates, hashes, hostnames, …) must never be reported
//! by any built-in detector.

use tollgate_mask::{KindSet, find};

#[test]
fn ordinary_values_have_no_findings() {
    let data = include_str!("ordinary_values.txt");
    let values: Vec<&str> = data
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(values.len() >= 400, "only {} values", values.len());

    let mut failures = Vec::new();
    let mut out = Vec::new();
    for value in &values {
        out.clear();
        find(value.as_bytes(), KindSet::all(), &mut out);
        for f in &out {
            let span = String::from_utf8_lossy(&value.as_bytes()[f.start..f.end]);
            failures.push(format!(
                "{value:?}: {} matched {span:?} at {}..{}",
                f.kind.name(),
                f.start,
                f.end
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "false positives:\n{}",
        failures.join("\n")
    );
}

#[test]
fn ordinary_values_joined_as_a_row_have_no_findings() {
    // The same values as one tab-separated text, as a whole row or log line would arrive.
    let data = include_str!("ordinary_values.txt");
    let row: Vec<&str> = data
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let row = row.join("\t");
    let mut out = Vec::new();
    find(row.as_bytes(), KindSet::all(), &mut out);
    let found: Vec<String> = out
        .iter()
        .map(|f| format!("{} {:?}", f.kind.name(), &row[f.start..f.end]))
        .collect();
    assert!(found.is_empty(), "false positives:\n{}", found.join("\n"));
}
