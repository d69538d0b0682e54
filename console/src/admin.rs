//! Administrative subcommands working on the Console's data directory: `token create|list|
//! revoke`, `user set-password` and `defender decommission`. They write to the database directly, so they work
//! whether the Console runs or not; a running Console closes the streams of Defenders
//! decommissioned this way within its decommission poll (2 s), and at their next heartbeat at
//! the latest.

use std::io::Write;

use crate::cli::{DefenderCommand, TokenCommand, UserCommand};
use crate::server::{self, ServerError};
use crate::store::lifecycle::{TokenRecord, parse_handle};
use crate::store::{StoreError, TokenKind, now_ms};
use crate::web::rfc3339;

/// Why an administrative command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Prompt(#[from] crate::prompt::PromptError),
    #[error("{0}")]
    Refused(String),
}

/// Shortest password `user set-password` accepts, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Runs a `user` subcommand.
pub async fn user(command: UserCommand) -> Result<(), AdminError> {
    match command {
        UserCommand::SetPassword(args) => {
            let username = args.username.trim();
            if username.is_empty()
                || username.len() > 64
                || username
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(AdminError::Refused(
                    "--username must be 1 to 64 characters without spaces or control characters"
                        .into(),
                ));
            }
            let password =
                crate::prompt::read_new_secret(&format!("New password for {username}: "))?;
            if password.chars().count() < MIN_PASSWORD_CHARS {
                return Err(AdminError::Refused(format!(
                    "the password must have at least {MIN_PASSWORD_CHARS} characters"
                )));
            }
            let (store, _) =
                server::open_data_dir(&args.data.data_dir, args.data.database_url.as_deref())
                    .await?;
            let created = store.set_password(username, &password).await?;
            // The password itself is never echoed.
            if created {
                println!("created user {username}");
            } else {
                println!("password of {username} changed; its sessions were ended");
            }
        }
    }
    Ok(())
}

/// Runs a `token` subcommand.
pub async fn token(command: TokenCommand) -> Result<(), AdminError> {
    match command {
        TokenCommand::Create(args) => {
            let name = args.name.trim();
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(AdminError::Refused(
                    "--name must be non-empty text without control characters".into(),
                ));
            }
            let (store, _) =
                server::open_data_dir(&args.data.data_dir, args.data.database_url.as_deref())
                    .await?;
            println!("{}", store.create_token(TokenKind::Api, name, None).await?);
        }
        TokenCommand::List(args) => {
            let (store, _) =
                server::open_data_dir(&args.data.data_dir, args.data.database_url.as_deref())
                    .await?;
            let tokens = store.list_tokens().await?;
            let now = now_ms();
            let mut out = std::io::stdout().lock();
            if args.json {
                let list: Vec<serde_json::Value> =
                    tokens.iter().map(|t| token_json(t, now)).collect();
                writeln!(out, "{}", serde_json::Value::Array(list))?;
            } else {
                write!(out, "{}", token_table(&tokens, now))?;
            }
        }
        TokenCommand::Revoke(args) => {
            let (store, _) =
                server::open_data_dir(&args.data.data_dir, args.data.database_url.as_deref())
                    .await?;
            let mut failed = Vec::new();
            for id in &args.ids {
                let revoked = if let Some((kind, n)) = parse_handle(id) {
                    store.revoke_token_id(kind, n).await?
                } else if id.starts_with("dfe_") {
                    store.revoke_token(TokenKind::Enrollment, id).await?
                } else if id.starts_with("dfa_") {
                    store.revoke_token(TokenKind::Api, id).await?
                } else {
                    false
                };
                // A token given in clear is never echoed.
                let shown = if id.starts_with("dfe_") || id.starts_with("dfa_") {
                    "the given token"
                } else {
                    id.as_str()
                };
                if revoked {
                    println!("revoked {shown}");
                } else {
                    failed.push(shown.to_owned());
                }
            }
            if !failed.is_empty() {
                return Err(AdminError::Refused(format!(
                    "not revoked (unknown or already revoked): {}",
                    failed.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// Runs a `defender` subcommand.
pub async fn defender(command: DefenderCommand) -> Result<(), AdminError> {
    match command {
        DefenderCommand::Decommission(args) => {
            let (store, _) =
                server::open_data_dir(&args.data.data_dir, args.data.database_url.as_deref())
                    .await?;
            let mut unknown = Vec::new();
            for id in &args.ids {
                match store.get_defender(id).await? {
                    None => unknown.push(id.clone()),
                    Some(_) => {
                        if store.decommission_defender(id).await? {
                            println!("decommissioned {id}");
                        } else {
                            println!("{id} was decommissioned already");
                        }
                    }
                }
            }
            if !unknown.is_empty() {
                return Err(AdminError::Refused(format!(
                    "no such Defender: {}",
                    unknown.join(", ")
                )));
            }
        }
    }
    Ok(())
}

fn token_json(t: &TokenRecord, now: i64) -> serde_json::Value {
    serde_json::json!({
        "id": t.handle(),
        "kind": t.kind,
        "name": t.description,
        "created_at": rfc3339(t.created_at),
        "expires_at": t.expires_at.map(rfc3339),
        "last_used_at": t.last_used_at.map(rfc3339),
        "revoked_at": t.revoked_at.map(rfc3339),
        "uses": t.uses,
        "state": t.state(now),
    })
}

/// The `token list` table: one line per token, columns padded.
fn token_table(tokens: &[TokenRecord], now: i64) -> String {
    let opt = |v: Option<i64>, none: &str| v.map(rfc3339).unwrap_or_else(|| none.to_owned());
    let mut rows = vec![[
        "ID".to_owned(),
        "KIND".to_owned(),
        "NAME".to_owned(),
        "CREATED".to_owned(),
        "EXPIRES".to_owned(),
        "LAST USED".to_owned(),
        "USES".to_owned(),
        "STATE".to_owned(),
    ]];
    for t in tokens {
        // Names are operator text; control characters would garble the terminal.
        let name: String = t
            .description
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(40)
            .collect();
        rows.push([
            t.handle(),
            t.kind.clone(),
            name,
            rfc3339(t.created_at),
            opt(t.expires_at, "never"),
            opt(t.last_used_at, "never"),
            if t.kind == "api" {
                "-".to_owned()
            } else {
                t.uses.to_string()
            },
            t.state(now).to_owned(),
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
