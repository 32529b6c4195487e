//! The gateway authenticates to the target with the credential it holds: SCRAM-SHA-256, MD5,
//! trust, and TLS upstream. The machine's PostgreSQL trusts loopback, so this test starts a
//! private PostgreSQL cluster of its own whose pg_hba.conf demands each method.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

fn pg_bin(tool: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions.last().unwrap().join("bin").join(tool)
}

fn as_postgres(program: &Path, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program:?} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tg-cluster")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let port = free_port();
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        as_postgres(
            &pg_bin("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        // A self-signed certificate for the target's TLS.
        let crt = data.join("server.crt");
        let key = data.join("server.key");
        as_postgres(
            Path::new("/usr/bin/openssl"),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                crt.to_str().unwrap(),
            ],
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all tg_tls 127.0.0.1/32 scram-sha-256\n\
             host all tg_tls 127.0.0.1/32 reject\n\
             host all tg_scram 127.0.0.1/32 scram-sha-256\n\
             host all tg_md5 127.0.0.1/32 md5\n\
             host all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\nfsync = off\nmax_connections = 30",
            dir.path().display()
        )
        .unwrap();
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        as_postgres(
            &pg_bin("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                dir.path().join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Self { dir, port }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

fn connection(
    name: &str,
    role: &str,
    port: u16,
    sslmode: &str,
    password_file: Option<&Path>,
) -> String {
    let pw = password_file
        .map(|p| format!("password_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!(
        "[[connections]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"postgres://{role}@127.0.0.1:{port}/postgres?sslmode={sslmode}\"\n{pw}groups = [\"eng\"]\n\n"
    )
}

#[test]
fn scram_md5_trust_and_tls_to_the_target() {
    let cluster = Cluster::start();
    let secret = "S3cret-target-pw";
    pg_admin_on(
        cluster.port,
        &format!("CREATE ROLE tg_scram LOGIN PASSWORD '{secret}'"),
    );
    pg_admin_on(
        cluster.port,
        &format!("CREATE ROLE tg_tls LOGIN PASSWORD '{secret}'"),
    );
    pg_admin_on(
        cluster.port,
        &format!("SET password_encryption = 'md5'; CREATE ROLE tg_md5 LOGIN PASSWORD '{secret}'"),
    );
    pg_admin_on(cluster.port, "CREATE ROLE tg_trust LOGIN");

    let files = tempfile::tempdir().unwrap();
    let good = files.path().join("good");
    let bad = files.path().join("bad");
    std::fs::write(&good, format!("{secret}\n")).unwrap();
    std::fs::write(&bad, "not-the-password\n").unwrap();
    let p = cluster.port;
    let config = [
        connection("scram", "tg_scram", p, "disable", Some(&good)),
        connection("md5", "tg_md5", p, "disable", Some(&good)),
        connection("tls", "tg_tls", p, "require", Some(&good)),
        connection("trust", "tg_trust", p, "prefer", None),
        connection("wrongpw", "tg_scram", p, "disable", Some(&bad)),
        connection("nopw", "tg_scram", p, "disable", None),
    ]
    .concat();
    let mut gw = Gateway::start(&config);
    let key = gw.create_key("u", "eng", None);

    for (conn, role) in [
        ("scram", "tg_scram"),
        ("md5", "tg_md5"),
        ("tls", "tg_tls"),
        ("trust", "tg_trust"),
    ] {
        let o = gw.psql(
            conn,
            &key,
            "disable",
            &["-c", "SELECT current_user || ':' || coalesce((SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()), '?')"],
        );
        assert!(
            o.status.success(),
            "{conn}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let tls = if conn == "tls" || conn == "trust" {
            "true"
        } else {
            "false"
        };
        assert_eq!(got, format!("{role}:{tls}"), "{conn}");
    }

    // A wrong or missing target password is the gateway's problem, reported as a connection error.
    for conn in ["wrongpw", "nopw"] {
        let o = gw.psql(conn, &key, "disable", &["-c", "SELECT 1"]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(err.contains(&format!("connection \"{conn}\"")), "{err}");
        assert!(
            !err.contains("not-the-password") && !err.contains(secret),
            "{err}"
        );
    }
    assert!(gw.stop());
    let persisted = gw.all_persisted_text();
    assert!(!contains(&persisted, secret));
    assert!(!contains(&persisted, "not-the-password"));
}
