#!/usr/bin/env python3
"""Independent verifier of Tollgate's tamper-evident audit log (docs/audit-format.md, version 1).

Standard library only, so that the log can be checked without trusting (or building) Tollgate:

    python3 scripts/verify_audit.py --db DATA_DIR/tollgate.db [--key KEYFILE] [--json]
    python3 scripts/verify_audit.py --bundle BUNDLE.json [--key KEYFILE] [--json]

--db verifies the whole log in the gateway's database; --bundle verifies an exported bundle (a
segment of the log as one JSON document, docs/audit-format.md "Bundle") with the same checks,
the chain starting at its first_gseq from its prev_hash. Purged records (retention removed their
payloads) must carry, as their prev, the chain value of the record before them; their hashes are
then taken on the word of the signed tombstones that vouch for them: the store's
audit_tombstones table (absent in older databases: no tombstone), a bundle's "tombstones" with
their covers (absent: none). The summary counts them as "purged".

--key pins the gateway's public key(s): a file of exactly 32 raw bytes (one Ed25519 public key),
or a text file of lines `key_id hex_public_key` (lines starting with # are comments). Without it
the keys come from the database's own `audit_keys` table (or the bundle's own `keys`), which
whoever can rewrite the database (or the bundle) can also replace: a warning says so.

Exit status: 0 the log is intact, 1 it is not (the first bad record is named), 2 usage error
(missing file, unreadable database, a document that is not a version 1 bundle, bad key file).

The Ed25519 verification below is written from RFC 8032, section 5.1 (cofactorless check).
"""

import argparse
import base64
import binascii
import hashlib
import json
import os
import pathlib
import re
import sqlite3
import struct
import sys

# ---------------------------------------------------------------------------------------------
# Ed25519 signature verification, RFC 8032 section 5.1
# ---------------------------------------------------------------------------------------------

