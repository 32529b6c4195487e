#!/usr/bin/env python3
"""Writes the seed corpus under seeds/<target>/. Run from this directory: python3 gen_seeds.py"""

import base64
import hashlib
import hmac
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def cstr(s):
    return s.encode() + b"\0"


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def typed(tag, body):
    return tag + i32(len(body) + 4) + body


def startup_body(params):
    return b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"


def packet(code, body=b""):
    return i32(len(body) + 8) + i32(code) + body


def error_body(fields):
    return b"".join(t + cstr(v) for t, v in fields) + b"\0"


def scram(server_first, password="pw", client_nonce="abc"):
    """server-first, newline, the server-final a genuine server would send."""
    parts = dict(p.split("=", 1) for p in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(parts["s"]), int(parts["i"]))
    auth = f"n=,r={client_nonce},{server_first},c=biws,r={parts['r']}"
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    sig = hmac.new(server_key, auth.encode(), hashlib.sha256).digest()
    return f"{server_first}\nv={base64.b64encode(sig).decode()}".encode()


bind = (
    cstr("p1") + cstr("s1")
    + i16(2) + i16(0) + i16(1)
    + i16(2) + i32(2) + b"42" + i32(2) + b"\xde\xad"
)
bind_null = cstr("") + cstr("") + i16(0) + i16(3) + i32(1) + b"x" + i32(-1) + i32(0)
parse = cstr("s1") + cstr("select $1::int, $2") + i16(2) + i32(23) + i32(17)
execute = cstr("p1") + i32(0)
close_s = b"S" + cstr("s1")
query = cstr("select 1")
err = error_body([(b"S", "ERROR"), (b"V", "ERROR"), (b"C", "42P01"),
                  (b"M", 'relation "nope" does not exist'), (b"P", "15"), (b"F", "parse_relation.c")])
fatal = error_body([(b"S", "FATAL"), (b"V", "FATAL"), (b"C", "28P01"),
                    (b"M", 'password authentication failed for user "app"')])
user_db = [("user", "alice"), ("database", "db"), ("application_name", "psql"),
           ("client_encoding", "UTF8")]

