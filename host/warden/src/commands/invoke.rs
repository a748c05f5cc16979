//! `warden invoke`: run one cmdlet as the operator, through the same Exchange session guests
//! will use, and print the results. For operators checking access and data by hand; guests
//! never reach Exchange this way.

use crate::auth_args::AuthArgs;
use crate::output::{Columns, Format, Layout, TABLE, TableWriter, escape, json_text};
use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, Value};
use std::io::Write;
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
    // A Security & Compliance cmdlet goes to its own endpoint, as a policy entry would send it.
    if let Some(endpoint) = warden_exchange::Endpoint::known_for(&args.cmdlet) {
        invocation = invocation.on(endpoint);
    }
    invocation.select = args.select.clone();
    let mut stream = exchange.start(invocation);
    let mut stdout = std::io::BufWriter::new(std::io::stdout());
    // The table is written a page at a time: its columns are chosen from the first page.
    let mut table: Option<TableWriter<std::io::BufWriter<std::io::Stdout>>> = None;
    let mut count = 0u64;
    while let Some(page) = stream
        .next_page()
        .await
        .with_context(|| format!("running {}", args.cmdlet))?
    {
        // Exchange's words, and the objects, can quote whatever someone stored in a mailbox.
        for warning in &page.warnings {
            eprintln!("warning: {}", escape(warning, Layout::Line));
        }
        for error in &page.errors {
            let error = match error.as_str() {
                Some(text) => text.to_owned(),
                None => error.to_string(),
            };
            eprintln!("error (non-terminating): {}", escape(&error, Layout::Line));
        }
        count += page.objects.len() as u64;
        match args.output {
            // Stream JSON lines so a large result never sits in memory.
            Format::Json => {
                for object in page.objects {
                    writeln!(stdout, "{}", json_text(&object, false)?)?;
                }
            }
            Format::Text => {
                let table = table.get_or_insert_with(|| {
                    TableWriter::new(
                        std::io::BufWriter::new(std::io::stdout()),
                        columns_for(&page.objects, &args.select),
                        TABLE,
                    )
                });
                for row in &page.objects {
                    table.measure(row);
                }
                for row in &page.objects {
                    table.write_row(row)?;
                }
            }
        }
    }
    let notes = table.map(TableWriter::finish).transpose()?;
    stdout.flush()?;
    drop(stdout);
    if let Some(notes) = notes {
        notes.print();
    }
    if args.output == Format::Text {
        eprintln!("{count} result(s)");
    }
    Ok(ExitCode::SUCCESS)
}

/// The table's columns: `--select`, else the usual identifying properties the first page has,
/// else the first page's first five properties.
fn columns_for(rows: &[Map<String, Value>], select: &[String]) -> Columns {
    if !select.is_empty() {
        return Columns::given(select.to_vec(), TABLE.columns);
    }
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
        Columns::given(
            rows.first()
                .map(|r| r.keys().take(5).cloned().collect())
                .unwrap_or_default(),
            TABLE.columns,
        )
    } else {
        Columns::given(present, TABLE.columns)
    }
}
