//! Inline masking against the real PostgreSQL: a seeded table of PII and ordinary columns read
//! through psql, a binary-result Rust driver, `COPY TO STDOUT` and `tollgate exec`; leak classes
//! (derived values, errors, notices, notifications); what the record holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use tokio_postgres::types::{FromSql, Type};

/// Clear PII seeded into `customers`: none of it may reach a masked client or the store.
const EMAILS: [&str; 4] = [
    "alice.smith@example.com",
    "bob.jones@corp-mail.net",
    "carol.o-neil@uni.example.edu",
    "dave+billing@shop.example.org",
];
const PHONES: [&str; 4] = [
    "+1 415-555-2671",
    "(212) 555-0147",
    "+44 20 7946 0958",
    "+49 30 901820",
];
const CARDS: [&str; 4] = [
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "378282246310005",
    "6011111111111117",
];
const SSNS: [&str; 4] = ["123-45-6789", "219-09-9999", "078-05-1120", "457-55-5462"];
const IBANS: [&str; 4] = [
    "DE89370400440532013000",
    "GB82WEST12345698765432",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
];
/// bcrypt hashes: the `secret-columns` rule masks the column, the `password-hash` detector the
/// values wherever they appear.
const PASSWORD_HASHES: [&str; 4] = [
    "$2b$12$353WV6VK3kQJDw3S/GFCWcB5n2Xbj9.I4hyIembiBGLxLjvGA.ZYE",
    "$2b$12$6uwzHXgpJlo/yNPdK/F58UW3WOzvMwzZ.gkAYVwKDQZ2f/ojvHHJY",
    "$2b$12$d/tt4O7PvVRlbdWSXv7IzELLCecwez8jUGOb7HhZYAGgy3dFDUitO",
    "$2b$12$JsP3oPCA6rlCAH7GlmPHH3tDOprI6HzB9/uu/HIJMezov425IBlJ7",
];
/// Values only a column rule recognises (a table rule).
const LOYALTY: [&str; 4] = [
    "LOY-TIGER-41",
    "LOY-EAGLE-17",
    "LOY-TIGER-41",
    "LOY-OTTER-99",
];

fn seed(db: &TestDb) {
    let mut sql = String::from(
        "CREATE TABLE customers (
            id bigint PRIMARY KEY,
            email text,
            phone varchar(40),
            card_number text,
            ssn text,
            iban text,
            password_hash text,
            loyalty_code text,
            birth_date date,
            contact_note text,
            amount numeric(12,2),
            status text,
            created_at timestamptz,
            order_ref uuid,
            checksum text,
            host text,
            sku text,
            notes text
        );
        CREATE UNIQUE INDEX customers_email ON customers (email);
        CREATE FUNCTION contact_notice() RETURNS int LANGUAGE plpgsql AS $$
        BEGIN
            RAISE NOTICE 'primary contact is %', (SELECT email FROM customers WHERE id = 1);
            RETURN 1;
        END $$;\n",
    );
    for i in 0..4 {
        let amount = format!("{}.{}", 1234 * (i + 1), 50 + i);
        let uuid = format!("4f1c2b9e-8d7a-4c3b-9e2f-1a2b3c4d5e6{i}");
        let sha = format!("{:064x}", 0xdead_beef_u64 * (i as u64 + 7));
        sql.push_str(&format!(
            "INSERT INTO customers VALUES ({id}, '{email}', '{phone}', '{card}', '{ssn}', '{iban}', \
             '{hash}', '{loyalty}', '19{yy}-0{m}-1{d}', 'call {phone} or mail {email}', \
             {amount}, '{status}', '2024-06-0{d} 12:30:45.123456+00', \
             '{uuid}', '{sha}', 'db-0{d}.prod.internal', 'SKU-1029{d}-B', 'order ORD-2024-00012{d} shipped');\n",
            id = 1000000000001i64 + i as i64,
            email = EMAILS[i],
            phone = PHONES[i],
            card = CARDS[i],
            ssn = SSNS[i],
            iban = IBANS[i],
            hash = PASSWORD_HASHES[i],
            loyalty = LOYALTY[i],
            yy = 70 + i,
            m = i + 1,
            d = i + 1,
            status = ["paid", "refunded", "pending", "paid"][i],
        ));
    }
    sql = sql.replace("WHERE id = 1)", "WHERE id = 1000000000001)");
    db.direct(&sql);
}

fn clear_values() -> Vec<&'static str> {
    EMAILS
        .iter()
        .chain(&PHONES)
        .chain(&CARDS)
        .chain(&SSNS)
        .chain(&IBANS)
        .chain(&PASSWORD_HASHES)
        .chain(&LOYALTY)
        .copied()
        .collect()
}

