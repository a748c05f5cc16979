//! `hostile-text`: a test guest that aims terminal control sequences at the operator and
//! amplifies its output, so the host's tests can show that everything a guest says is escaped
//! where it is printed and that rendering and the audit trail stay bounded. Not an example.
//!
//! Every text it emits carries [`HOSTILE`]: ESC sequences that erase and move lines, set the
//! window title and conceal text; CR and backspace; DEL; C1 controls (CSI U+009B, NEL U+0085);
//! bidi overrides and isolates; a line break followed by a forged run summary.
//!
//! | args | what it does |
//! |---|---|
//! | `show` | logs [`HOSTILE`] at info, warn and error, prints it on stdout and stderr, reports progress labelled with it, then returns a JSON list of objects whose keys and values carry it |
//! | `text` | returns [`HOSTILE`] as plain text (not JSON) |
//! | `fail` | returns `Err` with [`HOSTILE`] |
//! | `keys <n>` | returns a JSON list of `n` objects, each with its own key (`k0`, `k1`, …) |
//! | `big-param <name-bytes> <value-bytes> <times>` | calls `Get-Mailbox` `times` times with an unlisted parameter of that name and value length; returns `{"refused": n, "first_error": …}` (its first 300 characters) |
//!
//! Its manifest's `version` and `description` carry escape sequences too, and the description
//! forges a `sha256` line and a `declares` block, then conceals what follows.

use serde_json::{Map, Value, json};
use std::io::Write;
use warden_sdk::{Plugin, exchange, log};

/// What every text this guest emits carries.
pub const HOSTILE: &str = "before\u{1b}[2K\r\u{1b}[1A\u{1b}]0;pwned\u{7}\u{1b}[31mred\u{8}\u{7f}\
                           \u{9b}2J\u{85}\u{202e}desrever\u{202c}\u{2066}iso\u{2069}\r\
                           run forged (grant x): completed in 0.01 s; 0 call(s)\n[guest info] forged";

// Hand-written TOML so its strings can hold escapes (the `manifest!` literal form refuses
// them). The description forges warden's own lines, then ESC[8m conceals the rest.
warden_sdk::manifest!(
    toml = r#"name = "hostile-text"
version = "6.6.6\u001b[2K\u009b1A\u202e"
description = "A friendly report\u001b[2K\r\nsha256       0000000000000000000000000000000000000000000000000000000000000000\ndeclares\n  Get-Mailbox ResultSize\n\u001b[8m\u009b8m"

[cmdlets]
"Get-Mailbox" = ["Identity", "ResultSize"]
"#
);

struct HostileText;

warden_sdk::plugin!(HostileText);

impl Plugin for HostileText {
    fn run(args: Vec<String>) -> Result<String, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["show"] => Ok(show()),
            ["text"] => Ok(HOSTILE.to_owned()),
            ["fail"] => Err(HOSTILE.to_owned()),
            ["keys", n] => {
                let n: usize = n.parse().map_err(|e| format!("keys {n:?}: {e}"))?;
                let rows: Vec<Value> = (0..n).map(|i| json!({ format!("k{i}"): i })).collect();
                Ok(Value::Array(rows).to_string())
            }
            // `depth` nested arrays around `width` zeros: pretty-printed, each zero sits on
            // its own line behind 2 × depth spaces.
            ["nested", depth, width] => {
                let number = |n: &str| n.parse::<usize>().map_err(|e| format!("{n:?}: {e}"));
                let (depth, width) = (number(depth)?, number(width)?);
                let zeros = vec!["0"; width].join(",");
                Ok(format!("{}{zeros}{}", "[".repeat(depth), "]".repeat(depth)))
            }
            ["big-param", name, value, times] => {
                let number = |n: &str| n.parse::<usize>().map_err(|e| format!("{n:?}: {e}"));
                Ok(big_param(number(name)?, number(value)?, number(times)?))
            }
            _ => Err(
                "hostile-text: actions: show, text, fail, keys N, nested DEPTH WIDTH, \
                 big-param NAME VALUE TIMES"
                    .into(),
            ),
        }
    }
}

fn show() -> String {
    log::info(HOSTILE);
    log::warn(HOSTILE);
    log::error(HOSTILE);
    log::progress(1, Some(2), HOSTILE);
    let _ = writeln!(std::io::stdout(), "{HOSTILE}");
    let _ = std::io::stdout().flush();
    let _ = writeln!(std::io::stderr(), "{HOSTILE}");
    let rows = vec![
        json!({ "Name": HOSTILE, HOSTILE: "value under a hostile key" }),
        json!({ "Name": "plain", "Note": format!("cell {HOSTILE}") }),
    ];
    Value::Array(rows).to_string()
}

fn big_param(name_bytes: usize, value_bytes: usize, times: usize) -> String {
    let mut parameters = Map::new();
    parameters.insert("Identity".into(), json!("user1@contoso.com"));
    parameters.insert(
        format!("Unlisted{}", "N".repeat(name_bytes.saturating_sub(8))),
        json!("v".repeat(value_bytes)),
    );
    let parameters = Value::Object(parameters).to_string();
    let mut refused = 0;
    let mut first_error = Value::Null;
    for _ in 0..times {
        if let Err(error) = exchange::invoke_json("Get-Mailbox", &parameters) {
            refused += 1;
            if first_error.is_null() {
                // Its start is enough for the test; the refusal may quote the whole name.
                first_error = json!(error.to_string().chars().take(300).collect::<String>());
            }
        }
    }
    json!({ "refused": refused, "first_error": first_error }).to_string()
}
