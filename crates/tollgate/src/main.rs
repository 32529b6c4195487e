//! `tollgate`: the gateway (`tollgate up`) and the client CLI that talks to its REST API.

mod client;
mod connect;
mod login;
mod replay;
mod sshkeys;
mod table;
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

/// Identity-aware access gateway for databases, with recorded sessions.
#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Identity-aware access gateway: databases reached through it are authenticated, decoded and recorded"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway in the foreground (embedded store, generated keys, loopback listeners).
    Up {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Where the store, signing key and TLS certificate live [default: ./.tollgate].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Manage API keys (administrators only).
    Keys {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: KeysCmd,
    },
    /// Revoke OIDC tokens by token id or subject (administrators only).
    Tokens(tokens::TokensArgs),
    /// Register SSH public keys to your identity, to sign in to SSH connections without a token.
    SshKeys {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: sshkeys::SshKeysCmd,
    },
    /// Run one command on a connection through the gateway and print the result: SQL on a
    /// PostgreSQL connection, a shell command on an SSH connection (stdout, stderr and its exit
    /// status, as `ssh host 'cmd'`).
    Exec {
        #[command(flatten)]
        api: ApiArgs,
        /// Connection name.
        connection: String,
        /// The command to run (SQL, or a shell command line); it may start with `-`.
        #[arg(long, short, allow_hyphen_values = true)]
        input: String,
        /// Print JSON instead of a table (PostgreSQL) or the output (SSH).
        #[arg(long)]
        json: bool,
        /// Most rows to return.
        #[arg(long, default_value_t = 10_000)]
        max_rows: usize,
    },
    /// Recorded sessions.
    Sessions {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: SessionsCmd,
    },
    /// Approval requests: statements that a rule holds for a human.
    Approvals {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: ApprovalsCmd,
    },
    /// Just-in-time access to connections that require a grant.
    Access {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: AccessCmd,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Open a local port that forwards to a connection; clients there need no password.
    Connect {
        #[command(flatten)]
        api: ApiArgs,
        /// Connection name.
        connection: String,
        /// Local port (0 picks a free one).
        #[arg(long, default_value_t = 5433)]
        port: u16,
    },
    /// Log in at the identity provider (OpenID Connect); other commands then use the token.
    Login(login::LoginArgs),
    /// Forget the login's tokens (and revoke them at the provider).
    Logout(login::LogoutArgs),
}

/// Where the API is and who we are.
#[derive(Args, Clone)]
struct ApiArgs {
    /// Gateway API URL.
    #[arg(
        long,
        env = "TOLLGATE_URL",
        default_value = "http://127.0.0.1:8009",
        global = true
    )]
    url: String,
    /// API key or token; without it, the token of `tollgate login`.
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key; the key is printed once, as the last line.
    Create {
        /// Who or what holds the key.
        #[arg(long)]
        name: String,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime, e.g. 30m, 8h, 7d.
        #[arg(long)]
        ttl: Option<String>,
        /// Make it an administrator key.
        #[arg(long)]
        admin: bool,
    },
    /// List keys.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke {
        /// Key id.
        id: String,
    },
}