/// Values detectors find by content, wherever they appear (no column name needed).
fn detectable_values() -> Vec<&'static str> {
    EMAILS
        .iter()
        .chain(&PHONES)
        .chain(&CARDS)
        .chain(&SSNS)
        .chain(&IBANS)
        .chain(&PASSWORD_HASHES)
        .copied()
        .collect()
}

fn assert_no_clear(what: &str, output: &[u8], values: &[&str]) {
    for v in values {
        assert!(
            !contains(output, v),
            "{what}: clear value {v:?} leaked:\n{}",
            String::from_utf8_lossy(output)
        );
    }
}

const NON_PII: &str = "id, amount, status, created_at, order_ref, checksum, host, sku, notes";

fn masking_config(db: &TestDb) -> String {
    format!(
        "{}
[masking]
unmasked_groups = [\"pii-readers\"]

[[masking.columns]]
name = \"loyalty\"
tables = [\"customers.loyalty_code\"]
strategy = \"pseudonym\"

[[masking.columns]]
name = \"birth\"
tables = [\"public.customers.birth_date\"]

[[rules]]
name = \"no-pii-transforms\"
action = \"deny\"
regex = \"(?i)\\\\b(replace|translate|overlay|split_part|ascii)\\\\s*\\\\(\"
message = \"character-level transforms of masked data are not allowed\"
",
        db.connection("crm", &["eng", "pii-readers"], "disable")
    )
}

/// Any column's raw wire bytes, whatever its type.
#[derive(Debug, PartialEq)]
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

async fn binary_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<Raw>>> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<_, Option<Raw>>(i))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_is_masked_on_every_path_and_never_stored() {
    let db = TestDb::create("mask");
    seed(&db);
    let gw = Gateway::start(&masking_config(&db));
    let key = gw.create_key("agent", "eng", None);
    let all = clear_values();

    // psql, text results.
    let out = gw.psql(
        "crm",
        &key,
        "disable",
        &["-c", "SELECT * FROM customers ORDER BY id"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_clear("psql SELECT *", &out.stdout, &all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("****-****-****-4444"), "{text}");
    assert!(text.contains("***-**-6789"), "{text}");
    assert!(text.contains("a**********@*******.com"), "{text}");
    assert!(text.contains("[REDACTED:secret-columns]"), "{text}");
    assert_eq!(text.lines().count(), 4);

    // Ordinary columns are byte-identical to the direct connection.
    let direct = db.direct(&format!("SELECT {NON_PII} FROM customers ORDER BY id"));
    let out = gw.psql(
        "crm",
        &key,
        "disable",
        &[
            "-c",
            &format!("SELECT {NON_PII} FROM customers ORDER BY id"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), direct);

    // Pseudonyms: a table rule follows the source column through an alias, and equal values
    // map to equal pseudonyms (group-bys still work).
    let out = gw.psql(
        "crm",
        &key,
        "disable",
        &[
            "-c",
            "SELECT loyalty_code AS code, count(*) FROM customers GROUP BY 1 ORDER BY 2 DESC, 1",
        ],
    );
    let grouped = String::from_utf8_lossy(&out.stdout).to_string();
    assert_no_clear("pseudonyms", &out.stdout, &all);
    let lines: Vec<&str> = grouped.lines().collect();
    assert_eq!(lines.len(), 3, "{grouped}");
    assert!(
        lines[0].starts_with("loyalty_") && lines[0].ends_with("|2"),
        "{grouped}"
    );

    // A Rust driver with binary results: text types masked in place, a binary date under a
    // column rule withheld (NULL), ordinary columns identical to the direct connection's bytes.
    let client = driver(&gw, "crm", &key).await.unwrap();
    let rows = binary_rows(&client, "SELECT * FROM customers ORDER BY id").await;
    assert_eq!(rows.len(), 4);
    for row in &rows {
        for v in row.iter().flatten() {
            assert_no_clear("binary results", &v.0, &all);
        }
        assert_eq!(row[8], None, "birth_date is withheld in binary form");
    }
    let (direct_client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port=5432 user={} password={} dbname={}",
            db.role, db.password, db.db
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let sql = format!("SELECT {NON_PII} FROM customers ORDER BY id");
    assert_eq!(
        binary_rows(&client, &sql).await,
        binary_rows(&direct_client, &sql).await
    );
    // Prepared once, executed twice without a new Describe: still masked.
    let stmt = client
        .prepare("SELECT email, card_number FROM customers WHERE id = $1")
        .await
        .unwrap();
    for _ in 0..2 {
        let row = client.query_one(&stmt, &[&1000000000002i64]).await.unwrap();
        let email: String = row.get(0);
        let card: String = row.get(1);
        assert_eq!(email, "b********@*********.net");
        assert_eq!(card, "****-****-****-4444");
    }

    // COPY TO STDOUT, text and csv: detectors mask every field.
    for copy in [
        "COPY customers TO STDOUT",
        "COPY (SELECT * FROM customers) TO STDOUT WITH (FORMAT csv)",
    ] {
        let out = gw.psql("crm", &key, "disable", &["-c", copy]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
        assert_no_clear(copy, &out.stdout, &detectable_values());
    }
    // Binary COPY cannot be masked: refused with a clear error, the session goes on.
    let out = gw.psql(
        "crm",
        &key,
        "disable",
        &["-c", "COPY customers TO STDOUT WITH (FORMAT binary)"],
    );
    assert!(!out.status.success());
    assert_no_clear("binary copy", &out.stdout, &all);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("binary COPY output cannot be masked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // tollgate exec, table and JSON.
    for json in [false, true] {
        let mut args = vec!["exec", "crm", "-i", "SELECT * FROM customers"];
        if json {
            args.push("--json");
        }
        let out = gw.cli(&key, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_no_clear("tollgate exec", &out.stdout, &all);
        assert!(String::from_utf8_lossy(&out.stdout).contains("****-****-****-4444"));
    }

    // Leak classes: derived values, aggregates, JSON, encodings, errors, notices, notifications.
    for sql in [
        "SELECT email || '' AS e FROM customers",
        "SELECT upper(email), lower(iban) FROM customers",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT json_agg(c) FROM customers c",
        "SELECT string_agg(email || ' ' || phone || ' ' || card_number, ', ') FROM customers",
        "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM customers",
        "SELECT encode(convert_to(email, 'UTF8'), 'hex') FROM customers",
        "SELECT convert_to(ssn, 'UTF8') FROM customers",
        "SELECT reverse(email) FROM customers",
        "SELECT format('%s/%s', card_number, ssn) FROM customers",
        "SELECT array_agg(phone) FROM customers",
        "SELECT contact_note FROM customers",
        "SELECT contact_notice()",
    ] {
        let out = gw.psql("crm", &key, "disable", &["-c", sql]);
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty(), "{sql}: no output");
        assert_no_clear(sql, &out.stdout, &detectable_values());
        assert_no_clear(sql, &out.stderr, &detectable_values());
    }
    for sql in [
        "SELECT email::int FROM customers",
        "SELECT card_number::numeric FROM customers",
        "UPDATE customers SET email = (SELECT email FROM customers WHERE status = 'refunded') WHERE status = 'pending'",
    ] {
        let out = gw.psql("crm", &key, "disable", &["-c", sql]);
        assert!(!out.status.success(), "{sql} should fail");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("ERROR"), "{sql}: {err}");
        assert_no_clear(sql, &out.stderr, &detectable_values());
    }
    let out = gw.psql(
        "crm",
        &key,
        "disable",
        &[
            "-c",
            "LISTEN contact",
            "-c",
            "SELECT pg_notify('contact', email) FROM customers WHERE status = 'refunded'",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("Asynchronous notification"), "{said}");
    assert_no_clear("NOTIFY payload", &out.stdout, &all);
    // A class that cannot be recognised in the output is refused by a rule instead.
    let out = gw.psql(
        "crm",
        &key,
        "disable",
        &["-c", "SELECT replace(email, '@', ' at ') FROM customers"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("character-level transforms"));

    // A statement held for approval that carries a value: approvers see it masked, and the
    // approval request is stored masked (the binding still covers the exact statement).
    let typed = format!(
        "UPDATE customers SET notes = 'write to {} or {}'",
        EMAILS[0], CARDS[0]
    );
    let out = gw.psql("crm", &key, "disable", &["-c", &typed]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("approve-unbounded-write"));
    let listed = gw.cli_ok(ADMIN_KEY, &["approvals", "list", "--json"]);
    assert!(listed.contains("UPDATE customers SET notes"), "{listed}");
    assert_no_clear("approval request", listed.as_bytes(), &all);

    // The record: masked counts per statement, never values; the store holds no clear value.
    drop(client);
    let commands = gw.commands();
    let select_all = commands
        .iter()
        .find(|c| c["command"]["text"] == "SELECT * FROM customers ORDER BY id")
        .expect("the SELECT * is recorded");
    let masked = &select_all["outcome"]["masked"];
    assert_eq!(masked["secret-columns"], 4, "{select_all:#}");
    assert_eq!(masked["loyalty"], 4, "{select_all:#}");
    assert!(
        masked["pii-columns"].as_u64().unwrap() >= 20,
        "{select_all:#}"
    );
    let failed_cast = commands
        .iter()
        .find(|c| c["command"]["text"] == "SELECT email::int FROM customers")
        .unwrap();
    assert_eq!(failed_cast["outcome"]["error"]["code"], "22P02");
    assert!(failed_cast["outcome"]["masked"]["email"].as_u64().unwrap() >= 1);
    let session = gw.sessions().into_iter().next().unwrap();
    let detail = gw.session(session["id"].as_str().unwrap());
    assert_eq!(detail["events"][0]["kind"]["masking"], "on", "{detail:#}");
    let mut gw = gw;
    assert!(gw.stop());
    assert_no_clear("the data dir", &gw.all_persisted_text(), &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_groups_see_clear_values_and_the_record_says_so() {
    let db = TestDb::create("maskclear");
    seed(&db);
    let gw = Gateway::start(&masking_config(&db));
    let reader = gw.create_key("auditor", "pii-readers", None);
    let out = gw.psql(
        "crm",
        &reader,
        "disable",
        &["-c", "SELECT email, card_number FROM customers ORDER BY id"],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(EMAILS[0]) && text.contains(CARDS[1]),
        "{text}"
    );
    let sessions = gw.wait_sessions("the reader's session", |s| !s.is_empty());
    let detail = gw.session(sessions[0]["id"].as_str().unwrap());
    assert_eq!(
        detail["events"][0]["kind"]["masking"],
        "off: member of unmasked group pii-readers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_and_switches_apply_per_detector_and_connection() {
    let db = TestDb::create("maskcfg");
    seed(&db);
    let config = format!(
        "{}{}
[masking.strategies]
email = \"pseudonym\"
card = \"redact\"

[[masking.custom]]
name = \"loyalty-code\"
pattern = \"LOY-[A-Z]+-[0-9]+\"
connections = [\"crm\"]
",
        db.connection("crm", &["eng"], "disable"),
        db.connection("crm-raw", &["eng"], "disable")
            .replace("groups = [\"eng\"]", "groups = [\"eng\"]\nmasking = false")
    );
    let gw = Gateway::start(&config);
    let key = gw.create_key("agent", "eng", None);
    let query = |conn: &str| {
        let out = gw.psql(
            conn,
            &key,
            "disable",
            &["-c", "SELECT contact_note, card_number || '', notes || ' ' || loyalty_code FROM customers ORDER BY id"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = query("crm");
    assert!(first.contains("@pseudonym.invalid"), "{first}");
    assert!(first.contains("[REDACTED:card]"), "{first}");
    assert!(first.contains("[REDACTED:loyalty-code]"), "{first}");
    assert_no_clear("strategies", first.as_bytes(), &clear_values());
    // The same key gives the same pseudonyms in another session.
    assert_eq!(query("crm"), first);
    // masking = false on a connection: clear values, and recorded as such.
    let raw = query("crm-raw");
    assert!(
        raw.contains(EMAILS[0]) && raw.contains("LOY-TIGER-41"),
        "{raw}"
    );
    let sessions = gw.wait_sessions("three sessions", |s| s.len() >= 3);
    let detail = gw.session(sessions[0]["id"].as_str().unwrap());
    assert_eq!(
        detail["events"][0]["kind"]["masking"],
        "off: masking is off for connection crm-raw"
    );
}

#[test]
fn bad_masking_config_stops_the_gateway_with_the_key_named() {
    for (config, expected) in [
        (
            "[[masking.custom]]\nname = \"x\"\npattern = \"(\"\n",
            "custom detector \"x\": invalid pattern",
        ),
        (
            "[masking.strategies]\nemail = \"scramble\"\n",
            "masking.strategies.email: expected \"partial\", \"redact\" or \"pseudonym\"",
        ),
        (
            "[masking]\ndisable = [\"emails\"]\n",
            "masking.disable: \"emails\" is neither a built-in detector",
        ),
        (
            "[[masking.columns]]\nname = \"t\"\ntables = [\"justone\"]\n",
            "masking.columns[0].tables: expected table.column or schema.table.column",
        ),
        (
            "[[masking.columns]]\nname = \"t\"\ncolumns = [\"a\"]\nconnections = [\"nope\"]\n",
            "masking.columns[0].connections: no connection is named \"nope\"",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["up", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{config} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{config}: {err}");
    }
}
