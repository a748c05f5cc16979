//! Rendering shared by subcommands: the output format flag and the diagnosis table.

use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use warden_auth::diagnose::{Check, Status};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    #[default]
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// A table of checks: status, name, what was found, the fix.
pub fn checks_table(checks: &[Check]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["", "check", "finding", "fix"]);
    if let Ok(width) = std::env::var("COLUMNS").unwrap_or_default().parse::<u16>() {
        table.set_width(width);
    } else {
        table.set_width(120);
    }
    for check in checks {
        table.add_row(vec![
            status_cell(check.status),
            Cell::new(check.name),
            Cell::new(&check.detail),
            Cell::new(check.fix.as_deref().unwrap_or("")),
        ]);
    }
    table
}

/// A coloured PASS/FAIL/WARN/SKIP cell.
pub fn status_cell(status: Status) -> Cell {
    match status {
        Status::Pass => Cell::new("PASS").fg(Color::Green),
        Status::Fail => Cell::new("FAIL").fg(Color::Red),
        Status::Warn => Cell::new("WARN").fg(Color::Yellow),
        Status::Skip => Cell::new("SKIP").fg(Color::DarkGrey),
    }
}
