#!/usr/bin/env python3
"""Self-test of scripts/verify_audit.py; standard library only, no Rust needed.

    python3 -m unittest scripts/test_verify_audit.py -v     (or: python3 scripts/test_verify_audit.py)

It writes small audit databases and exported bundles exactly as docs/audit-format.md describes
them (its own encoder and its own Ed25519 signer, below), tampers with them in the ways an
attacker with write access to the database or the bundle could, and runs the verifier's command
line on each.
"""

import base64
import functools
import hashlib
import json
import os
import pathlib
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE / "verify_audit.py"
sys.path.insert(0, str(HERE))
import verify_audit  # noqa: E402  (the module under test, for its Ed25519 functions)

# ---------------------------------------------------------------------------------------------
# Ed25519 signing, RFC 8032 5.1.5 / 5.1.6, for the test only. Deliberately a different
# representation from the verifier's (affine coordinates, inversions by Fermat), so the two
# implementations check each other instead of sharing a mistake.
# ---------------------------------------------------------------------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
# The base point, as RFC 8032 section 5.1 lists it.
B = (15112221349535400772501151409588531511454012693041857206046113283949847762202,
     46316835694926478169428394003475163141307993866256225615783033603165251855960)


def _inv(x):
    return pow(x, P - 2, P)


def _affine_add(p1, p2):
    # -x^2 + y^2 = 1 + d x^2 y^2: x3 = (x1 y2 + x2 y1) / (1 + d x1 x2 y1 y2),
    #                             y3 = (y1 y2 + x1 x2) / (1 - d x1 x2 y1 y2)
    (x1, y1), (x2, y2) = p1, p2
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * _inv(1 + t) % P, (y1 * y2 + x1 * x2) * _inv(1 - t) % P)


def _affine_mult(k, point):
    result = (0, 1)
    while k:
        if k & 1:
            result = _affine_add(result, point)
        point = _affine_add(point, point)
        k >>= 1
    return result


def _encode(point):
    x, y = point
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _expand(seed):
    h = hashlib.sha512(seed).digest()
    s = int.from_bytes(h[:32], "little")
    s &= (1 << 254) - 8  # clear the 3 low bits and bit 255 ...
    s |= 1 << 254        # ... and set bit 254 (5.1.5 step 2)
    return s, h[32:]


@functools.lru_cache(maxsize=None)
def public_key(seed):
    s, _ = _expand(seed)
    return _encode(_affine_mult(s, B))


_SIGNATURES = {}


def sign(seed, message):
    """RFC 8032 5.1.6 (deterministic, so signatures are cached across tests)."""
    if (seed, message) not in _SIGNATURES:
        s, prefix = _expand(seed)
        a = public_key(seed)
        r = int.from_bytes(hashlib.sha512(prefix + message).digest(), "little") % L
        r_enc = _encode(_affine_mult(r, B))
        k = int.from_bytes(hashlib.sha512(r_enc + a + message).digest(), "little") % L
        _SIGNATURES[seed, message] = r_enc + ((r + k * s) % L).to_bytes(32, "little")
    return _SIGNATURES[seed, message]


# RFC 8032 section 7.1, TEST 1 and TEST 2.
RFC8032_VECTORS = [
    {
        "secret": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "public": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "message": "",
        "signature": "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
                     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    },
    {
        "secret": "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "public": "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "message": "72",
        "signature": "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
                     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    },
]

SEED = bytes.fromhex("7f1e5d3c2b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0")
OTHER_SEED = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")


HASH = 32  # bytes of a record's stored hash


def key_id(pk):
    return hashlib.sha256(pk).digest()[:8].hex()


# ---------------------------------------------------------------------------------------------
# The log, written per docs/audit-format.md
# ---------------------------------------------------------------------------------------------

class Rec:
    def __init__(self, gseq, at, session, seq, payload):
        self.gseq, self.at, self.session, self.seq, self.payload = gseq, at, session, seq, payload
        self.hash = None  # the stored hash
        self.tombstone = None  # when set, a purged record naming this tombstone id
        self.prev = None  # a purged record's prev: the hash of the record before it

    def raw(self):
        s = self.session.encode("utf-8")
        head = struct.pack(">Qq", self.gseq, self.at) + struct.pack(">H", len(s)) + s \
            + struct.pack(">Q", self.seq)
        if self.tombstone is not None:  # docs/audit-format.md, "Retention": no payload
            return b"TGP1" + head + struct.pack(">Q", self.tombstone) + self.prev
        return b"TGE1" + head + struct.pack(">I", len(self.payload)) + self.payload

    def entry(self):
        """record ‖ stored hash, as in a run (and, purged, in its tombstone's digest)."""
        return self.raw() + self.hash


class Run:
    def __init__(self, session, recs):
        self.session, self.recs = session, recs
        self.first, self.last = recs[0].gseq, recs[-1].gseq
        self.body = None  # when set, written instead of the records (raw tampering)

    def fit(self):
        self.first, self.last = min(r.gseq for r in self.recs), max(r.gseq for r in self.recs)


def checkpoint_message(gseq, head, at, kid):
    k = kid.encode("utf-8")
    return b"TGC1" + struct.pack(">Q", gseq) + head + struct.pack(">q", at) \
        + struct.pack(">H", len(k)) + k


def tombstone_message(tid, first, last, count, digest, at, kid):
    k = kid.encode("utf-8")
    return b"TGT1" + struct.pack(">QQQQ", tid, first, last, count) + digest \
        + struct.pack(">q", at) + struct.pack(">H", len(k)) + k


def entry_gseq(entry):
    """The gseq of an entry (purged record ‖ hash): the u64 after the magic."""
    return struct.unpack(">Q", entry[4:12])[0]


def covers_digest(covers):
    """SHA-256 over the entries (purged record ‖ hash, as stored), in gseq order."""
    return hashlib.sha256(b"".join(sorted(covers, key=entry_gseq))).digest()


# gseq -> (session, event type): 30 events of 3 sessions, interleaved.
PLAN = ["a:session_start", "b:session_start", "a:command", "a:command", "c:session_start",
        "b:command", "a:command", "c:command", "b:refusal", "a:command",            # 0..9
        "c:command", "b:command", "c:command", "a:command", "b:command",
        "b:command", "c:refusal", "a:command", "c:command", "b:command",            # 10..19
        "a:command", "c:command", "b:session_end", "a:command", "c:command",
        "a:command", "c:session_end", "a:command", "a:command", "a:session_end"]    # 20..29
BATCHES = [(0, 5), (6, 9), (10, 16), (17, 19), (20, 24), (25, 29)]  # writer flushes
CHECKPOINTS = [9, 19, 27]
T0 = 1_700_000_000_000_000


