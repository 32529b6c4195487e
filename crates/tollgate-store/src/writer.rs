//! The event writer: events are chained as they are recorded (one global order), written to the
//! journal, and copied into SQLite by a background thread in batches.
//!
//! A durable event costs its caller one `write` to the journal, made under the chain's lock with
//! whatever best-effort records queued before it: it needs no round trip to the writer thread
//! and no SQLite commit. A best-effort event costs encoding and hashing; the writer thread is
//! woken only when it sleeps with nothing to do, and otherwise collects for [`GATHER`] so one
//! transaction carries many events.
//!
//! With master keys, each payload is sealed (`sealing.rs`) in [`Front::chain`] before it is
//! chained, under a data key the writer stored, wrapped, in `audit_data_keys` before its first
//! use; the writer thread stores the next data key before the current one reaches its limit.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rusqlite::{Connection as Db, params};
use tollgate_audit::{ChainState, Hash, Signer};
use tollgate_core::{Event, EventKind, Recorder};

use crate::journal::{self, Journal};
use crate::sealing::{self, Keyring, PayloadSealer, Sealing};
use crate::{StoreError, enum_name};

/// Records between checkpoints, at most.
const CHECKPOINT_EVERY: u64 = 1000;
/// Time between checkpoints while records arrive, at most.
const CHECKPOINT_AFTER: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the writer waits for a database lock held by another process.
const WRITER_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Most events written in one SQLite transaction.
pub(crate) const BATCH: usize = 4096;
/// How long the writer lets events gather after the first one arrives. Waking and committing
/// once per event would cost more CPU than the gateway's whole data path.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);
/// Events that may wait to be written before best-effort command events are dropped and
/// durable ones refused.
pub(crate) const QUEUE_LIMIT: usize = 1_000_000;

/// One chained event on its way into the database.
pub(crate) struct Entry {
    event: Event,
    gseq: u64,
    /// record ‖ hash, as stored in a run.
    bytes: Vec<u8>,
}

/// Where the writer answers a purge: how many records it purged, or why it could not.
type PurgeReply = mpsc::SyncSender<Result<u64, String>>;

/// Work for the writer thread besides events.
enum Request {
    Flush(mpsc::SyncSender<()>),
    Purge {
        connection: String,
        before: i64,
        reply: PurgeReply,
    },
}

/// What recorders and the writer thread share, under one lock.
struct Front {
    chain: ChainState,
    journal: Journal,
    /// Chained, not yet taken by the writer.
    pending: Vec<Entry>,
    /// Taken by the writer, not yet committed.
    in_flight: usize,
    /// Bytes of the records chained and not yet committed (pending and in flight).
    queued_bytes: usize,
    requests: Vec<Request>,
    /// Best-effort events dropped since the writer last recorded the fact.
    dropped: u64,
    /// The writer sleeps until something arrives (and must be woken).
    writer_idle: bool,
    closed: bool,
    /// Reused for each payload.
    scratch: Vec<u8>,
    /// Seals payloads, when the store has master keys.
    sealer: Option<PayloadSealer>,
    /// When the journal last failed (to keep the warning from flooding the log).
    journal_warned: Option<std::time::Instant>,
}

impl Front {
    /// Chains `event` at the end of the log and queues it for the journal and the database.
    /// With master keys, the payload chained is the envelope of the event's JSON, bound to the
    /// record by its header (gseq, time, session, seq): the chain covers the sealed bytes.
    fn chain(&mut self, event: Event) -> Result<(), String> {
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, &event.kind).map_err(|e| e.to_string())?;
        let payload: &[u8] = match &mut self.sealer {
            Some(sealer) => {
                // The gseq `append` gives the record. Should the record be taken back out
                // (`record_durable`), the next record reuses the gseq with a new nonce.
                sealer.seal(
                    self.chain.next_gseq,
                    event.at,
                    &event.session,
                    event.seq,
                    &self.scratch,
                )?;
                &sealer.envelope
            }
            None => &self.scratch,
        };
        let mut bytes = Vec::with_capacity(payload.len() + event.session.len() + 72);
        let gseq = self
            .chain
            .append(event.at, &event.session, event.seq, payload, &mut bytes)
            .map_err(|e| e.to_string())?;
        self.journal.unwritten.extend_from_slice(&bytes);
        self.queued_bytes += bytes.len();
        self.pending.push(Entry { event, gseq, bytes });
        Ok(())
    }

    fn backlog(&self) -> usize {
        self.pending.len() + self.in_flight
    }

    fn write_journal(&mut self) -> std::io::Result<()> {
        let last = self.chain.last_gseq();
        self.journal.write_out(last)
    }
}

