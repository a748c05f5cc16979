//! `warden audit`: verify a trail's chain and compute the keyed hash of a known value, so an
//! investigator can search a trail that never holds the value itself.

use crate::output::{Format, Layout, escape, json_text};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use warden_audit::{AuditKey, keyed_hash, verify};

/// Arguments of `warden audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check every line's MAC and the chain; name the first broken line (exit 2), or report
    /// the line count (exit 0). Lines cut from the end cannot be detected without an anchor.
    Verify(VerifyArgs),
    /// Print hmac-sha256:HEX of VALUE under the audit key, to search the trail for it.
    Hash(HashArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The trail (JSON lines).
    file: PathBuf,
    #[command(flatten)]
    key: KeyArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Debug, Args)]
struct HashArgs {
    /// The value; `-` reads it from stdin (keeps it out of shell history), without the final
    /// newline.
    value: String,
    #[command(flatten)]
    key: KeyArg,
}

#[derive(Debug, Args)]
struct KeyArg {
    /// The audit key file [default: $WARDEN_AUDIT_KEY, else ~/.local/state/warden/audit.key].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

impl KeyArg {
    fn load(&self) -> anyhow::Result<AuditKey> {
        let path = match &self.key {
            Some(path) => path.clone(),
            None => warden_audit::default_key_path(
                std::env::var_os("WARDEN_AUDIT_KEY"),
                std::env::var_os("HOME"),
            )
            .context("no audit key: pass --key, or set WARDEN_AUDIT_KEY or HOME")?,
        };
        // Never create a key here: a fresh key verifies nothing and hashes to nothing found.
        Ok(AuditKey::load(&path)?)
    }
}

/// Runs the subcommand.
pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Verify(args) => {
            let key = args.key.load()?;
            let report = verify(&args.file, &key)?;
            match args.output {
                Format::Json => println!(
                    "{}",
                    json_text(
                        &json!({
                        "ok": report.ok(),
                        "lines": report.lines,
                        "first_broken_line": report.first_broken.as_ref().map(|(n, _)| n),
                            "reason": report.first_broken.as_ref().map(|(_, why)| why),
                        }),
                        true
                    )?
                ),
                Format::Text => match &report.first_broken {
                    None => println!(
                        "OK: {} line(s) verify ({})",
                        report.lines,
                        args.file.display()
                    ),
                    // The reason can quote the line's own (attacker-edited) bytes.
                    Some((line, why)) => println!(
                        "BROKEN: {}:{line}: {}",
                        args.file.display(),
                        escape(why, Layout::Line)
                    ),
                },
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        AuditCommand::Hash(args) => {
            let key = args.key.load()?;
            let value = if args.value == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the value from stdin")?;
                let trimmed = text.strip_suffix('\n').unwrap_or(&text);
                trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned()
            } else {
                args.value
            };
            if value.is_empty() {
                bail!("the value is empty");
            }
            println!("{}", keyed_hash(&key, &value));
            Ok(ExitCode::SUCCESS)
        }
    }
}
