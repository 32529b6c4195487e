#![no_main]
//! The audit log's decoders: `split_run` and `decode_record` on arbitrary bytes (every record
//! returned lies inside the input and re-encodes to the bytes it came from), `Bundle::from_json`
//! on arbitrary text, and verification of arbitrary runs and bundles. Nothing may panic.

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tollgate_audit::{Bundle, Run, decode_record, encode_record, split_run, verify};

fuzz_target!(|data: &[u8]| {
    if let Ok((record, len)) = decode_record(data) {
        assert!(len <= data.len());
        let mut again = Vec::new();
        encode_record(&record, &mut again).expect("a decoded record re-encodes");
        assert_eq!(&again[..], &data[..len]);
    }
    if let Ok(stored) = split_run(data) {
        for s in &stored {
            assert!(s.bytes.len() <= data.len());
        }
    }
    // The input as two runs of two sessions, with and without checkpoints or keys.
    let half = data.len() / 2;
    let runs = [
        Run {
            session: "a",
            first_gseq: 0,
            last_gseq: u64::from(data.first().copied().unwrap_or(0)),
            body: &data[..half],
        },
        Run {
            session: "b",
            first_gseq: 1,
            last_gseq: u64::MAX,
            body: &data[half..],
        },
    ];
    let report = verify(&runs, &[], &[], &HashMap::new());
    assert!(report.records <= data.len() as u64);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(bundle) = Bundle::from_json(text)
    {
        let _ = bundle.verify(None);
        let again = Bundle::from_json(&bundle.to_json()).expect("a bundle round-trips");
        assert_eq!(again, bundle);
    }
});
