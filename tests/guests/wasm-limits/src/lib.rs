//! `wasm-limits`: a hostile test guest that makes the host count what it logs and returns.
//! Behaviour is chosen by the first argument:
//!
//! | args | what it does |
//! |---|---|
//! | `empty-lines <n>` | writes `n` empty lines to stdout, then `Ok("wrote n")` |
//! | `empty-logs <n>` | logs `n` empty lines at info, then `Ok("logged n")` |
//! | `big-err <bytes>` | `Err` with that many `e` |

use std::io::Write as _;
use warden_sdk::{Plugin, log};

struct Limits;

warden_sdk::plugin!(Limits);

fn count(text: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|e| format!("wasm-limits: {text:?}: {e}"))
}

impl Plugin for Limits {
    fn run(args: Vec<String>) -> Result<String, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["empty-lines", n] => {
                let n = count(n)?;
                // One write of all the newlines: the host splits it into lines.
                let _ = std::io::stdout().write_all(&vec![b'\n'; n]);
                let _ = std::io::stdout().flush();
                Ok(format!("wrote {n}"))
            }
            ["empty-logs", n] => {
                let n = count(n)?;
                for _ in 0..n {
                    log::info("");
                }
                Ok(format!("logged {n}"))
            }
            ["big-err", n] => Err("e".repeat(count(n)?)),
            _ => Err(format!(
                "wasm-limits: unknown action {args:?} (actions: empty-lines, empty-logs, big-err)"
            )),
        }
    }
}
