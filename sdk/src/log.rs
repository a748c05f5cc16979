//! Telling the operator what is happening: log lines and progress.
//!
//! Lines go to the host's log, tagged with the run. The host caps their size and number per
//! run and drops (and counts) the rest, so a chatty plugin cannot flood the operator; log
//! decisions, not every object.

use crate::bindings::warden::plugin::log as wit;

pub use wit::Level;

/// Writes `message` at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    wit::log(level, message.as_ref());
}

/// Writes a trace line.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Writes a debug line.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Writes an info line.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Writes a warning.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Writes an error line.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}

/// Reports `done` of `total` items (when the total is known), with a short label. The CLI
/// draws it as a progress bar on a terminal.
pub fn progress(done: u64, total: Option<u64>, label: impl AsRef<str>) {
    wit::progress(done, total, label.as_ref());
}
