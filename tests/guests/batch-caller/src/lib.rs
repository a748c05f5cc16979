//! `batch-caller`: a test guest that makes one `exchange.invoke-batch` call of the calls its
//! arguments give, so the host's tests can show each call of a batch is judged as if made
//! alone (tests/all/batch_guests.rs).
//!
//! | args | output |
//! |---|---|
//! | `batch <calls-json>` | calls-json is `[[cmdlet, params-json-text], …]`; answers `{"results": [{"ok": [objects]} \| {"error": <call-error>}, …], "usage": {…}}`, or `{"error": <call-error>}` when the host refused the batch whole |
//! | `repeat <n> <cmdlet> <params-json>` | the same call n times in one batch, answered like `batch` |

use serde_json::{Value, json};
use warden_sdk::exchange::{self, BatchCall};
use warden_sdk::{CallError, Plugin};

warden_sdk::manifest! {
    name = "batch-caller",
    description = "Test guest: one batch of the calls its arguments give",
    cmdlets = {
        "Get-Mailbox" = ["Identity", "ResultSize", "RecipientTypeDetails", "Filter"],
        "Set-Mailbox" = ["Identity", "DisplayName", "HiddenFromAddressListsEnabled"],
        "Get-Recipient" = ["Identity", "ResultSize"],
        "Get-AcceptedDomain" = ["Identity"],
        "Get-OrganizationConfig" = [],
    },
}

struct BatchCaller;

warden_sdk::plugin!(BatchCaller);

impl Plugin for BatchCaller {
    fn run(args: Vec<String>) -> Result<String, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let calls = match args.as_slice() {
            ["batch", calls] => {
                let calls: Vec<(String, String)> = serde_json::from_str(calls)
                    .map_err(|e| format!("batch: give [[cmdlet, params-json], …]: {e}"))?;
                calls
                    .iter()
                    .map(|(cmdlet, params)| BatchCall::json(cmdlet, params))
                    .collect::<Vec<_>>()
            }
            ["repeat", n, cmdlet, params] => {
                let n: usize = n.parse().map_err(|e| format!("repeat {n:?}: {e}"))?;
                vec![BatchCall::json(cmdlet, params); n]
            }
            _ => {
                return Err(
                    "batch-caller: batch <calls-json> | repeat <n> <cmdlet> <params-json>".into(),
                );
            }
        };
        let answer = match exchange::invoke_batch::<Value>(&calls) {
            Ok(results) => {
                let results: Vec<Value> = results
                    .into_iter()
                    .map(|r| match r {
                        Ok(objects) => json!({ "ok": objects }),
                        Err(e) => json!({ "error": error_json(&e) }),
                    })
                    .collect();
                json!({ "results": results, "usage": exchange::usage() })
            }
            Err(e) => json!({ "error": error_json(&e) }),
        };
        Ok(answer.to_string())
    }
}

fn error_json(e: &CallError) -> Value {
    serde_json::to_value(e).unwrap_or_else(|_| json!({"kind": e.kind()}))
}