class Log:
    """A log as the gateway would write it; tests then tamper with it."""

    def __init__(self, n=30, checkpoints=CHECKPOINTS):
        self.recs, seqs = [], {}
        for gseq, item in enumerate(PLAN[:n]):
            session, kind = item.split(":")
            session = f"sess-{session}"
            seq = seqs.get(session, 0)
            seqs[session] = seq + 1
            event = {"type": kind, "step": seq}
            if kind == "command":
                event.update(text=f"SELECT {gseq}", status="ok", rows=gseq % 4)
            self.recs.append(Rec(gseq, T0 + 1000 * gseq, session, seq,
                                 json.dumps(event, separators=(",", ":")).encode()))
        self.rechain()
        self.runs = []
        for first, last in BATCHES:
            batch = [r for r in self.recs if first <= r.gseq <= last]
            for session in sorted({r.session for r in batch}):
                self.runs.append(Run(session, [r for r in batch if r.session == session]))
        self.seeds = {}  # key_id -> seed of the keys in audit_keys
        self.add_key(SEED)
        self.cps = [self.checkpoint(g) for g in checkpoints]
        self.tombstones = []  # dicts as in audit_tombstones, each with its "covers" (entries)
        self.tombstones_table = None  # write audit_tombstones? None: when there are tombstones

    def mark_purged(self, gseq, tid):
        """Turns record gseq into a purged record naming tombstone `tid`, its prev the stored
        hash of the record before it (no tombstone is written: see purge)."""
        r = self.rec(gseq)
        r.tombstone = tid
        r.prev = self.rec(gseq - 1).hash if gseq > 0 else bytes(32)
        return r

    def purge(self, tid, gseqs, seed=SEED):
        """Purges records gseqs under a new tombstone `tid`, as the gateway's retention does."""
        for g in gseqs:
            self.mark_purged(g, tid)
        t = {"id": tid, "at": T0 + 10**9 + tid}
        self.tombstones.append(t)
        self.reseal(tid, seed)
        return t

    def reseal(self, tid, seed=SEED):
        """Sets tombstone tid's covers, range, count and digest to the purged records now
        naming it; signs it again with `seed` (None: keeps its old signature)."""
        t = self.tombstone(tid)
        recs = sorted((r for r in self.recs if r.tombstone == tid), key=lambda r: r.gseq)
        t["covers"] = [r.entry() for r in recs]
        t["first_gseq"], t["last_gseq"] = recs[0].gseq, recs[-1].gseq
        t["count"], t["digest"] = len(recs), covers_digest(t["covers"])
        if seed is not None:
            self.sign_tombstone(t, seed)
        return t

    @staticmethod
    def sign_tombstone(t, seed=SEED):
        t["key_id"] = key_id(public_key(seed))
        t["signature"] = sign(seed, tombstone_message(t["id"], t["first_gseq"], t["last_gseq"],
                                                      t["count"], t["digest"], t["at"],
                                                      t["key_id"]))

    def tombstone(self, tid):
        return next(t for t in self.tombstones if t["id"] == tid)

    def add_key(self, seed):
        pk = public_key(seed)
        self.seeds[key_id(pk)] = seed
        return key_id(pk)

    def checkpoint(self, gseq, seed=SEED, at=None):
        kid = key_id(public_key(seed))
        at = T0 + 1000 * gseq + 500 if at is None else at
        head = self.rec(gseq).hash
        return {"gseq": gseq, "at": at, "head": head, "key_id": kid,
                "signature": sign(seed, checkpoint_message(gseq, head, at, kid))}

    def rec(self, gseq):
        return next(r for r in self.recs if r.gseq == gseq)

    def run_of(self, rec):
        return next(run for run in self.runs if any(r is rec for r in run.recs))

    def rechain(self, start=0):
        """Recompute the stored hashes from gseq `start` on, as a forger would (a purged
        record's hash cannot be recomputed: it is kept)."""
        previous = bytes(32)
        for r in sorted(self.recs, key=lambda r: r.gseq):
            if r.gseq >= start and r.tombstone is None:
                r.hash = hashlib.sha256(previous + r.raw()).digest()
            previous = r.hash

    def delete(self, rec):
        self.recs.remove(rec)
        for run in self.runs:
            run.recs = [r for r in run.recs if r is not rec]
        self.runs = [run for run in self.runs if run.recs]  # an emptied run's row is deleted

    def bundle(self, first, last, checkpoints=None):
        """Records first..last as a bundle document (docs/audit-format.md, "Bundle"), a dict.

        checkpoints: the gseqs of the log's checkpoints to include; by default those inside
        first..last, as `tollgate audit export` writes them. The tombstones its purged records
        name travel with it, each with its covers (none: no "tombstones" key, as before
        retention).
        """
        recs = sorted((r for r in self.recs if first <= r.gseq <= last), key=lambda r: r.gseq)
        prev = self.rec(first - 1).hash if first > 0 else bytes(32)
        cps = [cp for cp in self.cps if (first <= cp["gseq"] <= last if checkpoints is None
                                         else cp["gseq"] in checkpoints)]
        named = {r.tombstone for r in recs if r.tombstone is not None}
        tombstones = {"tombstones": [
            {"id": t["id"], "first_gseq": t["first_gseq"], "last_gseq": t["last_gseq"],
             "count": t["count"], "digest": t["digest"].hex(), "at": t["at"],
             "key_id": t["key_id"], "signature": t["signature"].hex(),
             "covers": [base64.b64encode(c).decode("ascii") for c in t["covers"]]}
            for t in self.tombstones if t["id"] in named]} if named else {}
        return {
            "format": "tollgate-audit-bundle",
            "version": 1,
            "first_gseq": first,
            "prev_hash": prev.hex(),
            "records": [base64.b64encode(r.raw() + r.hash).decode("ascii") for r in recs],
            "checkpoints": [{"gseq": cp["gseq"], "at": cp["at"], "head": cp["head"].hex(),
                             "key_id": cp["key_id"], "signature": cp["signature"].hex()}
                            for cp in cps],
            "keys": {kid: public_key(seed).hex() for kid, seed in self.seeds.items()},
            **tombstones,
        }

    def write(self, path, keys_table=None):
        db = sqlite3.connect(path)
        db.executescript("""
            CREATE TABLE audit_runs(session TEXT NOT NULL, first_gseq INTEGER NOT NULL,
                                    last_gseq INTEGER NOT NULL, body BLOB NOT NULL);
            CREATE TABLE audit_checkpoints(gseq INTEGER NOT NULL, at INTEGER NOT NULL,
                                           head BLOB NOT NULL, key_id TEXT NOT NULL,
                                           signature BLOB NOT NULL);
            CREATE TABLE audit_keys(key_id TEXT PRIMARY KEY, public_key BLOB NOT NULL,
                                    created_at INTEGER NOT NULL);
        """)
        for run in self.runs:
            body = run.body if run.body is not None else b"".join(r.raw() + r.hash
                                                                  for r in run.recs)
            db.execute("INSERT INTO audit_runs VALUES (?, ?, ?, ?)",
                       (run.session, run.first, run.last, body))
        for cp in self.cps:
            db.execute("INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?, ?)",
                       (cp["gseq"], cp["at"], cp["head"], cp["key_id"], cp["signature"]))
        rows = keys_table if keys_table is not None else [
            (kid, public_key(seed)) for kid, seed in self.seeds.items()]
        for kid, pk in rows:
            db.execute("INSERT INTO audit_keys VALUES (?, ?, ?)", (kid, pk, T0))
        if self.tombstones_table or (self.tombstones_table is None and self.tombstones):
            db.execute("CREATE TABLE audit_tombstones(id INTEGER NOT NULL, first_gseq INTEGER "
                       "NOT NULL, last_gseq INTEGER NOT NULL, count INTEGER NOT NULL, digest "
                       "BLOB NOT NULL, at INTEGER NOT NULL, key_id TEXT NOT NULL, signature "
                       "BLOB NOT NULL)")
            for t in self.tombstones:
                db.execute("INSERT INTO audit_tombstones VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (t["id"], t["first_gseq"], t["last_gseq"], t["count"], t["digest"],
                            t["at"], t["key_id"], t["signature"]))
        db.commit()
        db.close()


def purged_log():
    """The log with its ended sessions b and c purged: b (gseq 1, 5, ..., 22) under tombstone 1
    (gseq 1..22), c (gseq 4, 7, ..., 26) under tombstone 2 (gseq 4..26), ranges that overlap;
    checkpoints at 9 and 19 inside both ranges and at 22, a purged record. 17 purged records."""
    log = Log(checkpoints=[9, 19, 22, 27])
    for tid, session in ((1, "sess-b"), (2, "sess-c")):
        log.purge(tid, [r.gseq for r in log.recs if r.session == session])
    return log


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

def run_cli(*args):
    p = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