# The field GF(p), p = 2^255 - 19, and the order L of the base point (5.1).
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
# The curve -x^2 + y^2 = 1 + d x^2 y^2 with d = -121665/121666.
D = (-121665 * pow(121666, P - 2, P)) % P
# A square root of -1 (used when decoding a point, 5.1.3 step 3).
SQRT_M1 = pow(2, (P - 1) // 4, P)

# Points are kept in extended homogeneous coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z and
# x*y = T/Z (5.1.4).
IDENTITY = (0, 1, 1, 0)


def _recover_x(y, sign):
    """The x of the curve point with this y and x's low bit = sign, or None (5.1.3 steps 2-4)."""
    # x^2 = (y^2 - 1) / (d y^2 + 1) = u / v. v is never 0: d is not a square mod p.
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    # Candidate root x = (u/v)^((p+3)/8), computed as u v^3 (u v^7)^((p-5)/8) (one exponentiation).
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    vxx = v * x * x % P
    if vxx == u:
        pass
    elif vxx == (-u) % P:
        x = x * SQRT_M1 % P
    else:
        return None  # u/v is not a square: no point has this y
    if x == 0 and sign == 1:
        return None  # x = 0 has no negative: a non-canonical encoding
    if x & 1 != sign:
        x = P - x
    return x


def decode_point(encoded):
    """Decode a 32-byte point encoding (5.1.3); None when invalid or non-canonical."""
    if len(encoded) != 32:
        return None
    n = int.from_bytes(encoded, "little")
    sign = n >> 255
    y = n & ((1 << 255) - 1)
    if y >= P:
        return None  # y must be reduced: y >= p is a non-canonical encoding
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def encode_point(point):
    """The 32-byte encoding of a point (5.1.2): y little-endian, x's low bit in bit 255."""
    X, Y, Z, _ = point
    zinv = pow(Z, P - 2, P)
    x, y = X * zinv % P, Y * zinv % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def point_add(p1, p2):
    """p1 + p2 (5.1.4, addition in extended coordinates for a = -1)."""
    X1, Y1, Z1, T1 = p1
    X2, Y2, Z2, T2 = p2
    a = (Y1 - X1) * (Y2 - X2) % P
    b = (Y1 + X1) * (Y2 + X2) % P
    c = 2 * D * T1 * T2 % P
    d = 2 * Z1 * Z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def point_double(p1):
    """2 * p1 (5.1.4, doubling)."""
    X1, Y1, Z1, _ = p1
    a = X1 * X1 % P
    b = Y1 * Y1 % P
    c = 2 * Z1 * Z1 % P
    h = a + b
    e = h - (X1 + Y1) * (X1 + Y1)
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def scalar_mult(k, point):
    """[k]point, by double-and-add over k's bits from the most significant."""
    result = IDENTITY
    for i in range(k.bit_length() - 1, -1, -1):
        result = point_double(result)
        if (k >> i) & 1:
            result = point_add(result, point)
    return result


def point_equal(p1, p2):
    """Projective equality: x1/z1 == x2/z2 and y1/z1 == y2/z2."""
    X1, Y1, Z1, _ = p1
    X2, Y2, Z2, _ = p2
    return (X1 * Z2 - X2 * Z1) % P == 0 and (Y1 * Z2 - Y2 * Z1) % P == 0


# The base point B: y = 4/5, x "positive" (even) (5.1).
_B_Y = 4 * pow(5, P - 2, P) % P
_B_X = _recover_x(_B_Y, 0)
BASE = (_B_X, _B_Y, 1, _B_X * _B_Y % P)


def ed25519_verify(public_key, message, signature):
    """RFC 8032 5.1.7, cofactorless: [S]B == R + [k]A. Rejects S >= L and non-canonical A, R."""
    public_key, message, signature = bytes(public_key), bytes(message), bytes(signature)
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = decode_point(public_key)
    if a is None:
        return False
    r_bytes = signature[:32]
    r = decode_point(r_bytes)
    if r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    k = int.from_bytes(hashlib.sha512(r_bytes + public_key + message).digest(), "little") % L
    return point_equal(scalar_mult(s, BASE), point_add(r, scalar_mult(k, a)))


def key_id_of(public_key):
    """`key_id`: the hex of the first 8 bytes of SHA-256(public key)."""
    return hashlib.sha256(bytes(public_key)).digest()[:8].hex()


# ---------------------------------------------------------------------------------------------
# The log format
# ---------------------------------------------------------------------------------------------

RECORD_MAGIC = b"TGE1"
PURGED_MAGIC = b"TGP1"
CHECKPOINT_MAGIC = b"TGC1"
TOMBSTONE_MAGIC = b"TGT1"
HASH_LEN = 32
ZERO_HASH = bytes(HASH_LEN)


class UsageError(Exception):
    """Exit status 2: the verification could not be run at all."""


class Bad(Exception):
    """The log is not intact; carries the first bad record."""

    def __init__(self, gseq, reason, session=None, seq=None):
        super().__init__(reason)
        self.gseq, self.reason, self.session, self.seq = gseq, reason, session, seq

    def as_dict(self):
        return {"gseq": self.gseq, "session": self.session, "seq": self.seq, "reason": self.reason}

    def line(self):
        where = "gseq ?" if self.gseq is None else f"gseq {self.gseq}"
        known = []
        if self.session is not None:
            known.append(f"session {self.session}")
        if self.seq is not None:
            known.append(f"seq {self.seq}")
        if known:
            where += f" ({', '.join(known)})"
        return f"first bad record: {where}: {self.reason}"


class Record:
    """A record and its stored hash. `tombstone` is None for a record (TGE1); for a purged
    record (TGP1, no payload: `raw` is then never chained, only digested by its tombstone) it is
    the id of the tombstone it names, and `prev` the hash of the record before it it carries."""

    __slots__ = ("gseq", "at", "session", "seq", "raw", "stored_hash", "order", "tombstone",
                 "prev")

    def __init__(self, gseq, at, session, seq, raw, stored_hash, order, tombstone=None,
                 prev=None):
        self.gseq, self.at, self.session, self.seq = gseq, at, session, seq
        self.raw, self.stored_hash, self.order = raw, stored_hash, order
        self.tombstone, self.prev = tombstone, prev

    def entry(self):
        """The record's bytes followed by its stored hash, as stored (a tombstone's digest is
        over the entries of its purged records)."""
        return self.raw + self.stored_hash


class _Truncated(Exception):
    """The data ends inside a record or its hash; carries the gseq and seq when already read."""

    def __init__(self, gseq=None, seq=None):
        super().__init__()
        self.gseq, self.seq = gseq, seq


class _BadMagic(Exception):
    pass


class _Cursor:
    def __init__(self, data, offset):
        self.data, self.offset = data, offset

    def take(self, n):
        if self.offset + n > len(self.data):
            raise _Truncated()
        chunk = self.data[self.offset:self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]


def _read_record(data, offset):
    """The record (TGE1) or purged record (TGP1) and its hash at data[offset:]: (gseq, at,
    session bytes, seq, raw record bytes, stored hash, offset after the hash, tombstone id or
    None for a record, prev hash or None for a record). Raises _BadMagic or _Truncated."""
    cur = _Cursor(data, offset)
    gseq = seq = tombstone = prev = None
    try:
        magic = cur.take(4)
        if magic not in (RECORD_MAGIC, PURGED_MAGIC):
            raise _BadMagic()
        gseq = cur.unpack(">Q")
        at = cur.unpack(">q")
        session = cur.take(cur.unpack(">H"))
        seq = cur.unpack(">Q")
        if magic == RECORD_MAGIC:
            cur.take(cur.unpack(">I"))  # payload: hashed as stored, never decoded
        else:
            # No payload: the id of the tombstone vouching for it, and the hash of the record
            # before it (which binds that record to the chain through the tombstone's digest).
            tombstone = cur.unpack(">Q")
            prev = cur.take(HASH_LEN)
        raw = data[offset:cur.offset]
        stored_hash = cur.take(HASH_LEN)
    except _Truncated:
        raise _Truncated(gseq, seq) from None
    return gseq, at, session, seq, raw, stored_hash, cur.offset, tombstone, prev


def _run_label(run):
    return f"run of session {run['session']} (gseq {run['first_gseq']}..{run['last_gseq']})"


def parse_run(run, run_index):
    """Step 1 for one run: its records, or Bad for its first unreadable or misplaced record."""
    body, session, first, last = run["body"], run["session"], run["first_gseq"], run["last_gseq"]
    if not isinstance(first, int) or not isinstance(last, int) or not isinstance(session, str) \
            or not isinstance(body, bytes):
        raise Bad(first if isinstance(first, int) else None,
                  f"malformed {_run_label(run)}: session must be text, first_gseq and last_gseq "
                  f"integers, body a blob", session if isinstance(session, str) else None)
    records = []
    offset = 0
    while offset < len(body):
        start = offset
        prev = records[-1] if records else None
        # A record whose gseq cannot be read is named by the first gseq it could have.
        guess = prev.gseq + 1 if prev else first
        where = (f"at byte {start} of the {_run_label(run)}"
                 + (f", after gseq {prev.gseq}" if prev else ""))
        try:
            gseq, at, rec_session_bytes, seq, raw, stored_hash, offset, tombstone, rec_prev = \
                _read_record(body, start)
        except _BadMagic:
            raise Bad(guess, f"unreadable record {where}: bad magic (neither TGE1 nor TGP1)",
                      session) from None
        except _Truncated as t:
            raise Bad(t.gseq if t.gseq is not None else guess,
                      f"truncated record {where}: the run body ends inside the record or its "
                      f"hash", session, t.seq) from None
        try:
            rec_session = rec_session_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise Bad(gseq, f"record's session id is not UTF-8 (in the {_run_label(run)})",
                      session, seq) from None
        if rec_session != session:
            raise Bad(gseq, f"record of session {rec_session} stored in the {_run_label(run)}",
                      rec_session, seq)
        if not first <= gseq <= last:
            raise Bad(gseq, f"gseq outside its {_run_label(run)}", rec_session, seq)
        records.append(Record(gseq, at, rec_session, seq, raw, stored_hash, (run_index, start),
                              tombstone, rec_prev))
    return records


def _guess_missing(gseq, records, start=0):
    """(session, seq) of a missing gseq when exactly one session skips a seq around it.

    In a segment that does not start the log (start > 0), a session's first record in it may
    rightly have any seq, so a session with no record before the gap is not a candidate.
    """
    last_of = {}
    candidates = []
    for rec in records:  # in gseq order
        before = last_of.get(rec.session)
        last_of[rec.session] = rec
        if rec.gseq < gseq or (before is None and start > 0):
            continue
        prev_seq = before.seq if before is not None else -1
        prev_gseq = before.gseq if before is not None else -1
        if prev_gseq < gseq < rec.gseq and rec.seq > prev_seq + 1:
            candidates.append((rec.session, prev_seq + 1))
    return candidates[0] if len(candidates) == 1 else (None, None)


def _u64(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def _i64(value):
    return isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63


def tombstone_message(tid, first, last, count, digest, at, key_id):
    """The signed message of a tombstone: TGT1 ‖ id ‖ first_gseq ‖ last_gseq ‖ count ‖ digest ‖
    at ‖ key_id (str16)."""
    k = key_id.encode("utf-8")
    return (TOMBSTONE_MAGIC + struct.pack(">QQQQ", tid, first, last, count) + digest
            + struct.pack(">q", at) + struct.pack(">H", len(k)) + k)


def tombstone_digest(entries):
    """SHA-256 over the entries (purged record ‖ its 32-byte hash, as stored) of a tombstone's
    purged records, given as (gseq, entry bytes) pairs: concatenated in gseq order."""
    h = hashlib.sha256()
    for _, entry in sorted(entries, key=lambda e: e[0]):
        h.update(entry)
    return h.digest()


def _read_cover(item):
    """(gseq, tombstone id, entry bytes) of an item of a bundle tombstone's `covers`: the
    canonical base64 of exactly one purged record (TGP1) and its 32-byte hash. ValueError with
    the reason when it is not one."""
    try:
        data = base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if base64.b64encode(data).decode("ascii") != item:
        raise ValueError("not canonical base64 (padding or trailing bits)")
    try:
        gseq, _, _, _, _, _, end, tombstone, _ = _read_record(data, 0)
    except _BadMagic:
        raise ValueError("bad magic (neither TGE1 nor TGP1)") from None
    except _Truncated:
        raise ValueError("truncated (the data ends inside the purged record or its 32-byte "
                         "hash)") from None
    if tombstone is None:
        raise ValueError("a record (TGE1), not a purged record (TGP1)")
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the purged record's hash")
    return gseq, tombstone, data


def _tombstone_failure(t, naming, keys, in_bundle, duplicate, record_at):
    """Bad, named by the tombstone's first_gseq, when tombstone t does not vouch for the purged
    records naming it (`naming`, in gseq order); None when it does.

    In a store the records naming it are its whole set: they must lie within first_gseq..
    last_gseq, be `count` in number and their entries (record ‖ stored hash) give `digest`. In
    a bundle its `covers` (base64 entries) are its whole set (purged records naming it, within
    the range, giving count and digest), and each purged record of the bundle naming it must
    appear in them byte for byte.
    """
    tid, first, last, count = t["id"], t["first_gseq"], t["last_gseq"], t["count"]
    digest, at, key_id, signature = t["digest"], t["at"], t["key_id"], t["signature"]
    where = first if _u64(first) else None
    session, seq = record_at(where) if where is not None else (None, None)
    label = f"tombstone {tid} (gseq {first}..{last})"

    def bad(reason):
        return Bad(where, f"{label}: {reason}", session, seq)

    if not (_u64(tid) and _u64(first) and _u64(last) and _u64(count) and _i64(at)
            and isinstance(digest, bytes) and len(digest) == HASH_LEN
            and isinstance(key_id, str) and len(key_id.encode("utf-8", "surrogatepass")) <= 0xFFFF
            and isinstance(signature, bytes)):
        return bad("malformed tombstone (id, first_gseq, last_gseq and count must be u64s, at "
                   "an i64, digest 32 bytes, key_id text, signature a blob)")
    if duplicate:
        return bad(f"tombstone id {tid} is " + ("carried twice in the bundle" if in_bundle
                                                else "stored twice"))
    if key_id not in keys:
        return bad(f"signed by unknown key {key_id}")
    if not ed25519_verify(keys[key_id], tombstone_message(tid, first, last, count, digest, at,
                                                          key_id), signature):
        return bad(f"bad signature (key {key_id})")
    if in_bundle:
        entries = []
        for index, item in enumerate(t["covers"]):
            try:
                g, named, entry = _read_cover(item)
            except ValueError as e:
                return bad(f"malformed covers entry {index}: {e}")
            if named != tid:
                return bad(f"covers entry {index} (gseq {g}) names tombstone {named}")
            entries.append((g, entry))
        covered = {}
        for g, entry in entries:
            if g in covered:
                return bad(f"its covers list gseq {g} twice")
            covered[g] = entry
        what = "records in its covers"
    else:
        entries = [(r.gseq, r.entry()) for r in naming]
        what = "purged records name it"
    outside = sorted(g for g, _ in entries if not first <= g <= last)
    if outside:
        return bad(f"gseq {outside[0]} lies outside its range"
                   + (" (in its covers)" if in_bundle else " (a purged record naming it)"))
    if len(entries) != count:
        return bad(f"{len(entries)} {what}, its count is {count}")
    if tombstone_digest(entries) != digest:
        return bad("digest does not match "
                   + ("its covers" if in_bundle else "the purged records naming it")
                   + " (a purged record or its stored hash was changed, or a record was moved "
                     "to or from it)")
    if in_bundle:
        for rec in naming:
            if rec.gseq not in covered:
                return bad(f"purged record gseq {rec.gseq} names it but is not in its covers")
            if covered[rec.gseq] != rec.entry():
                return bad(f"purged record gseq {rec.gseq} is not byte for byte its entry in "
                           f"its covers (the purged record or its stored hash was changed)")
    return None


def check_tombstones(records, tombstones, keys, in_bundle, record_at):
    """([Bad for each tombstone that does not vouch for its records], {ids of the tombstones
    present})."""
    naming = {}
    for rec in records:  # in gseq order
        if rec.tombstone is not None:
            naming.setdefault(rec.tombstone, []).append(rec)
    times = {}
    for t in tombstones:
        times[t["id"]] = times.get(t["id"], 0) + 1
    failures = []
    for t in tombstones:
        bad = _tombstone_failure(t, naming.get(t["id"], []), keys, in_bundle,
                                 times[t["id"]] > 1, record_at)
        if bad is not None:
            failures.append(bad)
    return failures, set(times)


def _first(failures):
    """The failure with the lowest gseq (one without a gseq last); the earliest found on a tie."""
    return min(failures, key=lambda b: (b.gseq is None, b.gseq or 0))


def verify(runs, checkpoints, keys, counts=None, tombstones=()):
    """Verify the log of a store; returns a summary dict, raises Bad for the first bad record.

    runs: dicts with session, first_gseq, last_gseq, body; checkpoints: dicts with gseq, at,
    head, key_id, signature; keys: {key_id: 32-byte public key}; tombstones: dicts with id,
    first_gseq, last_gseq, count, digest, at, key_id, signature. counts, when given, receives
    "checkpoints" at once and "records" and "purged" once every run has been split (also when
    a later step fails).
    """
    if counts is not None:
        counts["checkpoints"] = len(checkpoints)
    # 1. Split every run into records and hashes; each record's session must be its run's
    #    session and its gseq within the run's range. The first bad record by gseq is reported.
    records, bad = [], []
    for index, run in enumerate(runs):
        try:
            records.extend(parse_run(run, index))
        except Bad as b:
            bad.append(b)
    if bad:
        raise _first(bad)
    if counts is not None:
        counts["records"] = len(records)
        counts["purged"] = sum(1 for r in records if r.tombstone is not None)
    return verify_records(records, checkpoints, keys, tombstones=tombstones)


def verify_records(records, checkpoints, keys, start=0, prev_hash=ZERO_HASH, what="log",
                   tombstones=()):
    """Steps 2-4 over records already read (step 1); returns the summary, raises Bad.

    The chain starts at gseq `start` from `prev_hash` (0 and 32 zero bytes for a whole log; a
    bundle's first_gseq and prev_hash for a segment). `checkpoints` are those to check, all of
    them: a bundle leaves out those before its segment. `what` names the whole in messages.
    `tombstones` are all those of the store, or of the bundle (then each with its `covers`, a
    list of base64 strings, each a purged record ‖ its hash).
    """
    # 2. Order records by gseq: start, start + 1, ... with no gap and no duplicate.
    records = sorted(records, key=lambda r: (r.gseq, r.order))
    for index, rec in enumerate(records):
        expected = start + index
        if rec.gseq == expected:
            continue
        if rec.gseq < expected:
            if index == 0:  # only in a segment: a record from before its first_gseq
                raise Bad(rec.gseq, f"record outside the {what}: gseq {rec.gseq} precedes its "
                                    f"first gseq {start}", rec.session, rec.seq)
            other = records[index - 1]  # sorted: the same gseq as the record before it
            raise Bad(rec.gseq, f"duplicate gseq: stored twice, as session {other.session} seq "
                                f"{other.seq} and as session {rec.session} seq {rec.seq}",
                      rec.session, rec.seq)
        session, seq = _guess_missing(expected, records, start)
        gap = f"{expected}" if rec.gseq == expected + 1 else f"{expected}..{rec.gseq - 1}"
        raise Bad(expected, f"record missing: gseq {gap} absent (the {what} goes on at gseq "
                            f"{rec.gseq})" + (f"; session {session} skips seq {seq}"
                                              if session is not None else ""), session, seq)

    end = start + len(records)  # the first gseq after the records

    def record_at(g):
        if start <= g < end:
            return records[g - start].session, records[g - start].seq
        return None, None

    # 3. Recompute the chain; every stored hash must equal the recomputed one. A purged record's
    #    stored hash cannot be recomputed: its prev must equal the chain value before it, and
    #    its stored hash is then the chain value at its position only if the tombstone it names
    #    vouches for it. Every tombstone is checked; the failures of this step are reported by
    #    the lowest gseq, a record's own or a failing tombstone's first_gseq.
    in_bundle = what == "bundle"
    tombstone_failures, present = check_tombstones(records, tombstones, keys, in_bundle,
                                                   record_at)
    failures = []  # the record's own failure first: on a tie with a tombstone's, it is named
    hashes = []
    previous = prev_hash
    for index, rec in enumerate(records):
        if rec.tombstone is not None:
            if rec.prev != previous:
                if index > 0:
                    before, cause = (f"gseq {rec.gseq - 1}", "the record before it was changed "
                                     "and its hash recomputed, or its prev was changed")
                elif in_bundle:
                    before, cause = ("the bundle's prev_hash", "the bundle's prev_hash is wrong, "
                                     "or its prev was changed")
                else:
                    before, cause = ("the start of the log (32 zero bytes)",
                                     "its prev was changed")
                failures.append(Bad(rec.gseq, f"purged record's prev does not match the chain "
                                              f"value of {before} ({cause})",
                                    rec.session, rec.seq))
                break
            if rec.tombstone not in present:
                failures.append(Bad(rec.gseq, f"purged record names tombstone {rec.tombstone}, "
                                              + ("which the bundle does not carry" if in_bundle
                                                 else "which is not stored"),
                                    rec.session, rec.seq))
                break
            # Vouched for by its tombstone, or that tombstone's failure is among `failures`.
            current = rec.stored_hash
        else:
            current = hashlib.sha256(previous + rec.raw).digest()
            if current != rec.stored_hash:
                cause = "the record or its hash was changed"
                if index == 0 and in_bundle:
                    cause += ", or the bundle's prev_hash is wrong"
                failures.append(Bad(rec.gseq, f"stored hash does not match the recomputed chain "
                                              f"({cause})", rec.session, rec.seq))
                break
        hashes.append(current)
        previous = current
    if failures or tombstone_failures:
        raise _first(failures + tombstone_failures)

    # 4. Every checkpoint must verify with its key, cover a record that exists, and carry that
    #    record's recomputed hash as its head. Checkpoints are taken in gseq order.

    verified_up_to = start - 1  # the highest gseq covered by a checkpoint that passed
    for cp in sorted(checkpoints, key=lambda c: (c["gseq"] if isinstance(c["gseq"], int) else -1,
                                                c["at"] if isinstance(c["at"], int) else 0)):
        gseq, at, head, key_id, signature = (cp["gseq"], cp["at"], cp["head"], cp["key_id"],
                                             cp["signature"])
        if not isinstance(gseq, int) or not 0 <= gseq < 2**64:
            raise Bad(None, f"malformed checkpoint: gseq {gseq!r} is not a u64")
        session, seq = record_at(gseq)
        label = f"checkpoint at gseq {gseq}"
        if not isinstance(key_id, str) or key_id not in keys:
            raise Bad(gseq, f"{label} is signed by unknown key {key_id}", session, seq)
        key_id_bytes = key_id.encode("utf-8")
        if not isinstance(at, int) or not -2**63 <= at < 2**63 or not isinstance(head, bytes) \
                or len(head) != HASH_LEN or len(key_id_bytes) > 0xFFFF:
            raise Bad(gseq, f"{label}: malformed checkpoint (at must be an i64, head 32 bytes)",
                      session, seq)
        message = (CHECKPOINT_MAGIC + struct.pack(">Q", gseq) + head + struct.pack(">q", at)
                   + struct.pack(">H", len(key_id_bytes)) + key_id_bytes)
        if not isinstance(signature, bytes) or not ed25519_verify(keys[key_id], message,
                                                                  signature):
            raise Bad(gseq, f"{label}: bad signature (key {key_id})", session, seq)
        if gseq >= end:
            gap = f"{end}" if gseq == end else f"{end}..{gseq}"
            after = (f"{what} truncated after gseq {end - 1}" if records
                     else f"the {what} has no record at all")
            raise Bad(end, f"{label} covers a missing record: gseq {gap} signed but absent "
                           f"({after})")
        if head != hashes[gseq - start]:
            first = verified_up_to + 1
            s, q = record_at(first)
            since = (f"gseq {start}..{verified_up_to} is attested by the checkpoint before it"
                     if verified_up_to >= start else "no earlier checkpoint attests any record")
            raise Bad(first, f"{label}: head does not match the recomputed hash of gseq {gseq}: "
                             f"rewritten range gseq {first}..{gseq} (a record in it was changed "
                             f"after being signed and the later hashes recomputed; {since})",
                      s, q)
        verified_up_to = max(verified_up_to, gseq)

    last = max((cp["gseq"] for cp in checkpoints), default=None)
    return {
        "records": len(records),
        "purged": sum(1 for r in records if r.tombstone is not None),
        "checkpoints": len(checkpoints),
        "last_checkpoint": last,
        "unsigned_tail": end - (last + 1 if last is not None else start),
    }


def _read_bundle_record(item, index, first_gseq):
    """Step 1 for a bundle's records[index]: its own run, so its session and gseq are its own.
    Bad, named by its position first_gseq + index, when it cannot be read."""
    position = first_gseq + index
    where = f"unreadable record at index {index} of the bundle (named by its position)"
    if not isinstance(item, str):
        raise Bad(position, f"{where}: not a base64 string")
    try:
        data = base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise Bad(position, f"{where}: not base64") from None
    if base64.b64encode(data).decode("ascii") != item:
        raise Bad(position, f"{where}: not canonical base64 (padding or trailing bits)")
    try:
        gseq, at, session, seq, raw, stored_hash, end, tombstone, prev = _read_record(data, 0)
    except _BadMagic:
        raise Bad(position, f"{where}: bad magic (neither TGE1 nor TGP1)") from None
    except _Truncated:
        raise Bad(position, f"{where}: truncated (the data ends inside the record or its "
                            f"32-byte hash)") from None
    if end != len(data):
        raise Bad(position, f"{where}: {len(data) - end} bytes after the record's hash")
    try:
        session = session.decode("utf-8")
    except UnicodeDecodeError:
        raise Bad(position, f"{where}: the session id is not UTF-8") from None
    return Record(gseq, at, session, seq, raw, stored_hash, (index, 0), tombstone, prev)


def verify_bundle(bundle, keys, counts=None):
    """Verify a bundle (as read_bundle returns it); returns the summary, raises Bad.

    The same steps as a store's, each record being its own run, the chain starting at
    first_gseq from prev_hash; checkpoints before the segment are ignored, and a bundle without
    any checkpoint over its segment fails. Its tombstones are checked against their covers.
    counts as for verify().
    """
    first = bundle["first_gseq"]
    checkpoints = [cp for cp in bundle["checkpoints"]
                   if not (isinstance(cp["gseq"], int) and 0 <= cp["gseq"] < first)]
    ignored = len(bundle["checkpoints"]) - len(checkpoints)
    if counts is not None:
        counts["checkpoints"] = len(checkpoints)
    # 1. Read every record; the first unreadable one, by position, is reported.
    records = [_read_bundle_record(item, index, first)
               for index, item in enumerate(bundle["records"])]
    if counts is not None:
        counts["records"] = len(records)
        counts["purged"] = sum(1 for r in records if r.tombstone is not None)
    summary = verify_records(records, checkpoints, keys, start=first,
                             prev_hash=bundle["prev_hash"], what="bundle",
                             tombstones=bundle["tombstones"])
    if not checkpoints:
        by_gseq = sorted(records, key=lambda r: r.gseq)
        session, seq = (by_gseq[0].session, by_gseq[0].seq) if by_gseq else (None, None)
        span = (f"gseq {first}..{first + len(records) - 1}" if records else "it holds no record")
        raise Bad(first, f"the bundle carries no checkpoint over its segment ({span}): nothing "
                         f"in it is signed"
                         + (f" ({ignored} checkpoint{'s' if ignored != 1 else ''} before "
                            f"first_gseq {first} ignored)" if ignored else ""), session, seq)
    return summary


# ---------------------------------------------------------------------------------------------
# Database, bundle and key file
# ---------------------------------------------------------------------------------------------

def _blob(value):
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else value


def _text(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def read_database(path, need_keys):
    """(runs, checkpoints, keys from audit_keys or None, tombstones); UsageError when it cannot
    be read. A database without audit_tombstones (older than retention) has no tombstone."""
    if not os.path.exists(path):
        raise UsageError(f"no such file: {path}")
    if not os.path.isfile(path):
        raise UsageError(f"not a file: {path}")
    uri = pathlib.Path(path).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        raise UsageError(f"cannot open {path}: {e}") from None
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        needed = ["audit_runs", "audit_checkpoints"] + (["audit_keys"] if need_keys else [])
        missing = [t for t in needed if t not in tables]
        if missing:
            raise UsageError(f"{path} is not a Tollgate audit database: no table "
                             f"{', '.join(missing)}")
        runs = [{"session": _text(s), "first_gseq": f, "last_gseq": l, "body": _blob(b)}
                for s, f, l, b in conn.execute(
                    "SELECT session, first_gseq, last_gseq, body FROM audit_runs "
                    "ORDER BY first_gseq, last_gseq, session")]
        checkpoints = [{"gseq": g, "at": a, "head": _blob(h), "key_id": _text(k),
                        "signature": _blob(s)}
                       for g, a, h, k, s in conn.execute(
                           "SELECT gseq, at, head, key_id, signature FROM audit_checkpoints")]
        tombstones = []
        if "audit_tombstones" in tables:
            tombstones = [{"id": i, "first_gseq": f, "last_gseq": l, "count": c,
                           "digest": _blob(d), "at": a, "key_id": _text(k),
                           "signature": _blob(s)}
                          for i, f, l, c, d, a, k, s in conn.execute(
                              "SELECT id, first_gseq, last_gseq, count, digest, at, key_id, "
                              "signature FROM audit_tombstones")]
        keys = None
        if need_keys:
            keys = {}
            for key_id, public_key in conn.execute(
                    "SELECT key_id, public_key FROM audit_keys"):
                key_id, public_key = _text(key_id), _blob(public_key)
                if not isinstance(public_key, bytes) or len(public_key) != 32 \
                        or key_id != key_id_of(public_key):
                    print(f"warning: audit_keys row {key_id!r} is not a 32-byte key whose id is "
                          f"the hex of the first 8 bytes of its SHA-256; ignored",
                          file=sys.stderr)
                    continue
                keys[key_id] = public_key
        return runs, checkpoints, keys, tombstones
    except sqlite3.Error as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    finally:
        conn.close()


BUNDLE_FORMAT = "tollgate-audit-bundle"
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value):
    """A JSON value in a one-line message, shortened."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def read_bundle(path, need_keys):
    """(bundle, its own keys or None); UsageError when the file is not a version 1 bundle.

    bundle: {"first_gseq": int, "prev_hash": 32 bytes, "records": the JSON list as is (each item
    is read in step 1), "checkpoints": dicts as for a store (head and signature decoded from
    hex), "keys": {key_id: bytes}, "tombstones": dicts as for a store (digest and signature
    decoded from hex) with "covers", the list of strings as is (each item, the base64 of a
    purged record ‖ its hash, is read by the verification); [] when the document has no
    "tombstones"}. Only the document's shape is checked here; whatever the verification itself
    judges (records, checkpoint and tombstone values, keys) is left to it.
    """
    if not os.path.exists(path):
        raise UsageError(f"no such file: {path}")
    if not os.path.isfile(path):
        raise UsageError(f"not a file: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None

    def bad(detail):
        return UsageError(f"{path} is not a version 1 tollgate audit bundle: {detail}")

    def hex_bytes(value, what):
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise bad(f"{what} is not a hex string")
        return bytes.fromhex(value)

    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    except (ValueError, RecursionError) as e:
        raise bad(f"not JSON ({' '.join(str(e).split())})") from None
    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    if doc.get("format") != BUNDLE_FORMAT:
        raise bad(f"format is {_shown(doc.get('format'))}, not \"{BUNDLE_FORMAT}\"")
    version = doc.get("version")
    if not _is_int(version) or version != 1:
        raise bad(f"version is {_shown(version)}, not 1")
    missing = [k for k in ("first_gseq", "prev_hash", "records", "checkpoints", "keys")
               if k not in doc]
    if missing:
        raise bad(f"no {', '.join(missing)}")
    first = doc["first_gseq"]
    if not _is_int(first) or not 0 <= first < 2**64:
        raise bad("first_gseq is not a u64")
    prev_hash = hex_bytes(doc["prev_hash"], "prev_hash")
    if len(prev_hash) != HASH_LEN:
        raise bad(f"prev_hash is {len(prev_hash)} bytes, not {HASH_LEN}")
    if not isinstance(doc["records"], list):
        raise bad("records is not a list")
    if not isinstance(doc["checkpoints"], list):
        raise bad("checkpoints is not a list")
    checkpoints = []
    for i, cp in enumerate(doc["checkpoints"]):
        what = f"checkpoints[{i}]"
        if not isinstance(cp, dict):
            raise bad(f"{what} is not an object")
        absent = [k for k in ("gseq", "at", "head", "key_id", "signature") if k not in cp]
        if absent:
            raise bad(f"{what} has no {', '.join(absent)}")
        for field in ("gseq", "at"):
            if not _is_int(cp[field]):
                raise bad(f"{what}.{field} is not an integer")
        if not isinstance(cp["key_id"], str):
            raise bad(f"{what}.key_id is not a string")
        checkpoints.append({"gseq": cp["gseq"], "at": cp["at"],
                            "head": hex_bytes(cp["head"], f"{what}.head"),
                            "key_id": cp["key_id"],
                            "signature": hex_bytes(cp["signature"], f"{what}.signature")})
    tombstones = []
    if not isinstance(doc.get("tombstones", []), list):
        raise bad("tombstones is not a list")
    for i, t in enumerate(doc.get("tombstones", [])):
        what = f"tombstones[{i}]"
        if not isinstance(t, dict):
            raise bad(f"{what} is not an object")
        absent = [k for k in ("id", "first_gseq", "last_gseq", "count", "digest", "at", "key_id",
                              "signature", "covers") if k not in t]
        if absent:
            raise bad(f"{what} has no {', '.join(absent)}")
        for field in ("id", "first_gseq", "last_gseq", "count", "at"):
            if not _is_int(t[field]):
                raise bad(f"{what}.{field} is not an integer")
        if not isinstance(t["key_id"], str):
            raise bad(f"{what}.key_id is not a string")
        if not isinstance(t["covers"], list):
            raise bad(f"{what}.covers is not a list")
        for j, item in enumerate(t["covers"]):
            if not isinstance(item, str):
                raise bad(f"{what}.covers[{j}] is not a string (the base64 of a purged record "
                          f"and its hash)")
        tombstones.append({"id": t["id"], "first_gseq": t["first_gseq"],
                           "last_gseq": t["last_gseq"], "count": t["count"],
                           "digest": hex_bytes(t["digest"], f"{what}.digest"), "at": t["at"],
                           "key_id": t["key_id"],
                           "signature": hex_bytes(t["signature"], f"{what}.signature"),
                           "covers": t["covers"]})
    if not isinstance(doc["keys"], dict):
        raise bad("keys is not an object")
    own_keys = {key_id: hex_bytes(public_key, f"keys[{_shown(key_id)}]")
                for key_id, public_key in doc["keys"].items()}
    keys = None
    if need_keys:
        keys = {}
        for key_id, public_key in own_keys.items():
            if len(public_key) != 32 or key_id != key_id_of(public_key):
                print(f"warning: bundle key {key_id!r} is not a 32-byte key whose id is the hex "
                      f"of the first 8 bytes of its SHA-256; ignored", file=sys.stderr)
                continue
            keys[key_id] = public_key
    bundle = {"first_gseq": first, "prev_hash": prev_hash, "records": doc["records"],
              "checkpoints": checkpoints, "keys": own_keys, "tombstones": tombstones}
    return bundle, keys


def read_key_file(path):
    """{key_id: public key} from 32 raw bytes or from lines `key_id hex_public_key`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UsageError(f"cannot read key file {path}: {e.strerror}") from None
    if len(data) == 32:
        return {key_id_of(data): data}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"key file {path}: neither 32 raw bytes nor text") from None
    keys = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError("expected `key_id hex_public_key`")
            key_id, public_key = fields[0].lower(), bytes.fromhex(fields[1])
            if len(public_key) != 32:
                raise ValueError("the public key is not 32 bytes")
            if key_id != key_id_of(public_key):
                raise ValueError(f"key id {key_id} is not its key's id {key_id_of(public_key)}")
            if decode_point(public_key) is None:
                raise ValueError("not a valid Ed25519 public key")
        except ValueError as e:
            raise UsageError(f"key file {path}, line {number}: {e}") from None
        keys[key_id] = public_key
    if not keys:
        raise UsageError(f"key file {path} holds no key")
    return keys


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Verify a Tollgate audit log (docs/audit-format.md) without trusting it.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", help="the tollgate.db file")
    source.add_argument("--bundle", help="an exported bundle (JSON) instead of a database")
    parser.add_argument("--key", help="pinned public key(s): 32 raw bytes, or lines "
                                      "`key_id hex_public_key`")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        pinned = read_key_file(args.key) if args.key else None
        if args.db is not None:
            runs, checkpoints, own_keys, tombstones = read_database(args.db,
                                                                    need_keys=pinned is None)
        else:
            bundle, own_keys = read_bundle(args.bundle, need_keys=pinned is None)
    except UsageError as e:
        print(f"verify_audit: error: {e}", file=sys.stderr)
        return 2
    if pinned is None:
        own = ("the database's own audit_keys table" if args.db is not None
               else "the bundle's own keys")
        print(f"warning: keys are not pinned: checkpoints are checked against {own} (pass --key "
              f"to pin the gateway's public key)", file=sys.stderr)
    keys = pinned if pinned is not None else own_keys
    counts = {"records": None, "purged": None, "checkpoints": None}
    try:
        if args.db is not None:
            summary = verify(runs, checkpoints, keys, counts, tombstones)
        else:
            summary = verify_bundle(bundle, keys, counts)
        result = dict(ok=True, **summary, first_bad=None)
    except Bad as bad:
        # A log that is not intact has no "last checkpoint" or "unsigned tail" to speak of.
        result = {"ok": False, "records": counts["records"], "purged": counts["purged"],
                  "checkpoints": counts["checkpoints"], "last_checkpoint": None,
                  "unsigned_tail": None, "first_bad": bad.as_dict()}
        failure = bad
    if args.json:
        print(json.dumps(result))
    elif result["ok"]:
        last = result["last_checkpoint"]
        signed = (f"last checkpoint at gseq {last}; {result['unsigned_tail']} records after it "
                  f"not yet signed" if last is not None
                  else f"no checkpoint yet; {result['unsigned_tail']} records not yet signed")
        purged = f" ({result['purged']} purged)" if result["purged"] else ""
        print(f"intact: {result['records']} records{purged}, {result['checkpoints']} checkpoints, "
              f"{signed}")
    else:
        print(failure.line())
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
