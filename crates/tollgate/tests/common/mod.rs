//! Test harness: a real gateway process (`tollgate up`), real PostgreSQL roles and databases
//! created per test, and the real clients (psql, pgbench, the CLI, tokio-postgres).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod oidc;
pub mod sshd;

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs SQL as the `postgres` superuser on the machine's PostgreSQL (127.0.0.1:5432).
pub fn pg_admin(sql: &str) -> String {
    pg_admin_on(5432, sql)
}

/// Runs SQL as the `postgres` superuser on a given local port.
pub fn pg_admin_on(port: u16, sql: &str) -> String {
    psql_direct(port, "postgres", "postgres", None, sql)
}

/// Runs SQL directly against a local PostgreSQL (not through the gateway); panics on failure.
fn psql_direct(port: u16, user: &str, db: &str, password: Option<&str>, sql: &str) -> String {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
    ])
    .arg(port.to_string())
    .args(["-U", user, "-d", db, "-c", sql])
    .env("PGSSLMODE", "disable");
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let out = cmd.output().expect("psql runs");
    assert!(
        out.status.success(),
        "SQL as {user} failed: {sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A role and database of its own on the machine's PostgreSQL, dropped at the end.
pub struct TestDb {
    pub role: String,
    pub db: String,
    pub password: String,
    pub port: u16,
}

impl TestDb {
    pub fn create(prefix: &str) -> Self {
        Self::create_on(5432, prefix)
    }

    pub fn create_on(port: u16, prefix: &str) -> Self {
        let role = unique(prefix);
        let password = format!("pw-{}-secret", unique("up"));
        pg_admin_on(
            port,
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        );
        pg_admin_on(port, &format!("CREATE DATABASE {role} OWNER {role}"));
        Self {
            db: role.clone(),
            role,
            password,
            port,
        }
    }

    /// Runs SQL in this database as its owner, directly (not through the gateway).
    pub fn direct(&self, sql: &str) -> String {
        psql_direct(self.port, &self.role, &self.db, Some(&self.password), sql)
    }

    /// A `[[connections]]` block for this database.
    pub fn connection(&self, name: &str, groups: &[&str], sslmode: &str) -> String {
        let env = format!("TG_PW_{}", self.role.to_uppercase());
        // SAFETY of the process environment: each test uses distinct variable names, and the
        // value is only read by child processes spawned afterwards.
        unsafe { std::env::set_var(&env, &self.password) };
        format!(
            "[[connections]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"postgres://{}@127.0.0.1:{}/{}?sslmode={sslmode}\"\npassword_env = \"{env}\"\ngroups = [{}]\n\n",
            self.role,
            self.port,
            self.db,
            groups
                .iter()
                .map(|g| format!("\"{g}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .args([
                "-d",
                "postgres",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
                "-c",
                &format!("DROP ROLE IF EXISTS {}", self.role),
            ])
            .env("PGSSLMODE", "disable")
            .output();
    }
}

/// A running `tollgate up`.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub api_port: u16,
    pub pg_port: u16,
    pub ssh_port: u16,
    child: Option<Child>,
}

impl Gateway {
    /// The running gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Starts a gateway with the given extra config (connections, sections).
    pub fn start(extra_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra_config)
    }

    /// Starts a gateway in an existing directory (to restart on the same data).
    pub fn start_in(dir: tempfile::TempDir, extra_config: &str) -> Self {
        let mut gw = Self {
            dir,
            api_port: 0,
            pg_port: 0,
            ssh_port: 0,
            child: None,
        };
        gw.launch(extra_config);
        gw
    }

    /// Stops the gateway and starts it again on the same data dir (new ports).
    pub fn restart(&mut self, extra_config: &str) {
        assert!(self.stop(), "the gateway stopped cleanly");
        self.launch(extra_config);
    }

    fn launch(&mut self, extra_config: &str) {
        self.api_port = free_port();
        self.pg_port = free_port();
        self.ssh_port = free_port();
        let config = format!(
            "[listen]\napi = \"127.0.0.1:{}\"\npostgres = \"127.0.0.1:{}\"\nssh = \"127.0.0.1:{}\"\n\n{extra_config}",
            self.api_port, self.pg_port, self.ssh_port
        );
        let config_path = self.dir.path().join("tollgate.toml");
        std::fs::write(&config_path, config).unwrap();
        self.spawn(&config_path);
    }

    fn spawn(&mut self, config_path: &Path) {
        let stdout = std::fs::File::create(self.dir.path().join("stdout.log")).unwrap();
        let stderr = std::fs::File::create(self.dir.path().join("stderr.log")).unwrap();
        let child = Command::new(BIN)
            .args(["up", "--config"])
            .arg(config_path)
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
            .env("TOLLGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.stdout().contains("is up") {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gateway exited with {status}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("gateway did not start:\n{}", self.stderr());
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Runs the CLI against this gateway with a key.
    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("TOLLGATE_URL", self.url())
            .env("TOLLGATE_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the CLI and returns stdout, asserting success.
    pub fn cli_ok(&self, token: &str, args: &[&str]) -> String {
        let out = self.cli(token, args);
        assert!(
            out.status.success(),
            "tollgate {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Creates a key with the admin key and returns it.
    pub fn create_key(&self, name: &str, groups: &str, ttl: Option<&str>) -> String {
        let mut args = vec!["keys", "create", "--name", name, "--groups", groups];
        if let Some(t) = ttl {
            args.extend(["--ttl", t]);
        }
        let out = self.cli_ok(ADMIN_KEY, &args);
        out.lines().last().unwrap().trim().to_string()
    }

    /// A libpq connection string to a connection through this gateway.
    pub fn dsn(&self, connection: &str, key: &str, sslmode: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={connection} user=tester password={key} sslmode={sslmode}",
            self.pg_port
        )
    }

    /// Runs psql through the gateway.
    pub fn psql(&self, connection: &str, key: &str, sslmode: &str, args: &[&str]) -> Output {
        Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(format!(
                "host=127.0.0.1 port={} dbname={connection} user=tester sslmode={sslmode}",
                self.pg_port
            ))
            .args(args)
            .env("PGPASSWORD", key)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Sessions as JSON, via the CLI, newest first.
    pub fn sessions(&self) -> Vec<serde_json::Value> {
        let out = self.cli_ok(
            ADMIN_KEY,
            &["sessions", "list", "--json", "--limit", "1000"],
        );
        serde_json::from_str(&out).unwrap()
    }

    /// One session with its events.
    pub fn session(&self, id: &str) -> serde_json::Value {
        let out = self.cli_ok(ADMIN_KEY, &["sessions", "show", id, "--json"]);
        serde_json::from_str(&out).unwrap()
    }

    /// Every command event recorded across sessions.
    pub fn commands(&self) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        for s in self.sessions() {
            let detail = self.session(s["id"].as_str().unwrap());
            for e in detail["events"].as_array().unwrap() {
                if e["kind"]["type"] == "command" {
                    all.push(e["kind"].clone());
                }
            }
        }
        all
    }

    /// Waits until a predicate over the sessions holds (events are written asynchronously).
    pub fn wait_sessions(
        &self,
        what: &str,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.sessions();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; sessions: {s:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the gateway with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        false
    }

    /// Bytes of every file in the data dir plus the logs, for secret searches.
    pub fn all_persisted_text(&self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    all.extend(std::fs::read(&p).unwrap_or_default());
                }
            }
        }
        all
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Connects tokio-postgres through the gateway (no TLS) and drives the connection in a task.
pub async fn driver(
    gw: &Gateway,
    connection: &str,
    key: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) =
        tokio_postgres::connect(&gw.dsn(connection, key, "disable"), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The SQLSTATE of a tokio-postgres error.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}
