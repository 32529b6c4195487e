#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Every line of `sensitive_values.tsv` holds one sensitive value of a kind; the detector for
//! that kind must report exactly that span.

use std::collections::BTreeMap;

use tollgate_mask::{Kind, KindSet, find};

struct Case<'a> {
    line: usize,
    kind: Kind,
    text: &'a str,
    span: &'a str,
}

fn cases() -> Vec<Case<'static>> {
    include_str!("sensitive_values.tsv")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 3, "line {}: expected 3 columns: {l:?}", i + 1);
            let kind = Kind::from_name(cols[0])
                .unwrap_or_else(|| panic!("line {}: unknown kind {:?}", i + 1, cols[0]));
            Case {
                line: i + 1,
                kind,
                text: cols[1],
                span: cols[2],
            }
        })
        .collect()
}

#[test]
fn every_kind_has_at_least_eight_cases() {
    let mut counts: BTreeMap<&str, usize> = Kind::ALL.iter().map(|k| (k.name(), 0)).collect();
    for c in cases() {
        *counts.get_mut(c.kind.name()).unwrap() += 1;
    }
    for (kind, n) in counts {
        assert!(n >= 8, "{kind}: only {n} cases");
    }
}

#[test]
fn each_value_is_found_with_its_exact_span() {
    let mut failures = Vec::new();
    for c in cases() {
        for (label, kinds) in [
            ("alone", KindSet::none().with(c.kind)),
            ("all", KindSet::all()),
        ] {
            let mut out = Vec::new();
            find(c.text.as_bytes(), kinds, &mut out);
            let got: Vec<&str> = out
                .iter()
                .filter(|f| f.kind == c.kind)
                .map(|f| &c.text[f.start..f.end])
                .collect();
            if got != [c.span] {
                failures.push(format!(
                    "line {} ({}, {label}): expected {:?}, got {got:?} in {:?}",
                    c.line,
                    c.kind.name(),
                    c.span,
                    c.text
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