struct Shared {
    front: Mutex<Front>,
    wake: Condvar,
    limit: usize,
}

impl Shared {
    fn lock(&self) -> Option<MutexGuard<'_, Front>> {
        self.front.lock().ok()
    }
}

/// The event writer: a [`Recorder`] that chains events as they come and has a background
/// thread write them to the database in batches.
pub struct EventWriter {
    shared: Arc<Shared>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

/// The chain as far as the database holds it, and what signs it.
struct Committed {
    /// gseq and hash of the last committed record.
    head: Option<(u64, Hash)>,
    /// Committed records since the last checkpoint.
    unsigned: u64,
    last_checkpoint: std::time::Instant,
    signer: Signer,
}

impl EventWriter {
    /// Opens the writer on the database at `path`: recovers what the journal holds beyond the
    /// database, records sessions an earlier run left open as abandoned, and starts the thread.
    ///
    /// With `sealing`, data keys that an older master key wraps are re-wrapped under the current
    /// one, and a fresh data key is stored before anything is sealed with it; each data key
    /// seals `key_messages` payloads before the next takes over. Without it, a store that holds
    /// sealed payloads is refused: they could not be read back.
    pub(crate) fn start(
        path: &Path,
        signer: Signer,
        limit: usize,
        sealing: Option<Sealing>,
        key_messages: u64,
    ) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let journal_err = |e: std::io::Error| StoreError::Journal {
            path: journal::dir_of(path),
            detail: e.to_string(),
        };
        let mut db = crate::open(path)?;
        // A strict command never waits on this connection, but shutdown and purges do: when the
        // database is locked by someone else, give up soon and retry.
        db.busy_timeout(WRITER_BUSY_TIMEOUT).map_err(err)?;
        // What a retention purge removes is overwritten, not left in free pages.
        db.execute_batch("PRAGMA secure_delete=ON").map_err(err)?;
        match &sealing {
            Some(sealing) => {
                let moved =
                    sealing::rewrap(&mut db, path, sealing.keys(), sealing.current(), false)
                        .map_err(|e| match e {
                            StoreError::Encryption(detail) => StoreError::Encryption(format!(
                                "the sealed payloads cannot be opened: {detail}"
                            )),
                            e => e,
                        })?;
                if moved > 0 {
                    tracing::info!(
                        data_keys = moved,
                        master_key = %sealing.current().id(),
                        "audit data keys re-wrapped under the current master key"
                    );
                }
            }
            None => {
                let wrapped = sealing::data_keys(&db).map_err(err)?;
                if let Some(first) = wrapped.first() {
                    let mut masters: Vec<&str> =
                        wrapped.iter().map(|w| w.kek_id.as_str()).collect();
                    masters.sort_unstable();
                    masters.dedup();
                    return Err(StoreError::Encryption(format!(
                        "the audit log holds payloads sealed under {} data keys (the first {}), wrapped by master key {}, but no master key is configured: set {} in the config's [encryption] section",
                        wrapped.len(),
                        first.id,
                        masters.join(", "),
                        sealing::MASTER_KEY_SETTING
                    )));
                }
            }
        }
        let mut keyring = Keyring::new(sealing.as_ref());
        db.execute(
            "INSERT OR IGNORE INTO audit_keys (key_id, public_key, created_at) VALUES (?1, ?2, ?3)",
            params![
                signer.key_id(),
                signer.public_key(),
                tollgate_core::now_micros()
            ],
        )
        .map_err(err)?;
        let mut committed = Committed {
            head: crate::last_record(&db).map_err(err)?,
            unsigned: 0,
            last_checkpoint: std::time::Instant::now(),
            signer,
        };

