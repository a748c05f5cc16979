//! `rust-loop`: the benchmark's 1,000-call loop in Rust: `Get-Mailbox -ResultSize 1`,
//! `--count N` times (default 1000), one host call each. Output: `{"calls": N}`.
//! The Python (`python-loop`) and JavaScript (`js-loop`) guests do the same.

use serde_json::{Value, json};
use warden_sdk::args::Args;
use warden_sdk::{Plugin, exchange};

warden_sdk::manifest! {
    name = "rust-loop",
    description = "Benchmark: Get-Mailbox -ResultSize 1, --count N times",
    cmdlets = {
        "Get-Mailbox" = ["ResultSize"],
    },
}

struct RustLoop;

warden_sdk::plugin!(RustLoop);

impl Plugin for RustLoop {
    fn run(args: Vec<String>) -> Result<String, String> {
        let mut args = Args::new(args);
        let count: u32 = args.parsed("count")?.unwrap_or(1000);
        args.finish()?;
        for call in 1..=count {
            let got: Vec<Value> = exchange::invoke("Get-Mailbox", &json!({"ResultSize": 1}))
                .map_err(|e| e.to_string())?;
            if got.len() != 1 {
                return Err(format!("call {call} did not return one mailbox"));
            }
        }
        Ok(json!({ "calls": count }).to_string())
    }
}
