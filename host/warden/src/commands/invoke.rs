//! `warden invoke`: run one cmdlet as the operator, through the same Exchange session guests
//! will use, and print the results. For operators checking access and data by hand; guests
//! never reach Exchange this way.

use crate::auth_args::AuthArgs;
use crate::output::Format;
use anyhow::{Context, bail};
use clap::Args;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;
use std::process::ExitCode;
use warden_auth::config::Environment;
use warden_exchange::{Invocation, ParamValue, Parameters};

/// Arguments of `warden invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    #[command(flatten)]
    auth: AuthArgs,
    /// The cmdlet, e.g. Get-Mailbox.
    cmdlet: String,
    /// A parameter as NAME=VALUE; VALUE is JSON when it parses as JSON (10, true, ["a","b"], {"Add":"x"}), else a string. Repeatable.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Properties to return ($select), comma-separated.
    #[arg(long, value_delimiter = ',')]
    select: Vec<String>,
    /// Page size (Prefer: odata.maxpagesize), 1..=1000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// How to write a `-p` parameter, for messages.
pub const PARAM_FIX: &str = "write -p NAME=VALUE, e.g. -p ResultSize=10 (VALUE is JSON when it \
                             parses as JSON, else a string)";

/// Parses `NAME=VALUE` parameters.
pub fn parse_params(raw: &[String]) -> anyhow::Result<Parameters> {
    let mut parameters = Parameters::new();
    for item in raw {
        let Some((name, value)) = item.split_once('=') else {
            bail!("parameter '{item}' is not NAME=VALUE\n  fix: {PARAM_FIX}")
        };
        let name = name.trim().trim_start_matches('-');
        if name.is_empty() {
            bail!("parameter '{item}' has no name\n  fix: {PARAM_FIX}");
        }
        let value = serde_json::from_str::<Value>(value)
            .map(|v| ParamValue::from_json(&v))
            .unwrap_or_else(|_| ParamValue::String(value.to_owned()));
        // PowerShell names are case-insensitive: `ResultSize` and `resultsize` are one parameter.
        if let Some(first) = parameters.keys().find(|k| k.eq_ignore_ascii_case(name)) {
            bail!(
                "parameter '{name}' is given twice (also as '{first}')\n  fix: give each \
                 parameter once"
            );
        }
        parameters.insert(name.to_owned(), value);
    }
    Ok(parameters)
}

/// Runs the subcommand.
pub async fn run(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let env = Environment::from_process();
    let parameters = parse_params(&args.params)?;
    let exchange =
        args.auth
            .resolve(&env)?
            .exchange(&env, args.auth.transport, Some(args.page_size))?;
    let mut invocation = Invocation::new(&args.cmdlet, parameters);
    invocation.select = args.select.clone();
    let mut stream = exchange.start(invocation);
    let mut rows = Vec::new();
    while let Some(page) = stream
        .next_page()
        .await
        .with_context(|| format!("running {}", args.cmdlet))?
    {
        for warning in &page.warnings {
            eprintln!("warning: {warning}");
        }
        for error in &page.errors {
            eprintln!(
                "error (non-terminating): {}",
                error
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| error.to_string())
            );
        }
        match args.output {
            // Stream JSON lines so a large result never sits in memory.
            Format::Json => {
                for object in page.objects {
                    println!("{}", Value::Object(object));
                }
            }
            Format::Text => rows.extend(page.objects),
        }
    }
    if args.output == Format::Text {
        print_table(&rows, &args.select);
        eprintln!("{} result(s)", rows.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[serde_json::Map<String, Value>], select: &[String]) {
    let columns: Vec<String> = if !select.is_empty() {
        select.to_vec()
    } else {
        let preferred = [
            "Identity",
            "DisplayName",
            "PrimarySmtpAddress",
            "RecipientTypeDetails",
            "User",
            "AccessRights",
            "Name",
        ];
        let present: Vec<String> = preferred
            .iter()
            .filter(|p| rows.iter().any(|r| r.contains_key(**p)))
            .map(|p| p.to_string())
            .collect();
        if present.is_empty() {
            rows.first()
                .map(|r| r.keys().take(5).cloned().collect())
                .unwrap_or_default()
        } else {
            present
        }
    };
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(160)
        .set_header(columns.clone());
    for row in rows {
        table.add_row(columns.iter().map(|c| match row.get(c) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }));
    }
    println!("{table}");
}