#[derive(Subcommand)]
enum AccessCmd {
    /// Ask for access to a connection for a while; an approver grants it.
    Request {
        /// Connection name.
        connection: String,
        /// How long, e.g. 30m, 1h.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (shown to approvers).
        #[arg(long)]
        reason: String,
    },
    /// Your access requests and grants (approvers see those they may decide).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ApprovalsCmd {
    /// List requests you made or may decide (administrators see all).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only this status: pending, approved, denied, expired, used.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one request.
    Show {
        /// Request id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a request (you cannot approve your own).
    Approve {
        /// Request id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny a request.
    Deny {
        /// Request id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Wait until a request is decided; exit 0 when approved, 1 otherwise.
    Wait {
        /// Request id.
        id: String,
        /// Give up after this long (e.g. 90s, 10m).
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the audit log offline (no gateway needed): the hash chain, sequence continuity,
    /// checkpoints and their signatures. Exit 0 when intact, 1 naming the first bad record.
    Verify {
        /// The gateway's data dir.
        #[arg(long, default_value = ".tollgate")]
        data_dir: PathBuf,
        /// Verify an exported bundle instead of a data dir.
        #[arg(long, conflicts_with = "data_dir")]
        bundle: Option<PathBuf>,
        /// Pinned public keys (the gateway writes them to `signing.pub`); without it the keys
        /// stored in the log are used, which proves integrity only against accidents.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Retire the checkpoint signing key and generate a new one, used from the gateway's next
    /// start; the old key stays in the log's key list, so earlier checkpoints still verify.
    RotateKey {
        /// The gateway's data dir.
        #[arg(long, default_value = ".tollgate")]
        data_dir: PathBuf,
        /// The gateway's config file: its `[encryption]` master key opens a sealed signing key
        /// and seals the new one.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Seal the data dir's private files (signing keys, TLS key, pseudonym key) under a new
    /// master key and re-wrap the audit log's data keys under it (records are not touched),
    /// with the gateway stopped. The config's `[encryption]` section names the new key
    /// (`master_key_env` or `master_key_file`) and the old one (`previous_master_key_env` or
    /// `previous_master_key_file`); after this, the old key is no longer needed.
    RotateMasterKey {
        /// The gateway's data dir.
        #[arg(long, default_value = ".tollgate")]
        data_dir: PathBuf,
        /// The gateway's config file, with the `[encryption]` section.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write a self-contained, verifiable bundle: records, the checkpoints over them, the
    /// public keys. Records of other sessions between the selected ones are included.
    Export {
        /// The gateway's data dir.
        #[arg(long, default_value = ".tollgate")]
        data_dir: PathBuf,
        /// Only the span of this session.
        #[arg(long)]
        session: Option<String>,
        /// From this time (RFC 3339, e.g. 2026-11-27T07:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Until this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Output file (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SessionsCmd {
    /// List sessions, newest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Most sessions to list.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one session and its events.
    Show {
        /// Session id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay a session. An SSH session with a terminal recording is played in this terminal
    /// with its timing; otherwise (or with `--format text`) the timeline is printed: time since
    /// the start, each command with its verdict and (masked) result summary, file transfers,
    /// forwards, refusals, the end.
    Replay {
        /// Session id.
        id: String,
        /// `auto` (play a terminal recording, else the timeline), `text` (the timeline),
        /// `json` (the timeline, one JSON object per line), `play`, or `asciicast` (an
        /// asciicast v2 file of one channel, for `asciinema play`).
        #[arg(long, default_value = "auto", value_parser = ["auto", "text", "json", "play", "asciicast"])]
        format: String,
        /// The SSH channel to play or export (see the timeline); default: every channel
        /// (play) or the only one (asciicast).
        #[arg(long)]
        channel: Option<u64>,
        /// Write the asciicast file here instead of to stdout.
        #[arg(long, short = 'o')]
        output: Option<std::path::PathBuf>,
        /// Playback speed: 2 plays twice as fast; 0 prints without pauses.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Longest pause kept in playback, in seconds.
        #[arg(long, default_value_t = 2.0)]
        max_idle: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Parsing SQL recurses; give the workers room beyond tokio's 2 MiB default.
    builder.thread_stack_size(8 * 1024 * 1024);
    if let Some(n) = std::env::var("TOLLGATE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Up { config, data_dir } => up(config, data_dir).await,
        Cmd::Keys { api, command } => client::keys(&api.into(), command).await,
        Cmd::Tokens(args) => tokens::run(args).await,
        Cmd::SshKeys { api, command } => sshkeys::run(&api.into(), command).await,
        Cmd::Exec {
            api,
            connection,
            input,
            json,
            max_rows,
        } => client::exec(&api.into(), &connection, &input, json, max_rows).await,
        Cmd::Sessions { api, command } => client::sessions(&api.into(), command).await,
        Cmd::Approvals { api, command } => client::approvals(&api.into(), command).await,
        Cmd::Access { api, command } => client::access(&api.into(), command).await,
        Cmd::Audit {
            command:
                AuditCmd::Verify {
                    data_dir,
                    bundle,
                    key,
                    json,
                },
        } => audit_verify(&data_dir, bundle.as_deref(), key.as_deref(), json),
        Cmd::Audit {
            command: AuditCmd::RotateKey { data_dir, config },
        } => {
            let encryption = match &config {
                Some(path) => tollgate_gateway::Config::load_encryption(path)?,
                None => None,
            };
            if encryption.is_none()
                && std::fs::read(data_dir.join("signing.key"))
                    .is_ok_and(|b| tollgate_gateway::material::is_sealed_file(&b))
            {
                anyhow::bail!(
                    "cannot rotate the signing key: {} is sealed; pass --config with the gateway's config, whose [encryption] section (encryption.master_key_env or encryption.master_key_file) names the master key",
                    data_dir.join("signing.key").display()
                );
            }
            let (old, new) =
                tollgate_gateway::material::rotate_signing_key(&data_dir, encryption.as_ref())
                    .context("cannot rotate the signing key")?;
            println!(
                "retired key {old} (kept as signing-{old}.retired.key); key {new} signs from the gateway's next start, which also adds it to signing.pub"
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Audit {
            command: AuditCmd::RotateMasterKey { data_dir, config },
        } => rotate_master_key(&data_dir, &config),
        Cmd::Audit {
            command:
                AuditCmd::Export {
                    data_dir,
                    session,
                    since,
                    until,
                    out,
                },
        } => audit_export(&data_dir, session, since, until, out),
        Cmd::Connect {
            api,
            connection,
            port,
        } => connect::run(&api.into(), &connection, port).await,
        Cmd::Login(args) => login::login(args).await,
        Cmd::Logout(args) => login::logout(args).await,
    }
}

fn rotate_master_key(data_dir: &std::path::Path, config: &std::path::Path) -> Result<ExitCode> {
    let Some(encryption) = tollgate_gateway::Config::load_encryption(config)? else {
        anyhow::bail!(
            "{} has no [encryption] section: set master_key_env or master_key_file to the new master key, and previous_master_key_env or previous_master_key_file to the old one",
            config.display()
        );
    };
    let report = tollgate_gateway::material::rotate_master_key(
        data_dir,
        encryption
            .previous()
            .map(std::slice::from_ref)
            .unwrap_or(&[]),
        encryption.current(),
    )
    .context("cannot rotate the master key")?;
    let names = |files: &[PathBuf]| {
        files
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "re-sealed {} files under master key {}{}",
        report.resealed.len(),
        report.master_key_id,
        if report.resealed.is_empty() {
            String::new()
        } else {
            format!(" ({})", names(&report.resealed))
        }
    );
    if !report.sealed.is_empty() {
        println!(
            "sealed {} plain files for the first time ({})",
            report.sealed.len(),
            names(&report.sealed)
        );
    }
    println!(
        "re-wrapped {} audit data key{} under master key {}; the records are untouched",
        report.rewrapped_data_keys,
        if report.rewrapped_data_keys == 1 {
            ""
        } else {
            "s"
        },
        report.master_key_id
    );
    Ok(ExitCode::SUCCESS)
}

fn audit_export(
    data_dir: &std::path::Path,
    session: Option<String>,
    since: Option<String>,
    until: Option<String>,
    out: Option<PathBuf>,
) -> Result<ExitCode> {
    let time = |t: Option<String>| -> Result<Option<i64>> {
        t.map(|t| tollgate_core::parse_rfc3339(&t).map_err(anyhow::Error::from))
            .transpose()
    };
    let selection = tollgate_gateway::audit::Selection {
        session,
        since: time(since)?,
        until: time(until)?,
    };
    let bundle = tollgate_gateway::audit::export(data_dir, &selection)
        .context("cannot export the audit log")?;
    let text = bundle.to_json();
    match &out {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => println!("{text}"),
    }
    eprintln!(
        "bundle: records {}..={} ({} records, {} checkpoints){}",
        bundle.first,
        bundle.first + bundle.records.len().saturating_sub(1) as u64,
        bundle.records.len(),
        bundle.checkpoints.len(),
        out.map(|p| format!(" written to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(
    data_dir: &std::path::Path,
    bundle: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    json: bool,
) -> Result<ExitCode> {
    let result = match bundle {
        Some(b) => tollgate_gateway::audit::verify_bundle(b, key),
        None => tollgate_gateway::audit::verify(data_dir, key),
    };
    let v = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: cannot verify the audit log: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let r = &v.report;
    if json {
        let bad = r.first_bad.as_ref().map(|b| {
            serde_json::json!({"gseq": b.gseq, "session": b.session, "seq": b.seq, "reason": b.reason})
        });
        println!(
            "{}",
            serde_json::json!({
                "ok": r.intact(),
                "records": r.records,
                "checkpoints": r.checkpoints,
                "last_checkpoint": r.last_checkpoint,
                "unsigned_tail": r.unsigned_tail,
                "purged": r.purged,
                "keys_pinned": v.pinned,
                "first_bad": bad,
            })
        );
    } else {
        if !v.pinned {
            eprintln!(
                "warning: keys not pinned (pass --key with the gateway's signing.pub to check against a key you trust)"
            );
        }
        match &r.first_bad {
            None => println!(
                "intact: {} records, {} checkpoints, last checkpoint at gseq {}; {} records after it not yet signed",
                r.records,
                r.checkpoints,
                r.last_checkpoint
                    .map_or("none".to_string(), |g| g.to_string()),
                r.unsigned_tail
            ),
            Some(b) => {
                let place = match (&b.session, b.seq) {
                    (Some(s), Some(q)) => format!(" (session {s}, seq {q})"),
                    _ => String::new(),
                };
                println!("first bad record: gseq {}{place}: {}", b.gseq, b.reason);
            }
        }
    }
    Ok(if r.intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn up(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<ExitCode> {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // When the log cannot be written (a full disk), carry on: reporting it on stderr would
        // fail the same way, and `eprintln!` panics then.
        .log_internal_errors(false)
        .init();
    // A file that reaches a size limit must fail the write (the audit journal then refuses the
    // statement), not kill the gateway: take over SIGXFSZ (25), whose default is to terminate.
    // The handler stays installed after the stream is dropped.
    drop(tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::from_raw(25),
    ));
    // Listen for SIGINT/SIGTERM before anything binds: a signal that arrives while the gateway
    // starts is kept and answered with a clean shutdown once it is up, not the default exit.
    let stop = StopSignals::install();
    let admin_key = std::env::var("TOLLGATE_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let gateway = tollgate_gateway::Gateway::start(tollgate_gateway::UpOptions {
        config,
        data_dir,
        admin_key,
    })
    .await
    .context("cannot start the gateway")?;
    println!("tollgate {} is up", env!("CARGO_PKG_VERSION"));
    println!("  data dir:   {}", gateway.data_dir.display());
    println!("  api:        http://{}", gateway.api_addr);
    println!("  postgres:   {}", gateway.postgres_addr);
    if let Some(addr) = gateway.ssh_addr {
        println!("  ssh:        {addr}");
    }
    if let Some(key) = &gateway.generated_admin_key {
        println!("  admin key (shown once, keep it): {key}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    stop.wait().await;
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT and SIGTERM, listened for from the start.
struct StopSignals {
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => Some((int, term)),
            _ => None,
        };
        Self { streams }
    }

    async fn wait(self) {
        match self.streams {
            Some((mut int, mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
