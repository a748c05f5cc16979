//! `mailbox-report`: every mailbox with its size, as JSON or CSV.
//!
//! It streams `Get-Mailbox` a page at a time (memory stays bounded by one page plus the report
//! it is writing) and asks `Get-MailboxStatistics` for each mailbox's `TotalItemSize` and
//! `ItemCount`. Arguments: `--format json|csv` (default `json`), `--limit N`.
//!
//! It only reads. It refuses unknown arguments, and stops (rather than report a partial list as
//! if it were whole) when the host refuses a call or a budget runs out; a mailbox whose
//! statistics Exchange cannot give is reported with empty sizes and a warning in the log.

use serde::Serialize;
use serde_json::{Value, json};
use warden_sdk::args::Args;
use warden_sdk::{CallError, Mailbox, MailboxStatistics, Plugin, exchange, log};

warden_sdk::manifest! {
    name = "mailbox-report",
    description = "Lists mailboxes with their size and item count, as JSON or CSV",
    cmdlets = {
        "Get-Mailbox" = ["ResultSize"],
        "Get-MailboxStatistics" = ["Identity"],
    },
}

struct MailboxReport;

warden_sdk::plugin!(MailboxReport);

/// One report line, in the column order of the CSV.
#[derive(Debug, Serialize)]
struct Row {
    #[serde(rename = "DisplayName")]
    display_name: Option<String>,
    #[serde(rename = "PrimarySmtpAddress")]
    primary_smtp_address: Option<String>,
    #[serde(rename = "RecipientTypeDetails")]
    recipient_type_details: Option<String>,
    #[serde(rename = "TotalItemSize")]
    total_item_size: Option<String>,
    #[serde(rename = "ItemCount")]
    item_count: Option<u64>,
}

const COLUMNS: [&str; 5] = [
    "DisplayName",
    "PrimarySmtpAddress",
    "RecipientTypeDetails",
    "TotalItemSize",
    "ItemCount",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

impl Plugin for MailboxReport {
    fn run(args: Vec<String>) -> Result<String, String> {
        let mut args = Args::new(args);
        let format = match args.value("format")?.as_deref() {
            None | Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(other) => return Err(format!("--format {other:?}: use json or csv")),
        };
        let limit: Option<u64> = args.parsed("limit")?;
        args.finish()?;
        if limit == Some(0) {
            return Err("--limit must be at least 1".into());
        }

        let grants = exchange::require(&[
            ("Get-Mailbox", &[]),
            ("Get-MailboxStatistics", &["Identity"]),
        ])?;
        let get_mailbox = grants
            .iter()
            .find(|g| g.cmdlet.eq_ignore_ascii_case("Get-Mailbox"))
            .ok_or("Get-Mailbox is not granted")?;

        let params = mailbox_parameters(
            limit,
            get_mailbox.max_result_size,
            get_mailbox.takes("ResultSize") || get_mailbox.max_result_size.is_some(),
        );
        let mailboxes = exchange::stream::<Mailbox>("Get-Mailbox", &params)
            .map_err(|e| format!("Get-Mailbox: {e}"))?;

        let mut out = Output::new(format);
        let mut done: u64 = 0;
        for mailbox in mailboxes {
            if limit.is_some_and(|l| done >= l) {
                // Dropping the stream abandons the rest of the call.
                break;
            }
            let mailbox =
                mailbox.map_err(|e| format!("Get-Mailbox stopped after {done} mailboxes: {e}"))?;
            let stats = statistics(&mailbox, done)?;
            out.push(Row {
                display_name: mailbox.display_name,
                primary_smtp_address: mailbox.primary_smtp_address,
                recipient_type_details: mailbox.recipient_type_details,
                total_item_size: stats.as_ref().and_then(|s| s.total_item_size.clone()),
                item_count: stats.and_then(|s| s.item_count),
            });
            done += 1;
            log::progress(done, limit, "mailboxes");
        }
        log::info(format!("reported {done} mailboxes"));
        Ok(out.finish())
    }
}

/// `Get-Mailbox` parameters: the smaller of `--limit` and the grant's bound, or `Unlimited`
/// when neither bounds it.
fn mailbox_parameters(limit: Option<u64>, max: Option<u64>, may_size: bool) -> Value {
    if !may_size {
        // The grant does not let us pass ResultSize: Exchange's default applies and `--limit`
        // is enforced here.
        return json!({});
    }
    let size = match (limit, max) {
        (Some(l), Some(m)) => json!(l.min(m)),
        (Some(l), None) => json!(l),
        (None, Some(m)) => {
            log::info(format!(
                "the grant bounds Get-Mailbox to {m} results; the report lists at most {m} mailboxes"
            ));
            json!(m)
        }
        (None, None) => json!("Unlimited"),
    };
    json!({ "ResultSize": size })
}

/// The mailbox's statistics; `None` (with a warning) when Exchange cannot give them, an error
/// when the host refuses or cannot serve the call.
fn statistics(mailbox: &Mailbox, done: u64) -> Result<Option<MailboxStatistics>, String> {
    let Some(identity) = mailbox.identity_for_calls() else {
        log::warn("a mailbox without an address or identity was reported without sizes");
        return Ok(None);
    };
    match exchange::invoke::<MailboxStatistics>(
        "Get-MailboxStatistics",
        &json!({ "Identity": identity }),
    ) {
        Ok(mut rows) => Ok(rows.pop()),
        Err(e @ (CallError::Remote { .. } | CallError::Decode { .. })) => {
            log::warn(format!("no statistics for {identity}: {e}"));
            Ok(None)
        }
        Err(e) => Err(format!(
            "Get-MailboxStatistics for {identity} failed after {done} mailboxes: {e}"
        )),
    }
}

/// The report being written, one row at a time.
struct Output {
    format: Format,
    text: String,
    rows: usize,
}

impl Output {
    fn new(format: Format) -> Self {
        let text = match format {
            Format::Json => String::from("["),
            Format::Csv => {
                let mut header = COLUMNS.join(",");
                header.push_str("\r\n");
                header
            }
        };
        Output {
            format,
            text,
            rows: 0,
        }
    }

    fn push(&mut self, row: Row) {
        match self.format {
            Format::Json => {
                if self.rows > 0 {
                    self.text.push(',');
                }
                // A struct of strings and numbers always serializes.
                self.text
                    .push_str(&serde_json::to_string(&row).unwrap_or_default());
            }
            Format::Csv => {
                let count = row.item_count.map(|n| n.to_string());
                let fields = [
                    row.display_name.as_deref(),
                    row.primary_smtp_address.as_deref(),
                    row.recipient_type_details.as_deref(),
                    row.total_item_size.as_deref(),
                    count.as_deref(),
                ];
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        self.text.push(',');
                    }
                    push_csv_field(&mut self.text, field.unwrap_or(""));
                }
                self.text.push_str("\r\n");
            }
        }
        self.rows += 1;
    }

    fn finish(mut self) -> String {
        if self.format == Format::Json {
            self.text.push(']');
        }
        self.text
    }
}

/// RFC 4180: quote a field holding a comma, quote or line break, doubling its quotes.
/// (`TotalItemSize` always holds commas: `1.2 GB (1,288,490,188 bytes)`.)
fn push_csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}
