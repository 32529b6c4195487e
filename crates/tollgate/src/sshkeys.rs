//! `tollgate ssh-keys`: SSH public keys registered to the caller's identity, for `publickey`
//! sign-in to SSH connections.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Api;
use crate::table::print_table;

#[derive(Subcommand)]
pub enum SshKeysCmd {
    /// Register a public key (one OpenSSH line, e.g. ~/.ssh/id_ed25519.pub) to your identity:
    /// `ssh -p 2222 conn@gateway` then signs in with the key instead of a token. Ed25519 and
    /// ECDSA (P-256, P-384) keys. A key registered with an OIDC token expires with the token,
    /// within 12 hours at most.
    Add {
        /// The public key file; `-` (or nothing) reads the line from stdin.
        #[arg(long, short, value_name = "PATH")]
        file: Option<PathBuf>,
        /// The public key file (as --file).
        #[arg(value_name = "PATH", conflicts_with = "file")]
        path: Option<PathBuf>,
        /// A name for listings [default: the key's comment].
        #[arg(long)]
        name: Option<String>,
        /// Stop accepting the key after this long, e.g. 8h, 30d.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// Register it for this API key instead of yours (administrators only).
        #[arg(long, value_name = "KEY_ID")]
        key_id: Option<String>,
    },
    /// List your registered keys (administrators: every key).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a registered key by fingerprint (`SHA256:…`, as listed).
    Remove {
        /// The key's fingerprint.
        fingerprint: String,
    },
}

/// Percent-encodes a path segment (fingerprints hold `/`, `+` and `:`).
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn ok(api: &Api, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
    match api.call(method, path, body).await? {
        Ok(v) => Ok(v),
        Err(f) => bail!("{} (HTTP {})", f.message, f.status),
    }
}

/// Runs one `tollgate ssh-keys` command.
pub async fn run(api: &Api, cmd: SshKeysCmd) -> Result<ExitCode> {
    match cmd {
        SshKeysCmd::Add {
            file,
            path,
            name,
            expires,
            key_id,
        } => {
            let line = match file.or(path) {
                Some(p) if p.as_os_str() != "-" => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                _ => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("reading the public key from stdin")?;
                    s
                }
            };
            let v = ok(
                api,
                reqwest::Method::POST,
                "/api/ssh-keys",
                Some(json!({
                    "public_key": line.trim(),
                    "name": name,
                    "ttl": expires,
                    "key_id": key_id,
                })),
            )
            .await?;
            println!("fingerprint: {}", text(&v["fingerprint"]));
            println!("name:        {}", text(&v["name"]));
            println!("for:         {}", text(&v["subject"]));
            if !v["expires_at"].is_null() {
                println!("expires at:  {}", text(&v["expires_at"]));
            }
        }
        SshKeysCmd::List { json } => {
            let v = ok(api, reqwest::Method::GET, "/api/ssh-keys", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v["ssh_keys"])?);
            } else {
                let rows: Vec<Vec<String>> = v["ssh_keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        [
                            "fingerprint",
                            "name",
                            "subject",
                            "key_id",
                            "created_at",
                            "expires_at",
                        ]
                        .iter()
                        .map(|f| text(&k[*f]))
                        .collect()
                    })
                    .collect();
                print_table(
                    &["fingerprint", "name", "for", "key", "created", "expires"],
                    &rows,
                );
            }
        }
        SshKeysCmd::Remove { fingerprint } => {
            ok(
                api,
                reqwest::Method::DELETE,
                &format!("/api/ssh-keys/{}", segment(&fingerprint)),
                None,
            )
            .await?;
            println!("removed {fingerprint}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