SEEDS = {
    "startup": {
        "body": startup_body(user_db),
        "body_options": startup_body([("user", "bob"), ("options", "-c search_path=x"), ("_pq_.foo", "1")]),
        "packet_v3": packet(196608, startup_body(user_db)),
        "packet_v3_2": packet(196610, startup_body([("user", "u")])),
        "ssl_request": packet(80877103),
        "cancel_request": packet(80877102, i32(1234) + i32(5678)),
    },
    "frontend_messages": {
        "bind_body": bind,
        "bind_null_body": bind_null,
        "parse_body": parse,
        "execute_body": execute,
        "close_body": close_s,
        "extended_stream": typed(b"P", parse) + typed(b"B", bind) + typed(b"D", b"P" + cstr("p1"))
        + typed(b"E", execute) + typed(b"C", close_s) + typed(b"S", b""),
        "simple_stream": typed(b"Q", query) + typed(b"F", i32(1598) + i16(0) + i16(0) + i16(0)) + typed(b"X", b""),
        "reader_program": bytes([6, 0, 1, 2, 3 | (7 << 3), 5, 0]) + cstr("name") + i32(7) + i16(3) + b"x" + cstr("t"),
    },
    "backend_messages": {
        "error_body": err,
        "notice_body": error_body([(b"S", "NOTICE"), (b"C", "00000"), (b"M", "hello")]),
        "startup_reply": typed(b"R", i32(10) + cstr("SCRAM-SHA-256") + cstr("SCRAM-SHA-256-PLUS") + b"\0")
        + typed(b"R", i32(11) + b"r=abcXYZ,s=QSXCR+Q6sek8bf92,i=4096")
        + typed(b"R", i32(12) + b"v=AAAA")
        + typed(b"R", i32(0))
        + typed(b"S", cstr("server_version") + cstr("16.2"))
        + typed(b"K", i32(4242) + i32(-99))
        + typed(b"Z", b"I"),
        "md5_request": typed(b"R", i32(5) + b"\x01\x02\x03\x04"),
        "query_reply": typed(b"T", i16(1) + cstr("x") + i32(0) + i16(0) + i32(23) + i16(4) + i32(-1) + i16(0))
        + typed(b"D", i16(1) + i32(1) + b"1")
        + typed(b"C", cstr("SELECT 1"))
        + typed(b"E", fatal)
        + typed(b"Z", b"I"),
    },
    "framing": {
        "handshake": typed(b"R", i32(0)) + typed(b"S", cstr("TimeZone") + cstr("UTC"))
        + typed(b"K", i32(1) + i32(2)) + typed(b"Z", b"I"),
        "password": typed(b"p", cstr("tg_token_abc")),
        "truncated": typed(b"E", err)[:-3],
    },
    "scram": {
        "server_first_only": b"r=abcXYZ,s=QSXCR+Q6sek8bf92,i=4096",
        "exchange": scram("r=abcXYZ,s=QSXCR+Q6sek8bf92,i=2"),
        "exchange_extensions": scram("r=abc%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1"),
        "server_error": b"r=abcXYZ,s=QSXCR+Q6sek8bf92,i=1\ne=invalid-proof",
    },
    "url": {
        "require": b"postgres://u@127.0.0.1:5432/db?sslmode=require",
        "default_db": b"postgresql://app@db.internal",
        "escaped": b"postgres://r%C3%A9my@[::1]:6543/my%20db?sslmode=disable",
        "password": b"postgres://u:secret@host/db",
    },
    # Statements from crates/tollgate-policy/tests/corpus.tsv, all three verdicts.
    "classify": {
        "drop_table": b"DROP TABLE IF EXISTS orders CASCADE",
        "drop_nested_comment": b"DROP /* nested /* comment */ still */ TABLE orders",
        "drop_after_line_comment": b"-- comment line\nDROP TABLE orders",
        "drop_in_batch": b"SELECT 1;DROP TABLE orders;SELECT 2",
        "truncate": b"truncate orders, users restart identity cascade",
        "do_dollar_tag": b"DO $x$ BEGIN TRUNCATE orders; END $x$",
        "do_string": b"DO 'BEGIN DROP TABLE orders; END'",
        "delete_constant_where": b"DELETE FROM orders WHERE 1 = 1 OR 2 = 2",
        "update_in_cte": b"WITH u AS (UPDATE orders SET amount = 0 RETURNING id) SELECT * FROM u",
        "explain_analyze_delete": b"EXPLAIN ANALYZE DELETE FROM orders",
        "grant": b"GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO PUBLIC",
        "copy_program": b"COPY orders FROM PROGRAM 'id' WITH (FREEZE ON)",
        "server_file": b"select pg_catalog.pg_read_file('/etc/passwd', 0, 100)",
        "dblink": b"SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(a int)",
        "do_execute": b"DO $$ BEGIN EXECUTE 'DR' || 'OP TABLE orders'; END $$",
        "do_if": b"DO $$ BEGIN IF true THEN DELETE FROM orders WHERE id = 1; END IF; END $$",
        "unterminated": b"SELECT 'unterminated",
        "join": b"SELECT o.id, u.email FROM orders o JOIN users u ON u.id = o.customer_id WHERE o.amount > 10",
        "strings_and_comments": b"SELECT /* DELETE FROM orders */ 1; SELECT $$DROP TABLE orders$$ AS text",
        "upsert": b"INSERT INTO orders (id, customer_id, amount, status) VALUES (100, 1, 1, 'a') ON CONFLICT (id) DO UPDATE SET amount = 2",
        "delete_using": b"DELETE FROM orders USING users WHERE orders.customer_id = users.id AND users.email = 'gone@example.com'",
        "vacuum": b"vacuum (verbose, analyze) public.orders, users",
        "copy_stdin": b"copy orders from stdin with (format csv, header on, freeze off)",
        "session": b"BEGIN; SET statement_timeout = '5s'; SHOW search_path; COMMIT",
    },
}