        // Records the journal made durable and the database never got (a killed gateway).
        let dir = journal::dir_of(path);
        if dir.exists() {
            let (recovered, problem) =
                journal::recover(&dir, committed.head).map_err(journal_err)?;
            if !recovered.is_empty() {
                tracing::warn!(
                    records = recovered.len(),
                    "audit records left in the journal by an earlier run are copied into the store"
                );
                let entries = recovered
                    .into_iter()
                    .map(|r| {
                        let json = keyring.payload(
                            &db,
                            &tollgate_audit::Record {
                                gseq: r.gseq,
                                at: r.at,
                                session: &r.session,
                                seq: r.seq,
                                payload: &r.payload,
                            },
                        )?;
                        let kind = serde_json::from_slice::<EventKind>(&json).map_err(|e| {
                            StoreError::Corrupt {
                                what: "journal record",
                                detail: format!("record {}: {e}", r.gseq),
                            }
                        })?;
                        drop(json);
                        Ok(Entry {
                            event: Event {
                                session: r.session,
                                seq: r.seq,
                                at: r.at,
                                kind,
                            },
                            gseq: r.gseq,
                            bytes: r.entry,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                write_batch(&mut db, &entries, &mut committed).map_err(err)?;
            }
            if let Some(problem) = problem {
                tracing::error!(%problem, "the audit journal is broken; its segments are kept as *.broken");
                journal::set_aside(&dir).map_err(journal_err)?;
            }
        }
        let journal = Journal::start(&dir).map_err(journal_err)?;
        // The first data key is in the database before anything sealed with it can be written.
        let sealer = match &sealing {
            Some(s) => Some(PayloadSealer::new(
                sealing::new_data_key(&db, path, s)?,
                key_messages,
            )),
            None => None,
        };
        drop(keyring);

        let shared = Arc::new(Shared {
            front: Mutex::new(Front {
                chain: ChainState::resume(committed.head),
                journal,
                pending: Vec::with_capacity(BATCH),
                in_flight: 0,
                queued_bytes: 0,
                requests: Vec::new(),
                dropped: 0,
                writer_idle: false,
                closed: false,
                scratch: Vec::with_capacity(1024),
                sealer,
                journal_warned: None,
            }),
            wake: Condvar::new(),
            limit,
        });

        let abandoned = crate::abandoned_sessions(&db).map_err(err)?;
        if !abandoned.is_empty() {
            tracing::warn!(
                sessions = abandoned.len(),
                "sessions left open by an earlier run are recorded as abandoned"
            );
            let mut front = shared.lock().ok_or(StoreError::Poisoned)?;
            for event in abandoned {
                front.chain(event).map_err(|detail| StoreError::Corrupt {
                    what: "abandoned session event",
                    detail,
                })?;
            }
            front.write_journal().map_err(journal_err)?;
            let entries = std::mem::take(&mut front.pending);
            drop(front);
            write_batch(&mut db, &entries, &mut committed).map_err(err)?;
        }

        let thread_shared = Arc::clone(&shared);
        let db_path = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("tollgate-recorder".into())
            .spawn(move || write_loop(db, &db_path, &thread_shared, committed, sealing))
            .map_err(|e| StoreError::Corrupt {
                what: "writer thread",
                detail: e.to_string(),
            })?;
        Ok(Self {
            shared,
            handle: Mutex::new(Some(handle)),
        })
    }

    fn request(&self, request: Request) -> Result<(), StoreError> {
        let mut front = self.shared.lock().ok_or(StoreError::Poisoned)?;
        if front.closed {
            return Err(StoreError::WriterStopped);
        }
        front.requests.push(request);
        drop(front);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Retention: removes the payloads of the records of `connection`'s sessions that ended
    /// before `before` (microseconds), leaving purged records and a signed tombstone, and records
    /// the purge. Returns how many records were purged.
    pub fn purge(&self, connection: &str, before: i64) -> Result<u64, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.request(Request::Purge {
            connection: connection.to_string(),
            before,
            reply,
        })?;
        answer
            .recv()
            .map_err(|_| StoreError::WriterStopped)?
            .map_err(|detail| StoreError::Corrupt {
                what: "retention purge",
                detail,
            })
    }

    /// Waits until every event recorded so far is committed to the database.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        self.request(Request::Flush(done_tx))?;
        done_rx.recv().map_err(|_| StoreError::WriterStopped)
    }

    /// Commits what is queued and stops the thread.
    pub fn close(&self) {
        if let Some(mut front) = self.shared.lock() {
            front.closed = true;
        }
        self.shared.wake.notify_one();
        let handle = self.handle.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// Records held in memory beyond which [`Recorder::pressure`] asks producers that can wait to
/// slow down.
const PRESSURE_BYTES: usize = 8 * 1024 * 1024;

impl Recorder for EventWriter {
    fn pressure(&self) -> bool {
        self.shared
            .lock()
            .is_some_and(|f| f.queued_bytes > PRESSURE_BYTES)
    }

    fn record_durable(&self, event: Event, done: tollgate_core::Durable) {
        let Some(mut front) = self.shared.lock() else {
            return done(Err("the audit log is unavailable".into()));
        };
        if front.closed {
            drop(front);
            return done(Err("the audit log writer has stopped".into()));
        }
        if front.backlog() >= self.shared.limit {
            drop(front);
            return done(Err(
                "the audit log cannot keep up: too many events are waiting to be stored".into(),
            ));
        }
        let saved = (
            front.chain.clone(),
            front.journal.unwritten.len(),
            front.pending.len(),
        );
        if let Err(e) = front.chain(event) {
            drop(front);
            return done(Err(format!("the event cannot be recorded: {e}")));
        }
        match front.write_journal() {
            Ok(()) => {
                let wake = front.writer_idle;
                drop(front);
                if wake {
                    self.shared.wake.notify_one();
                }
                done(Ok(()));
            }
            Err(e) => {
                // This event never became durable: take it back out of the log (its command is
                // refused and never runs). What queued before it stays queued.
                front.chain = saved.0;
                front.journal.unwritten.truncate(saved.1);
                let taken: usize = front.pending[saved.2..].iter().map(|e| e.bytes.len()).sum();
                front.queued_bytes -= taken;
                front.pending.truncate(saved.2);
                drop(front);
                done(Err(format!("the audit log cannot be written: {e}")));
            }
        }
    }

    fn record(&self, event: Event) {
        // When the store cannot keep up, best-effort command records give way (session starts,
        // ends and refusals never do); the writer records how many were dropped.
        let droppable = matches!(
            event.kind,
            EventKind::Command { .. } | EventKind::CommandStarted { .. }
        );
        let Some(mut front) = self.shared.lock() else {
            tracing::error!("the audit log is unavailable; an event is lost");
            return;
        };
        if front.closed {
            drop(front);
            tracing::error!("event recorded after the writer stopped; it is lost");
            return;
        }
        if droppable && front.backlog() >= self.shared.limit {
            front.dropped += 1;
            return;
        }
        if let Err(e) = front.chain(event) {
            drop(front);
            tracing::error!(error = %e, "an event could not be recorded");
            return;
        }
        let wake = front.writer_idle;
        drop(front);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

/// What the writer took from the front in one round.
struct Round {
    entries: Vec<Entry>,
    requests: Vec<Request>,
    closing: bool,
    /// The sealer's data key nears its share: store the next one.
    wants_key: bool,
}

/// Waits for work, lets events gather, and takes them (after writing them to the journal).
fn next_round(shared: &Shared, own: &str, own_seq: &mut u64) -> Option<Round> {
    let mut front = shared.lock()?;
    while !front.closed && front.pending.is_empty() && front.requests.is_empty() {
        front.writer_idle = true;
        front = shared.wake.wait(front).ok()?;
    }
    front.writer_idle = false;
    if !front.closed && front.requests.is_empty() {
        // Recorders do not wake a gathering writer; a request or shutdown does.
        let deadline = std::time::Instant::now() + GATHER;
        while !front.closed && front.requests.is_empty() && front.pending.len() < BATCH {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            front = shared.wake.wait_timeout(front, left).ok()?.0;
        }
    }
    if front.dropped > 0 {
        let dropped = std::mem::take(&mut front.dropped);
        let note = Event {
            session: own.to_string(),
            seq: *own_seq,
            at: tollgate_core::now_micros(),
            kind: EventKind::Admin {
                action: "events_dropped".into(),
                by: None,
                target: None,
                detail: format!(
                    "{dropped} best-effort command events were dropped: the store could not keep up"
                ),
            },
        };
        *own_seq += 1;
        if front.chain(note).is_err() {
            // Cannot happen for an event this small; counted again next round.
            front.dropped = dropped;
        }
    }
    // The journal holds every record until the database does.
    let mut journal_failed = None;
    if let Err(e) = front.write_journal() {
        let warned = front
            .journal_warned
            .is_some_and(|t| t.elapsed().as_secs() < 10);
        if !warned {
            front.journal_warned = Some(std::time::Instant::now());
            journal_failed = Some(e);
        }
    }
    let take = front.pending.len().min(BATCH);
    let entries: Vec<Entry> = if take == front.pending.len() {
        std::mem::replace(&mut front.pending, Vec::with_capacity(BATCH))
    } else {
        front.pending.drain(..take).collect()
    };
    front.in_flight = entries.len();
    let requests = if entries.len() == take && front.pending.is_empty() {
        std::mem::take(&mut front.requests)
    } else {
        // A flush waits for everything before it: answer it after the rest is written.
        Vec::new()
    };
    let closing = front.closed;
    let wants_key = front.sealer.as_ref().is_some_and(PayloadSealer::wants_key);
    drop(front);
    if let Some(e) = journal_failed {
        tracing::warn!(error = %e, "the audit journal cannot be written; records wait in memory");
    }
    Some(Round {
        entries,
        requests,
        closing,
        wants_key,
    })
}

fn write_loop(
    mut db: Db,
    path: &Path,
    shared: &Shared,
    mut committed: Committed,
    sealing: Option<Sealing>,
) {
    // The writer's own stream, for what it has to say about itself (dropped events, purges).
    let own = format!("recorder-{}", tollgate_core::now_micros());
    let mut own_seq = 0u64;
    // Whether a batch was left to the journal at shutdown (then the journal must stay).
    let mut left_in_journal = false;
    while let Some(round) = next_round(shared, &own, &mut own_seq) {
        if !round.entries.is_empty() {
            let ok = commit(&mut db, path, &round.entries, &mut committed, round.closing);
            left_in_journal |= !ok;
            settle(
                shared,
                &committed,
                !left_in_journal,
                bytes_of(&round.entries),
            );
        }
        if round.wants_key
            && let Some(sealing) = &sealing
        {
            // Stored (wrapped) before the sealer may use it; on failure, tried again next round.
            match sealing::new_data_key(&db, path, sealing) {
                Ok(next) => {
                    if let Some(mut front) = shared.lock()
                        && let Some(sealer) = front.sealer.as_mut()
                    {
                        sealer.give_key(next);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the next audit data key could not be stored; retrying")
                }
            }
        }
        for request in round.requests {
            match request {
                Request::Flush(done) => {
                    let _ = done.send(());
                }
                Request::Purge {
                    connection,
                    before,
                    reply,
                } => {
                    let mut purge = Purge {
                        db: &mut db,
                        path,
                        shared,
                        committed: &mut committed,
                        own: &own,
                        own_seq: &mut own_seq,
                    };
                    let _ = reply.send(purge.run(&connection, before));
                }
            }
        }
        let done = round.closing
            && shared
                .lock()
                .is_none_or(|f| f.pending.is_empty() && f.requests.is_empty());
        if done {
            break;
        }
    }
    // The writer is closing: sign what is not signed yet.
    if committed.unsigned > 0
        && let Err(e) = db
            .transaction()
            .and_then(|tx| checkpoint(&tx, &mut committed).and_then(|()| tx.commit()))
    {
        tracing::error!(path = %path.display(), error = %e, "final audit checkpoint not written");
    }
    if !left_in_journal && let Some(mut front) = shared.lock() {
        front.journal.remove();
    }
}

fn bytes_of(entries: &[Entry]) -> usize {
    entries.iter().map(|e| e.bytes.len()).sum()
}

/// After a commit: nothing is in flight any more, and the journal lets go of what the database
/// now holds (when `release`).
fn settle(shared: &Shared, committed: &Committed, release: bool, done_bytes: usize) {
    if let Some(mut front) = shared.lock() {
        front.in_flight = 0;
        front.queued_bytes = front.queued_bytes.saturating_sub(done_bytes);
        if release && let Some((gseq, _)) = committed.head {
            let caught_up = front.pending.is_empty();
            front.journal.release(gseq, caught_up);
        }
    }
}

/// Commits `entries`, retrying while the database refuses (e.g. locked by another process).
/// The records are in the journal meanwhile; at shutdown it gives up after a few attempts and
/// leaves them there for the next start. Returns whether they were committed.
fn commit(
    db: &mut Db,
    path: &Path,
    entries: &[Entry],
    committed: &mut Committed,
    closing: bool,
) -> bool {
    let mut attempt = 0u32;
    loop {
        match write_batch(db, entries, committed) {
            Ok(()) => return true,
            Err(e) => {
                attempt += 1;
                if closing && attempt >= 5 {
                    tracing::error!(path = %path.display(), error = %e, events = entries.len(),
                        "event batch not written at shutdown; it stays in the journal for the next start");
                    return false;
                }
                if attempt == 1 || attempt.is_multiple_of(50) {
                    tracing::warn!(path = %path.display(), error = %e, attempt, "event batch not written; retrying");
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// A retention purge as the writer runs it.
struct Purge<'a> {
    db: &'a mut Db,
    path: &'a Path,
    shared: &'a Shared,
    committed: &'a mut Committed,
    own: &'a str,
    own_seq: &'a mut u64,
}

impl Purge<'_> {
    /// Purges, then records the purge in the chain and commits that record (with whatever was
    /// chained before it) before answering, so a caller that reads next finds it.
    fn run(&mut self, connection: &str, before: i64) -> Result<u64, String> {
        let count = crate::purge(self.db, &self.committed.signer, connection, before)
            .map_err(|e| e.to_string())?;
        if count == 0 {
            return Ok(0);
        }
        let note = Event {
            session: self.own.to_string(),
            seq: *self.own_seq,
            at: tollgate_core::now_micros(),
            kind: EventKind::Admin {
                action: "audit_purged".into(),
                by: None,
                target: Some(connection.to_string()),
                detail: format!(
                    "{count} records of sessions of {connection} that ended before {} lost their payloads; a signed tombstone vouches for them",
                    tollgate_core::format_rfc3339(before)
                ),
            },
        };
        *self.own_seq += 1;
        let entries = {
            let mut front = self.shared.lock().ok_or("the audit log is unavailable")?;
            front.chain(note)?;
            // Failing here only means the database alone holds it, in a moment.
            let _ = front.write_journal();
            let entries = std::mem::take(&mut front.pending);
            front.in_flight = entries.len();
            entries
        };
        let ok = commit(self.db, self.path, &entries, self.committed, false);
        settle(self.shared, self.committed, ok, bytes_of(&entries));
        Ok(count)
    }
}

/// Signs the committed chain's head and stores the checkpoint.
fn checkpoint(tx: &rusqlite::Transaction<'_>, committed: &mut Committed) -> rusqlite::Result<()> {
    let Some((gseq, head)) = committed.head else {
        return Ok(());
    };
    let cp = committed
        .signer
        .checkpoint(gseq, head, tollgate_core::now_micros());
    tx.execute(
        "INSERT OR REPLACE INTO audit_checkpoints (gseq, at, head, key_id, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![cp.gseq as i64, cp.at, &cp.head[..], cp.key_id, cp.signature],
    )?;
    committed.unsigned = 0;
    committed.last_checkpoint = std::time::Instant::now();
    Ok(())
}

/// One session's records within a batch: one row of `audit_runs`.
struct SessionRun<'a> {
    first: u64,
    last: u64,
    body: Vec<u8>,
    events: Vec<&'a Event>,
}

/// Stores chained entries (one run per session and batch), keeps the sessions table current and
/// signs a checkpoint when one is due, in one transaction.
fn write_batch(db: &mut Db, batch: &[Entry], committed: &mut Committed) -> rusqlite::Result<()> {
    let Some(last) = batch.last() else {
        return Ok(());
    };
    // Group the batch by session, keeping each session's order: one row per session and batch.
    let mut order: Vec<&str> = Vec::new();
    let mut runs: std::collections::HashMap<&str, SessionRun<'_>> =
        std::collections::HashMap::new();
    let mut session_ended = false;
    for e in batch {
        let run = runs.entry(e.event.session.as_str()).or_insert_with(|| {
            order.push(e.event.session.as_str());
            SessionRun {
                first: e.gseq,
                last: e.gseq,
                body: Vec::with_capacity(4096),
                events: Vec::new(),
            }
        });
        run.last = e.gseq;
        run.body.extend_from_slice(&e.bytes);
        run.events.push(&e.event);
        session_ended |= matches!(
            e.event.kind,
            EventKind::SessionEnd { .. } | EventKind::SessionAbandoned { .. }
        );
    }
    let tx = db.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit_runs (first_gseq, last_gseq, session, body) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut start = tx.prepare_cached(
            "INSERT OR IGNORE INTO sessions (id, subject, key_id, connection, protocol, channel, client_addr, tls, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut end =
            tx.prepare_cached("UPDATE sessions SET ended_at = ?2, end_reason = ?3 WHERE id = ?1")?;
        let mut counts = tx.prepare_cached(
            "UPDATE sessions SET commands = commands + ?2, refused = refused + ?3 WHERE id = ?1",
        )?;
        for session in order {
            let Some(SessionRun {
                first,
                last,
                body,
                events,
            }) = runs.get(session)
            else {
                continue;
            };
            let (mut commands, mut refused) = (0i64, 0i64);
            for e in events {
                match &e.kind {
                    EventKind::SessionStart(info) => {
                        start.execute(params![
                            e.session,
                            info.identity.as_ref().map(|i| &i.subject),
                            info.identity.as_ref().and_then(|i| i.key_id.as_ref()),
                            info.connection,
                            enum_name(&info.protocol),
                            enum_name(&info.channel),
                            info.client_addr,
                            info.tls,
                            e.at
                        ])?;
                    }
                    EventKind::Command { .. }
                    | EventKind::FileTransfer { .. }
                    | EventKind::Forward { .. } => commands += 1,
                    EventKind::CommandStarted { .. }
                    | EventKind::Admin { .. }
                    | EventKind::Terminal { .. } => {}
                    EventKind::Refusal(_) => refused += 1,
                    EventKind::SessionEnd { reason } => {
                        end.execute(params![e.session, e.at, reason])?;
                    }
                    EventKind::SessionAbandoned { reason } => {
                        end.execute(params![e.session, e.at, format!("abandoned: {reason}")])?;
                    }
                }
            }
            insert.execute(params![*first as i64, *last as i64, session, body])?;
            if commands > 0 || refused > 0 {
                counts.execute(params![session, commands, refused])?;
            }
        }
    }
    let saved = (committed.head, committed.unsigned);
    let mut hash = [0u8; 32];
    if let Some(tail) = last.bytes.len().checked_sub(32) {
        hash.copy_from_slice(&last.bytes[tail..]);
    }
    committed.head = Some((last.gseq, hash));
    committed.unsigned += batch.len() as u64;
    let result = (|| {
        if committed.unsigned >= CHECKPOINT_EVERY
            || session_ended
            || committed.last_checkpoint.elapsed() >= CHECKPOINT_AFTER
        {
            checkpoint(&tx, committed)?;
        }
        tx.commit()
    })();
    if result.is_err() {
        (committed.head, committed.unsigned) = saved;
    }
    result
}

/// The journal directory of the database at `path` (for tests and tools).
pub fn journal_dir(path: &Path) -> PathBuf {
    journal::dir_of(path)
}
