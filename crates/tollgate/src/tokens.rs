//! `tollgate tokens`: revocation of OIDC tokens (administrators only).
//!
//! `revoke --jti ID` refuses one token from now on; `revoke --subject SUBJECT` refuses every
//! token of that subject issued until now (a token issued later is accepted again, so disable
//! the client or the person at the provider too when their credential leaked). Live sessions
//! of a revoked token are refused at their next command.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::ApiArgs;
use crate::client::Api;
use crate::table::print_table;

/// `tollgate tokens …`.
#[derive(Args)]
pub struct TokensArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: TokensCmd,
}

#[derive(Subcommand)]
enum TokensCmd {
    /// Revoke one token (--jti) or every token of a subject issued until now (--subject).
    #[command(group = clap::ArgGroup::new("which").required(true).multiple(false))]
    Revoke {
        /// The token's id (its `jti` claim; `tollgate sessions show` lists it as token_id).
        #[arg(long, group = "which")]
        jti: Option<String>,
        /// The subject as Tollgate names it (the issuer's subject_prefix followed by `sub`).
        #[arg(long, group = "which")]
        subject: Option<String>,
        /// Why (recorded with the revocation).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List revocations.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `tokens` subcommand.
pub async fn run(args: TokensArgs) -> Result<ExitCode> {
    let api: Api = args.api.into();
    match args.command {
        TokensCmd::Revoke {
            jti,
            subject,
            reason,
        } => {
            let body = match (jti, subject) {
                (Some(jti), None) => json!({"jti": jti, "reason": reason}),
                (None, Some(subject)) => json!({"subject": subject, "reason": reason}),
                _ => bail!("give --jti ID or --subject SUBJECT"),
            };
            let v = match api
                .call(reqwest::Method::POST, "/api/tokens/revoke", Some(body))
                .await?
            {
                Ok(v) => v,
                Err(f) => bail!("{} (HTTP {})", f.message, f.status),
            };
            match v["kind"].as_str() {
                Some("subject") => println!(
                    "revoked every token of subject {} issued up to {}",
                    text(&v["value"]),
                    text(&v["revoked_at"])
                ),
                _ => println!(
                    "revoked token {} at {}",
                    text(&v["value"]),
                    text(&v["revoked_at"])
                ),
            }
        }
        TokensCmd::List { json } => {
            let v = api.get("/api/tokens/revoked").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v["revocations"])?);
            } else {
                let rows: Vec<Vec<String>> = v["revocations"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|r| {
                                ["kind", "value", "revoked_at", "revoked_by", "reason"]
                                    .iter()
                                    .map(|k| text(&r[*k]))
                                    .collect()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                print_table(&["kind", "value", "revoked at", "by", "reason"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