# One line per detector kind from crates/tollgate-mask/tests/sensitive_values.tsv, plus a row
# of ordinary values and encoded forms.
def mask_seeds():
    seeds = {}
    path = os.path.join(HERE, "..", "crates", "tollgate-mask", "tests", "sensitive_values.tsv")
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            kind, text, _span = line.rstrip("\n").split("\t")
            seeds.setdefault(kind, text.encode())
    seeds["ordinary_row"] = b"1000000000001|1234.50|paid|2024-06-01 12:30:45+00|4f1c2b9e-8d7a-4c3b-9e2f-1a2b3c4d5e60|db-01.prod.internal"
    seeds["hex_bytea"] = b"\\x616c6963652e736d697468406578616d706c652e636f6d"
    seeds["base64"] = b"YWxpY2Uuc21pdGhAZXhhbXBsZS5jb20="
    seeds["json_row"] = b'{"id":1,"email":"alice.smith@example.com","password":"hunter2","card":"4111-1111-1111-1111"}'
    return seeds


SEEDS["mask"] = mask_seeds()


# Audit records per docs/audit-format.md: a run of two chained records, and a bundle of them.
def audit_seeds():
    import base64, hashlib, json, struct
    def record(gseq, session, seq, payload):
        s = session.encode()
        return (b"TGE1" + struct.pack(">Qq", gseq, 1_764_228_600_000_000 + gseq)
                + struct.pack(">H", len(s)) + s + struct.pack(">Q", seq)
                + struct.pack(">I", len(payload)) + payload)
    prev = bytes(32)
    body = b""
    items = []
    for g, payload in enumerate([b'{"type":"session_start"}', b'{"type":"session_end","reason":"x"}']):
        r = record(g, "s1", g, payload)
        h = hashlib.sha256(prev + r).digest()
        body += r + h
        items.append(base64.b64encode(r + h).decode())
        prev = h
    bundle = json.dumps({"format": "tollgate-audit-bundle", "version": 1, "first_gseq": 0,
                         "prev_hash": "00" * 32, "records": items, "checkpoints": [], "keys": {}})
    return {"run": body, "bundle": bundle.encode(), "record": record(7, "s", 3, b"{}")}


SEEDS["audit"] = audit_seeds()


# Bearer tokens for the oidc_token target: a token that verifies against the target's
# shared-secret issuer, its claims alone (the target also signs the input as claims), an
# unsigned token, and a JWKS document.
def oidc_token_seeds():
    import json
    def b64u(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=")
    secret = b"fuzzing-secret-fuzzing-secret-fuzzing-secret-fuzzing-secret-0123"
    claims = json.dumps({"iss": "fuzz-issuer", "sub": "alice", "aud": ["tollgate"], "azp": "cli",
                         "exp": 1800003600, "iat": 1799999990, "nbf": 1799999990,
                         "email": "a@example.com", "jti": "j1",
                         "realm_access": {"roles": ["admins", "dev"]}}).encode()
    signing_input = b64u(b'{"alg":"HS512","typ":"JWT"}') + b"." + b64u(claims)
    tag = hmac.new(secret, signing_input, hashlib.sha512).digest()
    jwks = json.dumps({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "e", "x": "A" * 43, "y": "A" * 43},
        {"kty": "OKP", "crv": "Ed25519", "kid": "o", "x": "A" * 43, "use": "sig"},
        {"kty": "RSA", "kid": "r", "n": "x" * 342, "e": "AQAB", "alg": "RS256"},
    ]}).encode()
    return {
        "hs512_token": signing_input + b"." + b64u(tag),
        "claims": claims,
        "alg_none": b64u(b'{"alg":"none"}') + b"." + b64u(claims) + b".",
        "jwks": jwks,
    }


SEEDS["oidc_token"] = oidc_token_seeds()

