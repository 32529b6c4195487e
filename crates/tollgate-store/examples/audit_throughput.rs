//! Audit log throughput: events/s the writer sustains (best-effort, and strict, where every
//! event is durable in the journal before the next, with 8 concurrent sessions), and
//! verification speed.
//!
//! `cargo run --release -p tollgate-store --example audit_throughput [EVENTS] [sealed]`
//!
//! With `sealed`, every payload is sealed under a data key wrapped by a random master key
//! (encryption at rest), to compare with the plain log.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use tollgate_core::{
    Command, EventKind, Outcome, ProtocolStep, Recorder, SessionLog, new_session_id,
};
use tollgate_store::Store;

fn command(i: u64) -> EventKind {
    EventKind::Command {
        command: Command {
            step: ProtocolStep::SimpleQuery,
            text: format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i}").into(),
            params: Vec::new(),
            statement: None,
        },
        outcome: Outcome {
            tags: vec!["SELECT 1".into()],
            rows: 1,
            duration_us: 80,
            ..Outcome::default()
        },
    }
}

fn signer() -> Result<tollgate_audit::Signer, Box<dyn std::error::Error>> {
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|e| format!("{e:?}"))?;
    Ok(tollgate_audit::Signer::from_pkcs8(pkcs8.as_ref())?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let sealing = match std::env::args().nth(2).as_deref() {
        Some("sealed") => Some(tollgate_store::Sealing::new(
            tollgate_audit::seal::MasterKey::generate()?,
            [],
        )),
        _ => None,
    };
    println!(
        "payloads: {}",
        if sealing.is_some() { "sealed" } else { "plain" }
    );
    let dir = tempfile::tempdir()?;
    let store = Store::open_sealed(&dir.path().join("tollgate.db"), sealing)?;
    let writer = Arc::new(store.event_writer(signer()?)?);

    // Best-effort: 8 sessions append as fast as they can.
    let t0 = Instant::now();
    let per = events / 8;
    std::thread::scope(|s| {
        for _ in 0..8 {
            let w: Arc<dyn Recorder> = writer.clone();
            s.spawn(move || {
                let log = SessionLog::new(new_session_id(rand_u64()), w);
                for i in 0..per {
                    log.append(command(i));
                }
            });
        }
    });
    writer.flush()?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "best-effort: {:.0} events/s ({} events in {secs:.2}s)",
        (per * 8) as f64 / secs,
        per * 8
    );

    // Strict: 8 sessions, each event durable (in the journal) before the next.
    let strict_events = (events / 10).max(8);
    let per = strict_events / 8;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..8 {
            let w: Arc<dyn Recorder> = writer.clone();
            s.spawn(move || {
                let log = SessionLog::new(new_session_id(rand_u64()), w);
                for i in 0..per {
                    let (tx, rx) = mpsc::sync_channel(1);
                    log.append_durable(
                        command(i),
                        Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    );
                    if !matches!(rx.recv(), Ok(Ok(()))) {
                        eprintln!("a strict event was not stored");
                        return;
                    }
                }
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "strict:      {:.0} events/s ({} events, each durable before the next, 8 writers)",
        (per * 8) as f64 / secs,
        per * 8
    );
    writer.close();

    let t0 = Instant::now();
    let material = tollgate_store::read_audit(&dir.path().join("tollgate.db"))?;
    let read = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let report = material.verify(None);
    let check = t1.elapsed().as_secs_f64();
    println!(
        "verify:      {:.0} events/s ({} records, {} checkpoints; read {read:.2}s, check {check:.2}s; intact: {})",
        report.records as f64 / (read + check),
        report.records,
        report.checkpoints,
        report.intact()
    );
    Ok(())
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_be_bytes(b)
}