class Ed25519Test(unittest.TestCase):
    def test_base_point_is_rfc8032s(self):
        x, y, z, _ = verify_audit.BASE
        self.assertEqual((x * _inv(z) % P, y * _inv(z) % P), B)

    def test_rfc8032_vectors(self):
        for number, v in enumerate(RFC8032_VECTORS, 1):
            with self.subTest(test=number):
                seed, pk = bytes.fromhex(v["secret"]), bytes.fromhex(v["public"])
                msg, sig = bytes.fromhex(v["message"]), bytes.fromhex(v["signature"])
                self.assertEqual(public_key(seed), pk)  # the test's signer is right ...
                self.assertEqual(sign(seed, msg), sig)
                self.assertTrue(verify_audit.ed25519_verify(pk, msg, sig))  # ... and so is this
                self.assertFalse(verify_audit.ed25519_verify(pk, msg + b"\0", sig))
                for i in (0, 31, 32, 63):
                    bad = bytearray(sig)
                    bad[i] ^= 0x01
                    self.assertFalse(verify_audit.ed25519_verify(pk, msg, bytes(bad)))
                other = bytes.fromhex(RFC8032_VECTORS[number % 2]["public"])
                self.assertFalse(verify_audit.ed25519_verify(other, msg, sig))

    def test_own_signer(self):
        pk = public_key(SEED)
        for msg in [b"", b"x", b"TGC1" + bytes(100), bytes(range(256)) * 3]:
            sig = sign(SEED, msg)
            self.assertTrue(verify_audit.ed25519_verify(pk, msg, sig))
            self.assertFalse(verify_audit.ed25519_verify(public_key(OTHER_SEED), msg, sig))
            self.assertFalse(verify_audit.ed25519_verify(pk, msg + b"!", sig))

    def test_rejects_s_not_below_l(self):
        pk, msg = public_key(SEED), b"malleable"
        sig = sign(SEED, msg)
        s = int.from_bytes(sig[32:], "little")
        # [S + L]B = [S]B: without the S < L check this second signature would verify.
        self.assertFalse(verify_audit.ed25519_verify(pk, msg, sig[:32] + (s + L).to_bytes(32,
                                                                                      "little")))

    def test_rejects_non_canonical_encodings(self):
        identity = (1).to_bytes(32, "little")                   # (0, 1)
        identity_y_plus_p = (P + 1).to_bytes(32, "little")      # y >= p
        identity_negative_zero = ((1 << 255) | 1).to_bytes(32, "little")  # x = 0, sign bit 1
        order4 = (0).to_bytes(32, "little")                     # y = 0: x^2 = -1
        self.assertIsNotNone(verify_audit.decode_point(identity))
        self.assertIsNotNone(verify_audit.decode_point(order4))
        for enc in (identity_y_plus_p, identity_negative_zero, P.to_bytes(32, "little"),
                    (2**255 - 1).to_bytes(32, "little")):
            self.assertIsNone(verify_audit.decode_point(enc))
        self.assertIsNone(verify_audit.decode_point(b"\x02" + bytes(31)))  # y = 2: not on curve
        # With A = R = the identity and S = 0, [S]B = R + [k]A holds for any message: canonical
        # encodings verify (the equation is satisfied), non-canonical ones of the same points
        # must not.
        zero_s = bytes(32)
        self.assertTrue(verify_audit.ed25519_verify(identity, b"m", identity + zero_s))
        for a, r in [(identity_y_plus_p, identity), (identity, identity_y_plus_p),
                     (identity_negative_zero, identity), (identity, identity_negative_zero)]:
            self.assertFalse(verify_audit.ed25519_verify(a, b"m", r + zero_s))
        self.assertFalse(verify_audit.ed25519_verify(identity, b"m", identity + zero_s[:31]))

    def test_verification_time(self):
        pk, msg = public_key(SEED), b"TGC1" + bytes(60)
        sig = sign(SEED, msg)
        times = []
        for _ in range(10):
            t = time.perf_counter()
            self.assertTrue(verify_audit.ed25519_verify(pk, msg, sig))
            times.append(time.perf_counter() - t)
        median = sorted(times)[len(times) // 2]
        self.assertLess(median, 0.050, f"one verification takes {median * 1000:.1f} ms")


class VerifierTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = pathlib.Path(self.tmp.name)
        self.db = self.dir / "tollgate.db"

    def tearDown(self):
        self.tmp.cleanup()

    def check(self, log, *extra, keys_table=None):
        """Writes the log, runs the verifier with --json; (exit status, result, stderr)."""
        if self.db.exists():
            self.db.unlink()
        log.write(self.db, keys_table)
        status, out, err = run_cli("--db", self.db, "--json", *extra)
        self.assertIn(status, (0, 1), err)
        result = json.loads(out)
        self.assertEqual(result["ok"], status == 0)
        return status, result, err

    def assertBad(self, log, gseq, reason, *extra, session=None, seq=None, keys_table=None):
        status, result, _ = self.check(log, *extra, keys_table=keys_table)
        self.assertEqual(status, 1, result)
        bad = result["first_bad"]
        self.assertEqual(bad["gseq"], gseq, bad)
        self.assertIn(reason, bad["reason"])
        if session is not None:
            self.assertEqual((bad["session"], bad["seq"]), (session, seq), bad)
        return bad

    # -- intact logs --

    def test_intact(self):
        log = Log()
        status, result, err = self.check(log)
        self.assertEqual(status, 0)
        self.assertEqual(result, {"ok": True, "records": 30, "purged": 0, "checkpoints": 3,
                                  "last_checkpoint": 27, "unsigned_tail": 2, "first_bad": None})
        self.assertIn("not pinned", err)
        status, out, err = run_cli("--db", self.db)
        self.assertEqual((status, out), (0, "intact: 30 records, 3 checkpoints, last checkpoint "
                                            "at gseq 27; 2 records after it not yet signed\n"))
        sessions = [run.session for run in log.runs]
        self.assertEqual([sessions.count(s) for s in ("sess-a", "sess-b", "sess-c")], [6, 5, 6])

    def test_opened_read_only(self):
        log = Log()
        log.write(self.db)
        before = self.db.read_bytes()
        os.chmod(self.db, 0o444)
        self.assertEqual(run_cli("--db", self.db)[0], 0)
        self.assertEqual(self.db.read_bytes(), before)
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()), ["tollgate.db"])

    def test_no_checkpoint_yet(self):
        log = Log(checkpoints=[])
        self.assertEqual(self.check(log)[1]["unsigned_tail"], 30)
        status, out, _ = run_cli("--db", self.db)
        self.assertEqual((status, out), (0, "intact: 30 records, 0 checkpoints, no checkpoint "
                                            "yet; 30 records not yet signed\n"))

    def test_empty_log(self):
        status, result, _ = self.check(Log(n=0, checkpoints=[]))
        self.assertEqual((status, result["records"]), (0, 0))

    def test_storage_order_within_a_run_is_not_significant(self):
        # The document orders records by gseq across all runs; a body's own order is not checked.
        log = Log()
        run = max(log.runs, key=lambda run: len(run.recs))
        run.recs.reverse()
        self.assertEqual(self.check(log)[0], 0)

    # -- tampering --

    def test_changed_payload_byte(self):
        log = Log()
        rec = log.rec(12)
        rec.payload = rec.payload.replace(b"SELECT 12", b"SELECT 13")
        self.assertBad(log, 12, "stored hash does not match", session=rec.session, seq=rec.seq)
        status, out, _ = run_cli("--db", self.db)
        self.assertEqual(status, 1)
        self.assertTrue(out.startswith(f"first bad record: gseq 12 (session {rec.session}, seq "
                                       f"{rec.seq}): stored hash does not match"), out)

    def test_deleted_record(self):
        log = Log()
        rec = log.rec(12)
        log.delete(rec)  # removed from its run's body; the run's row is otherwise unchanged
        self.assertBad(log, 12, "record missing", session=rec.session, seq=rec.seq)

    def test_deleted_run(self):
        log = Log()
        run = log.run_of(log.rec(14))  # session b's run of gseq 11, 14, 15
        self.assertEqual([r.gseq for r in run.recs], [11, 14, 15])
        for rec in list(run.recs):
            log.delete(rec)  # the row is deleted
        bad = self.assertBad(log, 11, "record missing", session="sess-b", seq=3)
        self.assertIn("gseq 11 absent", bad["reason"])

    def test_swapped_records(self):
        # Two events of one session exchange places in the order (session a, gseq 13 and 17).
        log = Log()
        first, second = log.rec(13), log.rec(17)
        self.assertEqual(first.session, second.session)
        first.payload, second.payload = second.payload, first.payload
        first.at, second.at = second.at, first.at
        self.assertBad(log, 13, "stored hash does not match", session=first.session,
                       seq=first.seq)

    def test_swapped_records_with_their_hashes(self):
        # Whole records, hashes included, moved to each other's gseq.
        log = Log()
        first, second = log.rec(14), log.rec(15)
        first.gseq, second.gseq = second.gseq, first.gseq
        first.seq, second.seq = second.seq, first.seq
        self.assertBad(log, 14, "stored hash does not match")

    def test_truncated_tail(self):
        log = Log()
        for rec in [r for r in log.recs if r.gseq > 19]:
            log.delete(rec)
        bad = self.assertBad(log, 20, "checkpoint at gseq 27 covers a missing record")
        self.assertIn("truncated after gseq 19", bad["reason"])

    def test_truncated_unsigned_tail_cannot_be_told(self):
        # The documented limit: after the last checkpoint a truncation looks like an ending.
        log = Log()
        for rec in [r for r in log.recs if r.gseq > 27]:
            log.delete(rec)
        status, result, _ = self.check(log)
        self.assertEqual((status, result["unsigned_tail"]), (0, 0))

    def forged(self, log, gseq, session, seq):
        return Rec(gseq, log.rec(gseq).at, session, seq,
                   b'{"type":"command","text":"DROP TABLE evidence","status":"ok"}')

    def test_inserted_record_with_a_taken_gseq(self):
        log = Log()
        rec = log.rec(15)
        forged = self.forged(log, 15, rec.session, rec.seq)
        forged.hash = hashlib.sha256(log.rec(14).hash + forged.raw()).digest()
        log.run_of(rec).recs.append(forged)
        log.recs.append(forged)
        self.assertBad(log, 15, "duplicate gseq")

    def insert_renumbered(self, log, at_gseq):
        rec = log.rec(at_gseq)
        forged = self.forged(log, at_gseq, rec.session, rec.seq)
        for r in log.recs:
            if r.gseq >= at_gseq:
                r.gseq += 1
                if r.session == rec.session:
                    r.seq += 1
        run = log.run_of(rec)
        run.recs.insert(run.recs.index(rec), forged)
        log.recs.append(forged)
        for run in log.runs:
            run.fit()
        return forged

    def test_inserted_record(self):
        # A forged record with its own correct hash, later records renumbered (not re-hashed).
        log = Log()
        forged = self.insert_renumbered(log, 15)
        forged.hash = hashlib.sha256(log.rec(14).hash + forged.raw()).digest()
        self.assertBad(log, 16, "stored hash does not match")

    def test_inserted_record_rehashed(self):
        log = Log()
        self.insert_renumbered(log, 15)
        log.rechain(15)
        self.assertBad(log, 10, "checkpoint at gseq 19: head does not match")

    def test_rehashed_forgery(self):
        log = Log()
        rec = log.rec(12)
        rec.payload = rec.payload.replace(b'"ok"', b'"error"')
        log.rechain(12)  # every later hash recomputed; the checkpoints cannot be re-signed
        ten = log.rec(10)
        bad = self.assertBad(log, 10, "checkpoint at gseq 19: head does not match",
                             session=ten.session, seq=ten.seq)
        self.assertIn("rewritten range gseq 10..19", bad["reason"])
        status, out, _ = run_cli("--db", self.db)
        self.assertEqual(status, 1)
        self.assertIn("rewritten range gseq 10..19", out)

    def test_rehashed_forgery_before_the_first_checkpoint(self):
        log = Log()
        log.rec(3).payload += b" "
        log.rechain(3)
        bad = self.assertBad(log, 0, "checkpoint at gseq 9: head does not match")
        self.assertIn("rewritten range gseq 0..9", bad["reason"])

    def test_bad_signature(self):
        log = Log()
        sig = bytearray(log.cps[1]["signature"])
        sig[5] ^= 0x20
        log.cps[1]["signature"] = bytes(sig)
        self.assertBad(log, 19, "checkpoint at gseq 19: bad signature")

    def test_checkpoint_fields_are_signed(self):
        for field, value in [("at", T0), ("head", bytes(32)), ("gseq", 18)]:
            with self.subTest(field=field):
                log = Log()
                log.cps[1][field] = value
                self.assertBad(log, log.cps[1]["gseq"], "bad signature")

    def test_unknown_key(self):
        log = Log()
        log.cps[1] = log.checkpoint(19, seed=OTHER_SEED)  # a key audit_keys does not hold
        self.assertBad(log, 19, f"unknown key {key_id(public_key(OTHER_SEED))}")
        log = Log()
        log.cps[1]["key_id"] = "0123456789abcdef"
        self.assertBad(log, 19, "unknown key 0123456789abcdef")

    def test_keys_table_row_with_a_wrong_id_is_ignored(self):
        log = Log()
        status, result, err = self.check(log, keys_table=[("0123456789abcdef",
                                                            public_key(SEED))])
        self.assertEqual(result["first_bad"]["gseq"], 9)
        self.assertIn("unknown key", result["first_bad"]["reason"])
        self.assertIn("audit_keys row '0123456789abcdef'", err)

    # -- retention: purged records and tombstones --

    def test_purged_log_intact(self):
        log = purged_log()
        self.assertEqual([(t["first_gseq"], t["last_gseq"], t["count"]) for t in log.tombstones],
                         [(1, 22, 8), (4, 26, 9)])
        status, result, _ = self.check(log)
        self.assertEqual(result, {"ok": True, "records": 30, "purged": 17, "checkpoints": 4,
                                  "last_checkpoint": 27, "unsigned_tail": 2, "first_bad": None})
        status, out, _ = run_cli("--db", self.db)
        self.assertEqual((status, out), (0, "intact: 30 records (17 purged), 4 checkpoints, last "
                                            "checkpoint at gseq 27; 2 records after it not yet "
                                            "signed\n"))
        status, out, err = run_cli("--db", self.db, "--key", self.keyfile(SEED))
        self.assertEqual(status, 0, out + err)
        # The purged events are gone from the store: both refusals were sessions b's and c's.
        db = sqlite3.connect(self.db)
        bodies = b"".join(body for (body,) in db.execute("SELECT body FROM audit_runs"))
        db.close()
        self.assertNotIn(b'"refusal"', bodies)
        self.assertEqual(bodies.count(b"TGP1"), 17)
        # A whole run purged, and a run of purged records only at the start of the log.
        log = Log()
        log.purge(1, [0, 1])
        self.assertEqual(self.check(log)[1]["purged"], 2)
        # A store with the table and no tombstone, and one without the table (older).
        log = Log()
        log.tombstones_table = True
        self.assertEqual(self.check(log)[1]["purged"], 0)
        log.tombstones_table = False
        self.assertEqual(self.check(log)[1]["purged"], 0)

    def keyfile(self, seed):
        path = self.dir / "key.bin"
        path.write_bytes(public_key(seed))
        return path

    def test_checkpoints_over_purged_records(self):
        # The chain runs through purged records: a checkpoint after them still catches a
        # record rewritten and re-hashed before it, from that record on.
        log = purged_log()
        rec = log.rec(27)
        rec.payload = rec.payload.replace(b'"ok"', b'"error"')
        log.rechain(27)
        bad = self.assertBad(log, 23, "checkpoint at gseq 27: head does not match")
        self.assertIn("rewritten range gseq 23..27", bad["reason"])
        # A record between purged ones, changed: its own hash no longer matches.
        log = purged_log()
        log.rec(13).payload += b" "
        self.assertBad(log, 13, "stored hash does not match", session="sess-a", seq=5)
        # A checkpoint on a purged record, with another head: caught like any other.
        log = purged_log()
        log.cps[2] = dict(log.cps[2], head=log.rec(21).hash)
        self.assertBad(log, 22, "checkpoint at gseq 22: bad signature")

    def test_purged_record_naming_no_tombstone(self):
        log = purged_log()
        log.tombstones.remove(log.tombstone(2))
        self.assertBad(log, 4, "purged record names tombstone 2, which is not stored",
                       session="sess-c", seq=0)
        # A store without the table at all (as before retention): no tombstone.
        log = purged_log()
        log.tombstones_table = False
        self.assertBad(log, 1, "purged record names tombstone 1, which is not stored",
                       session="sess-b", seq=0)
        # A purged record re-pointed to a tombstone that does not exist: the tombstone it left
        # no longer gets its count, and its first_gseq is the lower gseq.
        log = purged_log()
        log.rec(14).tombstone = 9
        self.assertBad(log, 1, "tombstone 1 (gseq 1..22): 7 purged records name it, its count "
                               "is 8")
        log = purged_log()
        log.rec(1).tombstone = 9  # on a tie, the record's own failure is named
        self.assertBad(log, 1, "purged record names tombstone 9, which is not stored")

    def test_tombstone_digest_mismatch(self):
        # A purged record's stored hash changed: its tombstone's digest no longer matches (the
        # chain breaks too, at the next record, a higher gseq); even with the chain re-hashed.
        for gseq, tid, first in [(14, 1, 1), (16, 2, 4), (26, 2, 4)]:
            for rehash in (False, True):
                with self.subTest(gseq=gseq, rehash=rehash):
                    log = purged_log()
                    log.rec(gseq).hash = hashlib.sha256(b"forged").digest()
                    if rehash:
                        log.rechain(gseq + 1)
                    bad = self.assertBad(log, first, f"tombstone {tid} (gseq {first}..")
                    self.assertIn("digest does not match", bad["reason"])

    def test_rewritten_record_before_a_purged_one(self):
        # The forgery a purged record's prev closes: the record just before a purged one is
        # rewritten and re-hashed. Nothing after it is chained from its hash (the purged
        # record's hash is stored, not recomputed), so no other stored hash and no checkpoint
        # changes; only the purged record's prev still holds the old hash.
        for gseq, session, seq in [(0, "sess-b", 0), (13, "sess-b", 4), (20, "sess-c", 6)]:
            with self.subTest(rewritten=gseq):
                log = purged_log()
                before = {r.gseq: r.hash for r in log.recs}
                rec = log.rec(gseq)
                rec.payload = rec.payload.replace(b'"step":', b'"step":1')
                log.rechain(gseq)
                self.assertEqual([g for g in before if log.rec(g).hash != before[g]], [gseq])
                bad = self.assertBad(log, gseq + 1, "purged record's prev does not match the "
                                     f"chain value of gseq {gseq} (the record before it was "
                                     "changed and its hash recomputed", session=session, seq=seq)
                # The forger rewrites the purged record's prev too: it is no longer what its
                # tombstone signed.
                log.rec(gseq + 1).prev = rec.hash
                tid, first = (1, 1) if session == "sess-b" else (2, 4)
                bad = self.assertBad(log, first, f"tombstone {tid} (gseq {first}..")
                self.assertIn("digest does not match the purged records naming it",
                              bad["reason"])
                # ... and the tombstone's row, without its key.
                log.reseal(tid, seed=None)
                self.assertBad(log, first, f"tombstone {tid} (gseq {first}..")
                self.assertIn("bad signature", self.check(log)[1]["first_bad"]["reason"])

    def test_purged_record_fields_are_in_the_digest(self):
        # A purged record's at, seq or session changed: its tombstone's digest, over the whole
        # entry, no longer matches (named by the tombstone's first_gseq).
        def change_at(rec):
            rec.at += 1

        def change_seq(rec):
            rec.seq += 1

        def change_session(log, rec):  # moved to another session's run of the same batch
            old = log.run_of(rec)
            new = next(run for run in log.runs if run.session == "sess-a"
                       and run.first <= rec.gseq + 1 and rec.gseq - 1 <= run.last)
            rec.session = "sess-a"
            old.recs.remove(rec)
            new.recs = sorted(new.recs + [rec], key=lambda r: r.gseq)
            old.fit()
            new.fit()

        for gseq, tid, first in [(14, 1, 1), (16, 2, 4), (1, 1, 1)]:
            for name, change in [("at", lambda log, r: change_at(r)),
                                 ("seq", lambda log, r: change_seq(r)),
                                 ("session", change_session),
                                 ("tombstone", None), ("prev", None)]:
                with self.subTest(gseq=gseq, field=name):
                    log = purged_log()
                    rec = log.rec(gseq)
                    if name == "tombstone":  # the record's tombstone field, to a twin's id
                        twin = dict(log.tombstone(tid), id=tid + 10)
                        log.sign_tombstone(twin)
                        log.tombstones.append(twin)
                        rec.tombstone = tid + 10
                    elif name == "prev":
                        rec.prev = bytes(32) if gseq else bytes([1]) * 32
                    else:
                        change(log, rec)
                    if name == "prev" and gseq == first:
                        # Its own failure and its tombstone's at the same gseq: its own is named.
                        self.assertBad(log, gseq, "purged record's prev does not match")
                        continue
                    bad = self.assertBad(log, first, f"tombstone {tid} (gseq {first}..")
                    self.assertIn("purged records name it" if name == "tombstone"
                                  else "digest does not match", bad["reason"])

    def test_wrong_prev(self):
        # A purged record whose prev is not the chain value before it fails at that record,
        # even when its tombstone signed it as it is.
        log = purged_log()
        log.rec(14).prev = log.rec(12).hash
        log.reseal(1)
        self.assertBad(log, 14, "purged record's prev does not match the chain value of gseq 13",
                       session="sess-b", seq=4)
        # Two purged records in a row: the second's prev is the first's stored hash.
        log = purged_log()
        log.rec(15).prev = log.rec(13).hash
        log.reseal(1)
        self.assertBad(log, 15, "chain value of gseq 14", session="sess-b", seq=5)
        # At gseq 0, the prev is 32 zero bytes.
        log = Log()
        log.purge(1, [0, 1])
        self.assertEqual(self.check(log)[0], 0)
        log.rec(0).prev = hashlib.sha256(b"").digest()
        log.reseal(1)
        self.assertBad(log, 0, "chain value of the start of the log (32 zero bytes)",
                       session="sess-a", seq=0)
        # Not re-signed: the tombstone's digest fails too, at its first_gseq, a lower gseq.
        log = purged_log()
        log.rec(14).prev = log.rec(12).hash
        self.assertBad(log, 1, "tombstone 1 (gseq 1..22): digest does not match")

    def test_record_added_to_a_tombstones_set(self):
        # A record of session a purged by a forger under tombstone 1 (its hash kept, so the
        # chain holds): tombstone 1 has one record more than it signed.
        log = purged_log()
        log.mark_purged(13, 1)
        self.assertBad(log, 1, "tombstone 1 (gseq 1..22): 9 purged records name it, its count "
                               "is 8", session="sess-b", seq=0)
        # A purged record moved from tombstone 2 to 1: both fail, 1 is the lower gseq.
        log = purged_log()
        log.rec(16).tombstone = 1
        self.assertBad(log, 1, "9 purged records name it, its count is 8")
        # Outside the tombstone's range.
        log = purged_log()
        log.mark_purged(27, 1)
        self.assertBad(log, 1, "gseq 27 lies outside its range")

    def test_normal_record_turned_into_a_purged_one(self):
        # The payload of gseq 13 erased as if purged, without a tombstone signed over it.
        for tid, gseq, reason in [(1, 1, "9 purged records name it, its count is 8"),
                                  (2, 4, "10 purged records name it, its count is 9"),
                                  (7, 13, "purged record names tombstone 7, which is not stored")]:
            with self.subTest(tombstone=tid):
                log = purged_log()
                log.mark_purged(13, tid)
                self.assertBad(log, gseq, reason)
        # With the tombstone's row adjusted to match, but not re-signed.
        log = purged_log()
        log.mark_purged(13, 1)
        log.reseal(1, seed=None)
        self.assertBad(log, 1, "tombstone 1 (gseq 1..22): bad signature")
        # In a log that never had a purge.
        log = Log()
        log.mark_purged(13, 1)
        self.assertBad(log, 13, "purged record names tombstone 1, which is not stored",
                       session="sess-a", seq=5)

    def test_bad_tombstone_signature(self):
        log = purged_log()
        sig = bytearray(log.tombstone(2)["signature"])
        sig[7] ^= 0x04
        log.tombstone(2)["signature"] = bytes(sig)
        self.assertBad(log, 4, "tombstone 2 (gseq 4..26): bad signature", session="sess-c",
                       seq=0)
        # Every field is signed.
        for field, value in [("at", T0), ("count", 8), ("last_gseq", 27), ("first_gseq", 3),
                             ("digest", bytes(32)), ("id", 3)]:
            with self.subTest(field=field):
                log = purged_log()
                log.tombstone(2)[field] = value
                self.assertBad(log, 3 if field == "first_gseq" else 4, "")
        # Signed with a key audit_keys does not hold.
        log = purged_log()
        log.sign_tombstone(log.tombstone(2), OTHER_SEED)
        self.assertBad(log, 4, f"signed by unknown key {key_id(public_key(OTHER_SEED))}")
        # ... unless the forger adds his key: then only a pinned key catches it.
        log.add_key(OTHER_SEED)
        self.assertEqual(self.check(log)[0], 0)
        self.assertBad(log, 4, "unknown key", "--key", self.keyfile(SEED))

    def test_malformed_tombstone_rows(self):
        log = purged_log()
        log.tombstone(2)["digest"] = bytes(31)
        self.assertBad(log, 4, "tombstone 2 (gseq 4..26): malformed tombstone")
        log = purged_log()
        log.tombstones.append(dict(log.tombstone(2)))
        self.assertBad(log, 4, "tombstone id 2 is stored twice")
        # A purged record cut short in its run.
        log = purged_log()
        run = log.run_of(log.rec(14))
        run.body = b"".join(r.raw() + r.hash for r in run.recs)[:-40]
        self.assertBad(log, 15, "truncated record")

    # -- step 1: runs --

    def test_truncated_run_body(self):
        log = Log()
        run = log.run_of(log.rec(13))
        run.body = b"".join(r.raw() + r.hash for r in run.recs)[:-5]
        self.assertBad(log, 13, "truncated record")

    def test_garbage_in_run_body(self):
        log = Log()
        run = log.run_of(log.rec(13))
        run.body = b"".join(r.raw() + r.hash for r in run.recs) + b"TGE0" + bytes(40)
        self.assertBad(log, 14, "bad magic")

    def test_record_in_another_sessions_run(self):
        log = Log()
        rec = log.rec(13)  # session a
        other = log.run_of(log.rec(12))  # session c, same batch
        self.assertNotEqual(other.session, rec.session)
        log.run_of(rec).recs.remove(rec)
        other.recs.append(rec)
        other.fit()
        self.assertBad(log, 13, f"record of session {rec.session} stored in the run of "
                                f"session {other.session}")

    def test_gseq_outside_its_runs_range(self):
        log = Log()
        run = log.run_of(log.rec(13))
        run.last = 12
        self.assertBad(log, 13, "outside")

    # -- keys --

    def test_pinned_key(self):
        log = Log()
        log.write(self.db)
        pk = public_key(SEED)
        raw, text = self.dir / "key.bin", self.dir / "keys.txt"
        raw.write_bytes(pk)
        text.write_text(f"# the gateway's keys\n\n{key_id(pk)} {pk.hex()}\n"
                        f"{key_id(public_key(OTHER_SEED))} {public_key(OTHER_SEED).hex()}\n")
        for keyfile in (raw, text):
            status, out, err = run_cli("--db", self.db, "--key", keyfile)
            self.assertEqual(status, 0, out + err)
            self.assertNotIn("not pinned", err)

    def test_pinned_key_refuses_other_keys(self):
        log = Log()
        log.write(self.db)
        keyfile = self.dir / "key.bin"
        keyfile.write_bytes(public_key(OTHER_SEED))
        status, result, _ = self.check(log, "--key", keyfile)
        self.assertEqual(result["first_bad"]["gseq"], 9)
        self.assertIn("unknown key", result["first_bad"]["reason"])

    def test_replaced_keys_table_is_caught_only_when_pinned(self):
        # Whoever rewrites the database can also replace audit_keys and re-sign everything.
        log = Log()
        log.rec(12).payload += b" "
        log.rechain(12)
        log.seeds = {}
        log.add_key(OTHER_SEED)
        log.cps = [log.checkpoint(g, seed=OTHER_SEED) for g in CHECKPOINTS]
        status, _, err = self.check(log)
        self.assertEqual(status, 0)
        self.assertIn("not pinned", err)
        keyfile = self.dir / "key.bin"
        keyfile.write_bytes(public_key(SEED))
        self.assertBad(log, 9, "unknown key", "--key", keyfile)

    # -- usage errors --

    def test_usage_errors(self):
        Log().write(self.db)
        notdb = self.dir / "not.db"
        notdb.write_bytes(b"this is not an SQLite database" * 100)
        empty_db = self.dir / "empty.db"
        sqlite3.connect(empty_db).close()
        sqlite3.connect(empty_db).execute("CREATE TABLE t(x)").connection.close()
        pk = public_key(SEED)
        bad_keys = {
            "short.bin": pk[:31],
            "badhex.txt": f"{key_id(pk)} {pk.hex()[:-1]}z\n",
            "wrongid.txt": f"0123456789abcdef {pk.hex()}\n",
            "onefield.txt": f"{pk.hex()}\n",
            "comments.txt": "# nothing here\n",
        }
        cases = [["--db", self.dir / "missing.db"], ["--db", notdb], ["--db", empty_db],
                 ["--db", self.dir], ["--db", self.db, "--key", self.dir / "missing.key"], []]
        for name, content in bad_keys.items():
            path = self.dir / name
            (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
            cases.append(["--db", self.db, "--key", path])
        for args in cases:
            with self.subTest(args=[str(a) for a in args]):
                status, out, err = run_cli(*args)
                self.assertEqual(status, 2, out + err)
                self.assertEqual(out, "")
                self.assertTrue(err.strip())


def bundle_record(doc, index):
    """The bytes (record ‖ hash) of a bundle's records[index]."""
    return base64.b64decode(doc["records"][index])


def set_bundle_record(doc, index, data):
    doc["records"][index] = base64.b64encode(data).decode("ascii")


def non_canonical_b64(data):
    """The base64 of data (whose length is not a multiple of 3) with a trailing bit set: it
    decodes to the same bytes, but is not the canonical encoding."""
    text = base64.b64encode(data).decode("ascii").rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    assert len(data) % 3 and alphabet.index(text[-1]) % 4 == 0
    text = text[:-1] + alphabet[alphabet.index(text[-1]) + 1]
    return text + "=" * (-len(text) % 4)


def cover_gseq(item):
    """The gseq of a bundle tombstone's covers item (base64 of purged record ‖ hash)."""
    return entry_gseq(base64.b64decode(item))


def flip_cover_byte(item, offset):
    """The covers item with the byte at `offset` of its entry flipped."""
    data = bytearray(base64.b64decode(item))
    data[offset] ^= 0x01
    return base64.b64encode(bytes(data)).decode("ascii")


class BundleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = pathlib.Path(self.tmp.name)
        self.path = self.dir / "bundle.json"

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, doc):
        self.path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=1))

    def check(self, doc, *extra):
        """Writes the bundle, runs the verifier with --json; (exit status, result, stderr)."""
        self.write(doc)
        status, out, err = run_cli("--bundle", self.path, "--json", *extra)
        self.assertIn(status, (0, 1), err)
        result = json.loads(out)
        self.assertEqual(result["ok"], status == 0)
        return status, result, err

    def assertIntact(self, doc, *extra, **summary):
        status, result, err = self.check(doc, *extra)
        self.assertEqual(status, 0, result)
        self.assertEqual(result, dict(ok=True, **{"purged": 0, **summary}, first_bad=None))
        return err

    def assertBad(self, doc, gseq, reason, *extra, session=None, seq=None):
        status, result, _ = self.check(doc, *extra)
        self.assertEqual(status, 1, result)
        bad = result["first_bad"]
        self.assertEqual(bad["gseq"], gseq, bad)
        self.assertIn(reason, bad["reason"])
        if session is not None:
            self.assertEqual((bad["session"], bad["seq"]), (session, seq), bad)
        return bad

    def keyfile(self, seed):
        path = self.dir / "key.bin"
        path.write_bytes(public_key(seed))
        return path

    # -- intact bundles --

    def test_intact_in_the_middle_of_the_log(self):
        log = Log()
        doc = log.bundle(10, 19)
        self.assertEqual(len(doc["records"]), 10)
        err = self.assertIntact(doc, records=10, checkpoints=1, last_checkpoint=19,
                                unsigned_tail=0)
        self.assertIn("keys are not pinned", err)
        self.assertIn("bundle's own keys", err)
        status, out, err = run_cli("--bundle", self.path)
        self.assertEqual((status, out), (0, "intact: 10 records, 1 checkpoints, last checkpoint "
                                            "at gseq 19; 0 records after it not yet signed\n"))
        status, out, err = run_cli("--bundle", self.path, "--key", self.keyfile(SEED))
        self.assertEqual(status, 0, out + err)
        self.assertNotIn("not pinned", err)
        # Two checkpoints inside, records after the last one not yet signed.
        self.assertIntact(log.bundle(13, 29), records=17, checkpoints=2, last_checkpoint=27,
                          unsigned_tail=2)

    def test_intact_from_gseq_0(self):
        log = Log()
        doc = log.bundle(0, 29)
        self.assertEqual(doc["prev_hash"], "0" * 64)
        self.assertIntact(doc, records=30, checkpoints=3, last_checkpoint=27, unsigned_tail=2)
        # The same answer as for the store holding the same log.
        db = self.dir / "tollgate.db"
        log.write(db)
        self.assertEqual(run_cli("--db", db, "--json")[:2], run_cli("--bundle", self.path,
                                                                      "--json")[:2])
        self.assertIntact(log.bundle(0, 9), records=10, checkpoints=1, last_checkpoint=9,
                          unsigned_tail=0)

    def test_order_in_the_list_is_not_significant(self):
        # Each record is its own run: its gseq comes from the record, not from its position.
        doc = Log().bundle(10, 19)
        doc["records"].reverse()
        self.assertIntact(doc, records=10, checkpoints=1, last_checkpoint=19, unsigned_tail=0)

    # -- tampering --

    def test_changed_record_byte(self):
        log = Log()
        rec = log.rec(13)
        for name, offset in [("payload", -HASH - 3), ("stored hash", -5), ("at", 13)]:
            with self.subTest(byte=name):
                doc = log.bundle(10, 19)
                data = bytearray(bundle_record(doc, 3))
                data[offset] ^= 0x01
                set_bundle_record(doc, 3, bytes(data))
                self.assertBad(doc, 13, "stored hash does not match", session=rec.session,
                               seq=rec.seq)
        status, out, _ = run_cli("--bundle", self.path)
        self.assertEqual(status, 1)
        self.assertTrue(out.startswith(f"first bad record: gseq 13 (session {rec.session}, seq "
                                       f"{rec.seq}): stored hash does not match"), out)

    def test_rehashed_record(self):
        # Changed and the chain recomputed to the segment's end: only the checkpoint tells.
        log = Log()
        log.rec(13).payload = log.rec(13).payload.replace(b'"ok"', b'"error"')
        log.rechain(13)
        bad = self.assertBad(log.bundle(10, 19), 10, "checkpoint at gseq 19: head does not match")
        self.assertIn("rewritten range gseq 10..19", bad["reason"])
        bad = self.assertBad(log.bundle(5, 19), 10, "checkpoint at gseq 19: head does not match")
        self.assertIn("gseq 5..9 is attested", bad["reason"])

    def test_missing_record(self):
        log = Log()
        rec = log.rec(14)
        doc = log.bundle(10, 19)
        del doc["records"][4]
        bad = self.assertBad(doc, 14, "record missing", session=rec.session, seq=rec.seq)
        self.assertIn("gseq 14 absent", bad["reason"])
        doc = log.bundle(10, 19)
        del doc["records"][0]
        self.assertBad(doc, 10, "record missing")
        # The last records gone: the checkpoint over them is still there.
        doc = log.bundle(10, 19)
        del doc["records"][-2:]
        bad = self.assertBad(doc, 18, "checkpoint at gseq 19 covers a missing record")
        self.assertIn("truncated after gseq 17", bad["reason"])

    def test_duplicate_record_and_wrong_first_gseq(self):
        log = Log()
        doc = log.bundle(10, 19)
        doc["records"].insert(5, doc["records"][4])
        self.assertBad(doc, 14, "duplicate gseq")
        doc = log.bundle(10, 19)
        doc["first_gseq"] = 11
        self.assertBad(doc, 10, "precedes its first gseq 11")
        doc["first_gseq"] = 9
        self.assertBad(doc, 9, "record missing")

    def test_wrong_prev_hash(self):
        log = Log()
        rec = log.rec(10)
        doc = log.bundle(10, 19)
        doc["prev_hash"] = log.rec(8).hash.hex()
        bad = self.assertBad(doc, 10, "stored hash does not match", session=rec.session,
                             seq=rec.seq)
        self.assertIn("prev_hash is wrong", bad["reason"])
        doc = log.bundle(0, 9)
        doc["prev_hash"] = "11" * 32
        self.assertBad(doc, 0, "prev_hash is wrong")
        # Every hash recomputed from the wrong prev_hash: the first checkpoint's head tells.
        doc = log.bundle(10, 19)
        previous = b"\x11" * 32
        doc["prev_hash"] = previous.hex()
        for index in range(len(doc["records"])):
            raw = bundle_record(doc, index)[:-HASH]
            previous = hashlib.sha256(previous + raw).digest()
            set_bundle_record(doc, index, raw + previous)
        bad = self.assertBad(doc, 10, "checkpoint at gseq 19: head does not match")
        self.assertIn("rewritten range gseq 10..19", bad["reason"])

    def test_no_checkpoint(self):
        log = Log()
        rec = log.rec(10)
        doc = log.bundle(10, 19, checkpoints=[])
        self.assertBad(doc, 10, "no checkpoint", session=rec.session, seq=rec.seq)
        _, result, _ = self.check(doc)
        self.assertEqual((result["records"], result["checkpoints"]), (10, 0))
        status, out, _ = run_cli("--bundle", self.path)
        self.assertEqual(status, 1)
        self.assertIn("no checkpoint", out)
        self.assertIn("no checkpoint", self.assertBad(log.bundle(10, 18), 10, "")["reason"])
        # Only checkpoints before the segment: ignored, so none.
        bad = self.assertBad(log.bundle(10, 18, checkpoints=[9]), 10, "no checkpoint")
        self.assertIn("1 checkpoint before first_gseq 10 ignored", bad["reason"])
        self.assertBad(Log(checkpoints=[]).bundle(0, 29), 0, "no checkpoint")
        doc = log.bundle(10, 19, checkpoints=[])
        doc["records"] = []
        self.assertBad(doc, 10, "no checkpoint")

    def test_checkpoint_outside_the_segment_is_ignored(self):
        log = Log()
        self.assertIntact(log.bundle(10, 19, checkpoints=[9, 19]), records=10, checkpoints=1,
                          last_checkpoint=19, unsigned_tail=0)
        self.assertIntact(log.bundle(20, 29, checkpoints=[9, 19, 27]), records=10,
                          checkpoints=1, last_checkpoint=27, unsigned_tail=2)
        # Not even checked: its record is not in the bundle.
        for tamper in ("signature", "key_id", "head"):
            with self.subTest(tamper=tamper):
                doc = log.bundle(10, 19, checkpoints=[9, 19])
                cp = doc["checkpoints"][0]
                self.assertEqual(cp["gseq"], 9)
                cp[tamper] = "0123456789abcdef" if tamper == "key_id" else "00" * 32
                self.assertIntact(doc, records=10, checkpoints=1, last_checkpoint=19,
                                  unsigned_tail=0)
        # A checkpoint inside the segment is checked.
        doc = log.bundle(10, 19)
        doc["checkpoints"][0]["signature"] = "00" * 64
        self.assertBad(doc, 19, "checkpoint at gseq 19: bad signature")

    def test_unreadable_records_are_named_by_position(self):
        log = Log()
        # Record 15 two bytes longer than a multiple of 3, so that its base64 ends in "=" and
        # has unused bits in its last character (a JSON payload may carry trailing spaces).
        while (len(log.rec(15).raw()) + HASH) % 3 != 2:
            log.rec(15).payload += b" "
        log.rechain()
        log.cps = [log.checkpoint(g) for g in CHECKPOINTS]
        self.assertIntact(log.bundle(10, 19), records=10, checkpoints=1, last_checkpoint=19,
                          unsigned_tail=0)
        good = bundle_record(log.bundle(10, 19), 5)
        cases = {
            "not base64": ("not base64!", "not base64"),
            "not a string": (15, "not a base64 string"),
            "truncated": (base64.b64encode(good[:-1]).decode(), "truncated"),
            "trailing bytes": (base64.b64encode(good + b"\0").decode(), "1 bytes after"),
            "two records": (base64.b64encode(good + good).decode(), "bytes after"),
            "bad magic": (base64.b64encode(b"TGE0" + good[4:]).decode(), "bad magic"),
            "empty": ("", "truncated"),
        }
        # Other encodings of the very same bytes: not the base64 of the record.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        canonical = base64.b64encode(good).decode()
        self.assertTrue(canonical.endswith("=") and not canonical.endswith("=="))
        cases["unpadded"] = (canonical.rstrip("="), "not base64")
        cases["with a newline"] = (canonical[:20] + "\n" + canonical[20:], "not base64")
        cases["unused bits set"] = (canonical[:-2] + alphabet[alphabet.index(canonical[-2]) | 1]
                                    + "=", "not canonical base64")
        for name, (item, reason) in cases.items():
            with self.subTest(case=name):
                doc = log.bundle(10, 19)
                doc["records"][5] = item
                bad = self.assertBad(doc, 15, "unreadable record at index 5")
                self.assertIn(reason, bad["reason"])
                self.assertEqual((bad["session"], bad["seq"]), (None, None))
        # The lowest position first, and before any later step's failure (a missing record);
        # the position is the one in the list as it is: after gseq 11's removal, index 5.
        doc = log.bundle(10, 19)
        doc["records"][7] = doc["records"][6] = "?"
        del doc["records"][1]
        _, result, _ = self.check(doc)
        self.assertEqual((result["first_bad"]["gseq"], result["records"]), (15, None))
        self.assertIn("index 5", result["first_bad"]["reason"])

    def test_pinned_key_that_is_not_the_bundles(self):
        log = Log()
        doc = log.bundle(10, 19)
        self.assertBad(doc, 19, f"unknown key {key_id(public_key(SEED))}", "--key",
                       self.keyfile(OTHER_SEED))
        # A forger who re-signs with a key of his own and puts it in the bundle passes only
        # without a pin.
        log.rec(13).payload += b" "
        log.rechain(13)
        log.seeds = {}
        log.add_key(OTHER_SEED)
        log.cps = [log.checkpoint(g, seed=OTHER_SEED) for g in CHECKPOINTS]
        forged = log.bundle(10, 19)
        status, _, err = self.check(forged)
        self.assertEqual(status, 0)
        self.assertIn("not pinned", err)
        self.assertBad(forged, 19, "unknown key", "--key", self.keyfile(SEED))

    def test_bundle_key_with_a_wrong_id_is_ignored(self):
        doc = Log().bundle(10, 19)
        doc["keys"] = {"0123456789abcdef": public_key(SEED).hex()}
        _, result, err = self.check(doc)
        self.assertEqual(result["first_bad"]["gseq"], 19)
        self.assertIn("unknown key", result["first_bad"]["reason"])
        self.assertIn("bundle key '0123456789abcdef'", err)

    # -- retention: purged records and tombstones --

    def test_purged_bundle_intact(self):
        log = purged_log()
        doc = log.bundle(10, 19)
        self.assertEqual([(t["id"], len(t["covers"])) for t in doc["tombstones"]], [(1, 8), (2, 9)])
        self.assertIntact(doc, records=10, purged=8, checkpoints=1, last_checkpoint=19,
                          unsigned_tail=0)
        status, out, _ = run_cli("--bundle", self.path)
        self.assertEqual((status, out), (0, "intact: 10 records (8 purged), 1 checkpoints, last "
                                            "checkpoint at gseq 19; 0 records after it not yet "
                                            "signed\n"))
        status, out, err = run_cli("--bundle", self.path, "--key", self.keyfile(SEED))
        self.assertEqual(status, 0, out + err)
        # Only the tombstones its purged records name: gseq 24 and 26 are session c's.
        doc = log.bundle(23, 29)
        self.assertEqual([t["id"] for t in doc["tombstones"]], [2])
        self.assertIntact(doc, records=7, purged=2, checkpoints=1, last_checkpoint=27,
                          unsigned_tail=2)
        # The whole log: the same answer as the store's.
        self.write(log.bundle(0, 29))
        db = self.dir / "tollgate.db"
        log.write(db)
        self.assertEqual(run_cli("--db", db, "--json")[:2], run_cli("--bundle", self.path,
                                                                      "--json")[:2])
        # An empty tombstones list in a bundle without purged records.
        doc = Log().bundle(10, 19)
        doc["tombstones"] = []
        self.assertIntact(doc, records=10, checkpoints=1, last_checkpoint=19, unsigned_tail=0)

    @staticmethod
    def tombstone_of(doc, tid):
        return next(t for t in doc["tombstones"] if t["id"] == tid)

    def test_covers_omitting_a_purged_record(self):
        log = purged_log()
        doc = log.bundle(10, 19)
        t = self.tombstone_of(doc, 1)
        t["covers"] = [c for c in t["covers"] if cover_gseq(c) != 14]
        self.assertBad(doc, 1, "tombstone 1 (gseq 1..22): 7 records in its covers, its count "
                               "is 8")
        # Covers whose count and digest match (signed over them), without gseq 14.
        log = purged_log()
        tomb = log.tombstone(1)
        tomb["covers"] = [c for c in tomb["covers"] if entry_gseq(c) != 14]
        tomb["count"], tomb["digest"] = len(tomb["covers"]), covers_digest(tomb["covers"])
        log.sign_tombstone(tomb)
        self.assertBad(log.bundle(10, 19), 1, "purged record gseq 14 names it but is not in "
                                              "its covers")
        self.assertIntact(log.bundle(0, 13), records=14, purged=8, checkpoints=1,
                          last_checkpoint=9, unsigned_tail=4)  # 14 is not in this one
        # A covered hash changed, and a covered purged record's at.
        for offset in (-1, 12):
            with self.subTest(covers_byte=offset):
                doc = purged_log().bundle(10, 19)
                t = self.tombstone_of(doc, 1)
                t["covers"] = [flip_cover_byte(c, offset) if cover_gseq(c) == 14 else c
                               for c in t["covers"]]
                self.assertBad(doc, 1, "digest does not match its covers")
        # A purged record's stored hash changed in the bundle: not the one its covers give (and
        # the chain breaks at 15, a higher gseq).
        doc = purged_log().bundle(10, 19)
        data = bytearray(bundle_record(doc, 4))
        data[-1] ^= 0x01
        set_bundle_record(doc, 4, bytes(data))
        self.assertBad(doc, 1, "purged record gseq 14 is not byte for byte its entry in its "
                               "covers")
        # A list that repeats a gseq.
        doc = purged_log().bundle(10, 19)
        t = self.tombstone_of(doc, 2)
        t["covers"].append(t["covers"][0])
        self.assertBad(doc, 4, "its covers list gseq 4 twice")

    def test_rewritten_record_before_a_purged_one(self):
        # The record just before a purged one rewritten and re-hashed (see the store's test).
        log = purged_log()
        rec = log.rec(13)
        rec.payload = rec.payload.replace(b'"ok"', b'"error"')
        log.rechain(13)
        self.assertBad(log.bundle(10, 19), 14, "purged record's prev does not match the chain "
                                               "value of gseq 13", session="sess-b", seq=4)
        # Its prev rewritten too: no longer the entry its tombstone's covers give ...
        log.rec(14).prev = rec.hash
        doc = log.bundle(10, 19)
        self.assertBad(doc, 1, "tombstone 1 (gseq 1..22): purged record gseq 14 is not byte for "
                               "byte its entry in its covers")
        # ... and the covers too: they no longer give the signed digest.
        t = self.tombstone_of(doc, 1)
        t["covers"] = [base64.b64encode(log.rec(14).entry()).decode("ascii")
                       if cover_gseq(c) == 14 else c for c in t["covers"]]
        self.assertBad(doc, 1, "tombstone 1 (gseq 1..22): digest does not match its covers")

    def test_purged_record_first_in_a_bundle(self):
        # Its prev is checked against the bundle's prev_hash: a bundle whose chain runs only
        # through purged records up to the record after them still authenticates prev_hash.
        log = purged_log()
        doc = log.bundle(14, 19)
        self.assertIntact(doc, records=6, purged=5, checkpoints=1, last_checkpoint=19,
                          unsigned_tail=0)
        doc["prev_hash"] = log.rec(12).hash.hex()
        self.assertBad(doc, 14, "purged record's prev does not match the chain value of the "
                                "bundle's prev_hash (the bundle's prev_hash is wrong",
                       session="sess-b", seq=4)
        # From gseq 0: 32 zero bytes.
        log = Log()
        log.purge(1, [0, 1])
        self.assertIntact(log.bundle(0, 9), records=10, purged=2, checkpoints=1,
                          last_checkpoint=9, unsigned_tail=0)
        log.rec(0).prev = bytes([1]) * 32
        log.reseal(1)
        self.assertBad(log.bundle(0, 9), 0, "the bundle's prev_hash")

    def test_wrong_prev(self):
        # Signed by its tombstone as it is, a wrong prev fails at its record.
        log = purged_log()
        log.rec(14).prev = log.rec(12).hash
        log.reseal(1)
        self.assertBad(log.bundle(10, 19), 14, "purged record's prev does not match the chain "
                                               "value of gseq 13", session="sess-b", seq=4)

    def test_purged_record_fields_are_in_the_digest(self):
        # A purged record's at (bytes 12..19), seq or session changed in the bundle: not the
        # entry its covers give; changed in its covers as well: not the signed digest.
        log = purged_log()
        changed = Log()  # gseq 14 with another session, seq and at
        changed.purge(1, [14])
        changed.rec(14).session, changed.rec(14).seq, changed.rec(14).at = "sess-x", 9, T0
        changed.rec(14).prev, changed.rec(14).hash = log.rec(14).prev, log.rec(14).hash
        for name, data in [("at", flip_cover_byte(
                               base64.b64encode(log.rec(14).entry()).decode("ascii"), 19)),
                           ("session, seq and at",
                            base64.b64encode(changed.rec(14).entry()).decode("ascii"))]:
            with self.subTest(field=name):
                doc = log.bundle(10, 19)
                doc["records"][4] = data
                self.assertBad(doc, 1, "purged record gseq 14 is not byte for byte its entry")
                t = self.tombstone_of(doc, 1)
                t["covers"] = [data if cover_gseq(c) == 14 else c for c in t["covers"]]
                self.assertBad(doc, 1, "digest does not match its covers")

    def test_bundle_tombstone_failures(self):
        # The tombstone is not in the bundle: its first purged record in the bundle is named.
        log = purged_log()
        doc = log.bundle(10, 19)
        doc["tombstones"] = [t for t in doc["tombstones"] if t["id"] != 2]
        self.assertBad(doc, 10, "purged record names tombstone 2, which the bundle does not "
                                "carry", session="sess-c", seq=2)
        doc = log.bundle(10, 19)
        del doc["tombstones"]
        self.assertBad(doc, 10, "which the bundle does not carry")
        # A bad signature: named by the tombstone's first_gseq, before the segment.
        doc = log.bundle(10, 19)
        t = self.tombstone_of(doc, 2)
        t["signature"] = t["signature"][:-2] + ("00" if t["signature"][-2:] != "00" else "01")
        bad = self.assertBad(doc, 4, "tombstone 2 (gseq 4..26): bad signature")
        self.assertEqual((bad["session"], bad["seq"]), (None, None))
        t = self.tombstone_of(doc := log.bundle(10, 19), 2)
        t["count"] = 8
        self.assertBad(doc, 4, "bad signature")
        self.assertBad(log.bundle(10, 19), 1, "tombstone 1 (gseq 1..22): signed by unknown key",
                       "--key", self.keyfile(OTHER_SEED))
        # A normal record of the bundle turned into a purged one: not in the covers.
        log = purged_log()
        log.mark_purged(13, 1)
        self.assertBad(log.bundle(10, 19), 1, "purged record gseq 13 names it but is not in its "
                                              "covers")
        log.rec(13).tombstone = 5
        self.assertBad(log.bundle(10, 19), 13, "purged record names tombstone 5")

    def test_malformed_tombstones_are_usage_errors(self):
        good = purged_log().bundle(10, 19)

        def with_(path, value):
            doc = json.loads(json.dumps(good))
            *parents, last = path
            target = doc
            for key in parents:
                target = target[key]
            if value is None:
                del target[last]
            else:
                target[last] = value
            return doc

        cases = {
            "not a list": with_(["tombstones"], {}),
            "not an object": with_(["tombstones", 0], 1),
            "id text": with_(["tombstones", 0, "id"], "1"),
            "count true": with_(["tombstones", 0, "count"], True),
            "digest not hex": with_(["tombstones", 0, "digest"], "xyz"),
            "signature not hex": with_(["tombstones", 0, "signature"], 12),
            "key_id number": with_(["tombstones", 0, "key_id"], 5),
            "covers not a list": with_(["tombstones", 0, "covers"], "all"),
            "covers item a number": with_(["tombstones", 0, "covers", 0], 1),
            "covers item a pair, as before": with_(["tombstones", 0, "covers", 0],
                                                   [1, "00" * 32]),
            "covers item an object": with_(["tombstones", 0, "covers", 0], {"gseq": 1}),
        }
        for field in ("id", "first_gseq", "last_gseq", "count", "digest", "at", "key_id",
                      "signature", "covers"):
            cases[f"no {field}"] = with_(["tombstones", 0, field], None)
        for name, doc in cases.items():
            with self.subTest(case=name):
                self.write(doc)
                status, out, err = run_cli("--bundle", self.path, "--json")
                self.assertEqual((status, out, err.count("\n")), (2, "", 1), err)
                self.assertIn("tombstones", err)
        # What a covers string holds is the verification's to judge, as a record's is.
        log = purged_log()
        entry = log.rec(1).entry()
        rec2 = log.rec(2)
        b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
        for name, item, reason in [
                ("not base64", "not base64!", "malformed covers entry 0: not base64"),
                ("not canonical", non_canonical_b64(entry[:-1]), "not canonical base64"),
                ("truncated", b64(entry[:-1]), "truncated"),
                ("bytes after it", b64(entry + b"\0"), "1 bytes after the purged record's hash"),
                ("bad magic", b64(b"TGX1" + entry[4:]), "bad magic"),
                ("a record", b64(rec2.entry()), "a record (TGE1), not a purged record"),
                ("another tombstone's", b64(log.rec(4).entry()),
                 "covers entry 0 (gseq 4) names tombstone 2")]:
            with self.subTest(covers=name):
                doc = json.loads(json.dumps(good))
                doc["tombstones"][0]["covers"][0] = item
                self.assertBad(doc, 1, reason)

    # -- usage errors --

    def test_malformed_documents(self):
        log = Log()
        good = log.bundle(10, 19)

        def without(field):
            doc = json.loads(json.dumps(good))
            del doc[field]
            return doc

        def with_(path, value):
            doc = json.loads(json.dumps(good))
            *parents, last = path
            target = doc
            for key in parents:
                target = target[key]
            target[last] = value
            return doc

        cases = {
            "empty file": "",
            "not JSON": "{\"format\": ",
            "NaN": json.dumps(good)[:-1] + ', "x": NaN}',
            "a list": "[]",
            "a string": '"tollgate-audit-bundle"',
            "empty object": "{}",
            "no format": without("format"),
            "other format": with_(["format"], "tollgate-audit-log"),
            "no version": without("version"),
            "version 2": with_(["version"], 2),
            "version as text": with_(["version"], "1"),
            "version true": with_(["version"], True),
            "version 1.0": json.dumps(good).replace('"version": 1,', '"version": 1.0,'),
            "first_gseq negative": with_(["first_gseq"], -1),
            "first_gseq text": with_(["first_gseq"], "10"),
            "first_gseq too big": with_(["first_gseq"], 2**64),
            "prev_hash not hex": with_(["prev_hash"], "zz" * 32),
            "prev_hash short": with_(["prev_hash"], "00" * 31),
            "records not a list": with_(["records"], good["records"][0]),
            "checkpoints not a list": with_(["checkpoints"], good["checkpoints"][0]),
            "checkpoint not an object": with_(["checkpoints", 0], 19),
            "checkpoint gseq text": with_(["checkpoints", 0, "gseq"], "19"),
            "checkpoint head not hex": with_(["checkpoints", 0, "head"], "xy"),
            "checkpoint signature odd": with_(["checkpoints", 0, "signature"], "abc"),
            "checkpoint key_id number": with_(["checkpoints", 0, "key_id"], 1),
            "keys not an object": with_(["keys"], []),
            "key not hex": with_(["keys", key_id(public_key(SEED))], "not hex"),
        }
        for field in ("first_gseq", "prev_hash", "records", "checkpoints", "keys"):
            cases[f"no {field}"] = without(field)
        for field in ("gseq", "at", "head", "key_id", "signature"):
            doc = json.loads(json.dumps(good))
            del doc["checkpoints"][0][field]
            cases[f"checkpoint without {field}"] = doc
        for name, doc in cases.items():
            with self.subTest(case=name):
                self.write(doc)
                for extra in ([], ["--json"], ["--key", self.keyfile(SEED)]):
                    status, out, err = run_cli("--bundle", self.path, *extra)
                    self.assertEqual(status, 2, out + err)
                    self.assertEqual(out, "")
                    self.assertEqual(err.count("\n"), 1, err)
                    self.assertTrue(err.startswith("verify_audit: error: "), err)
                    self.assertNotIn("Traceback", err)
        self.path.write_bytes(b'{"format": "tollgate-audit-bundle", "version": 1, \xff}')
        status, out, err = run_cli("--bundle", self.path)
        self.assertEqual((status, out, err.count("\n")), (2, "", 1), err)
        # The file itself, and --db with --bundle.
        db = self.dir / "tollgate.db"
        log.write(db)
        self.write(good)
        for args in (["--bundle", self.dir / "missing.json"], ["--bundle", self.dir],
                     ["--bundle", self.path, "--db", db]):
            with self.subTest(args=[str(a) for a in args]):
                status, out, err = run_cli(*args)
                self.assertEqual(status, 2, out + err)
                self.assertEqual(out, "")
                self.assertTrue(err.strip())


if __name__ == "__main__":
    unittest.main(verbosity=2)
