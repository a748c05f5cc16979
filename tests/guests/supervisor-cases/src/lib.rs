//! `supervisor-cases`: a test guest that plays a list of steps, so one limit case can be
//! written once and run as a wasm plugin and as a Rhai script (tests/all/supervisor.rs makes
//! both from the same steps). Arguments are steps, in order:
//!
//! | step | what it does |
//! |---|---|
//! | `log <n>` | logs a line of `n` `x` at info |
//! | `print <n>` | writes a line of `n` `y` to stdout |
//! | `print-lines <n> <k>` | writes `k` lines of `n` `y` to stdout in one write |
//! | `say <text>` | writes a line of `text` to stdout |
//! | `calls <n>` | calls `Get-Mailbox` (no parameters) `n` times; the first refusal ends the run with `Err("call <i> refused: <kind>")` |
//! | `spin` | a busy loop that never returns |
//! | `fail <message>` | ends the run with `Err(message)` |
//!
//! After the last step it returns `Ok("done")`.

use std::hint::black_box;
use std::io::Write as _;
use warden_sdk::{Plugin, exchange, log};

struct Cases;

warden_sdk::plugin!(Cases);

fn count(text: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|e| format!("supervisor-cases: {text:?}: {e}"))
}

impl Plugin for Cases {
    fn run(args: Vec<String>) -> Result<String, String> {
        let mut steps = args.iter().map(String::as_str);
        while let Some(step) = steps.next() {
            let mut operand = || {
                steps
                    .next()
                    .ok_or_else(|| format!("supervisor-cases: {step} needs an operand"))
            };
            match step {
                "log" => log::info("x".repeat(count(operand()?)?)),
                "print" => {
                    let line = format!("{}\n", "y".repeat(count(operand()?)?));
                    let mut stdout = std::io::stdout();
                    let _ = stdout.write_all(line.as_bytes());
                    let _ = stdout.flush();
                }
                "say" => {
                    let line = format!("{}\n", operand()?);
                    let mut stdout = std::io::stdout();
                    let _ = stdout.write_all(line.as_bytes());
                    let _ = stdout.flush();
                }
                "print-lines" => {
                    let (n, k) = (count(operand()?)?, count(operand()?)?);
                    let text = format!("{}\n", "y".repeat(n)).repeat(k);
                    let mut stdout = std::io::stdout();
                    let _ = stdout.write_all(text.as_bytes());
                    let _ = stdout.flush();
                }
                "calls" => {
                    for i in 1..=count(operand()?)? {
                        if let Err(error) = exchange::invoke_json("Get-Mailbox", "{}") {
                            return Err(format!("call {i} refused: {}", error.kind()));
                        }
                    }
                }
                "spin" => {
                    let mut x = 0u64;
                    loop {
                        // black_box keeps every iteration, so the loop cannot be removed.
                        x = black_box(x.wrapping_add(1));
                    }
                }
                "fail" => return Err(operand()?.to_owned()),
                other => return Err(format!("supervisor-cases: unknown step {other:?}")),
            }
        }
        Ok("done".to_owned())
    }
}