def shell_seeds():
    """The lines of the shell guardrail corpus (one seed per line) and a few long ones."""
    path = os.path.join(HERE, "..", "crates", "tollgate-policy", "tests", "shell_corpus.tsv")
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(l for l in f if l.strip() and not l.startswith("#")):
            _, text = line.rstrip("\n").split("\t", 1)
            out["line_%03d" % n] = text.replace("\u23ce", "\n").replace("\u21e5", "\t").encode()
    out["script"] = (b"#!/bin/sh\nset -eu\ncd /srv/app && git pull\n"
                     b"for f in *.log; do gzip \"$f\"; done\n"
                     b"if [ -d build ]; then rm -rf ./build; fi\n"
                     b"cat <<EOF > /tmp/conf\nkey=$(date)\nEOF\n"
                     b"sudo -u app env FOO=1 timeout 5 sh -c 'echo \"$(id -u)\" | tee -a /tmp/x'\n")
    out["nested"] = b"sh -c \"bash -c 'eval \\\"rm -rf /\\\"'\"" + b" | $(echo `id`) <(ls) >(cat)"
    return out


SEEDS["shell"] = shell_seeds()

def sftp_seeds():
    """SFTP streams as the `sftp` target reads them: records of a byte (bit 0: 0 from the
    client, 1 from the target; the rest: the chunk's length - 1) and the chunk."""

    def u32(v):
        return struct.pack(">I", v)

    def s(b):
        return u32(len(b)) + b

    def pkt(kind, body):
        return u32(len(body) + 1) + bytes([kind]) + body

    def req(kind, rid, *fields):
        return pkt(kind, u32(rid) + b"".join(fields))

    def chunks(direction, data, size):
        out = b""
        for i in range(0, len(data), size):
            c = data[i:i + size]
            out += bytes([direction | ((len(c) - 1) << 1)]) + c
        return out

    init = pkt(1, u32(3))
    version = pkt(2, u32(3) + s(b"posix-rename@openssh.com") + s(b"1"))
    upload = (init + req(3, 1, s(b"/tmp/up.bin"), u32(0x1A), u32(0))
              + req(6, 2, s(b"h1"), struct.pack(">Q", 0), s(b"x" * 300))
              + req(4, 3, s(b"h1")))
    upload_replies = (version + req(102, 1, s(b"h1")) + req(101, 2, u32(0), s(b"ok"), s(b""))
                      + req(101, 3, u32(0), s(b""), s(b"")))
    download = (req(3, 4, s(b"/srv/a.txt"), u32(1), u32(0))
                + req(5, 5, s(b"h2"), struct.pack(">Q", 0), u32(4096)) + req(4, 6, s(b"h2")))
    download_replies = (req(102, 4, s(b"h2")) + req(103, 5, s(b"y" * 200))
                        + req(101, 6, u32(0), s(b""), s(b"")))
    refused = (req(3, 7, s(b"/etc/secret"), u32(1), u32(0))
               + req(18, 8, s(b"/tmp/a"), s(b"/tmp/secret"))
               + req(200, 9, s(b"posix-rename@openssh.com"), s(b"/tmp/a"), s(b"/tmp/b"))
               + req(200, 10, s(b"limits@openssh.com")) + req(14, 11, s(b"/tmp/d"), u32(0))
               + req(11, 12, s(b"/tmp")) + req(13, 13, s(b"/tmp/x")))
    return {
        "upload": chunks(0, upload, 128) + chunks(1, upload_replies, 128),
        "upload_split": chunks(0, upload, 7) + chunks(1, upload_replies, 5),
        "download": chunks(0, download, 128) + chunks(1, download_replies[:40], 128)
        + chunks(0, refused, 3) + chunks(1, download_replies[40:], 9),
        "refused": chunks(0, init + refused, 64) + chunks(1, version, 64),
        "oversized": chunks(0, u32(0x00100000) + b"\x06", 128),
    }


SEEDS["sftp"] = sftp_seeds()


for target, seeds in SEEDS.items():
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
