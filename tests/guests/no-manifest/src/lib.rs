//! `no-manifest`: a test guest with no `warden:manifest` section, for the host's tests of
//! what it does with a plugin that declares nothing. `run` returns its arguments as a JSON
//! array; with `invoke <cmdlet> <params-json>` it makes that one call and returns
//! `{"ok": …}` or `{"error": <call-error>}` like the probe.

use warden_sdk::serde_json::{Value, json};
use warden_sdk::{Plugin, exchange};

struct NoManifest;

warden_sdk::plugin!(NoManifest);

impl Plugin for NoManifest {
    fn run(args: Vec<String>) -> Result<String, String> {
        if let [action, cmdlet, params] = args.as_slice()
            && action == "invoke"
        {
            let out = match exchange::invoke_json(cmdlet, params) {
                Ok(text) => json!({ "ok": serde_json_value(&text) }),
                Err(e) => json!({ "error": e }),
            };
            return Ok(out.to_string());
        }
        Ok(json!(args).to_string())
    }
}

fn serde_json_value(text: &str) -> Value {
    warden_sdk::serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}
