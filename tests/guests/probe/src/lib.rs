//! `probe`: a test guest whose behaviour the host's integration tests choose by its first
//! argument. It is deliberately hostile where asked (spinning, allocating, recursing, flooding)
//! so the host's limits can be shown to hold; it is not an example of a plugin.
//!
//! Actions and their output (the `run` result; JSON unless said otherwise):
//!
//! | args | output |
//! |---|---|
//! | `invoke <cmdlet> <params-json>` | `{"ok": [results]}` or `{"error": <call-error>}` |
//! | `stream <cmdlet> <params-json>` | `{"pages": n, "objects": n}`, plus `"error": <call-error>` when it failed (counts are what arrived before) |
//! | `grants` | `[{"cmdlet", "rule", "parameters", "write", "max_result_size", "output", "target_parameter"}]` |
//! | `usage` | `{"calls", "writes", "objects", "output_bytes"}` |
//! | `spin` | never returns (busy loop) |
//! | `alloc` | never returns (grows memory 1 MiB at a time, touching every page) |
//! | `recurse` | never returns (unbounded recursion) |
//! | `panic` | panics with `probe: panic on purpose` |
//! | `stdout-flood` | never returns (prints lines to stdout) |
//! | `log-flood` | never returns (logs lines) |
//! | `big-output <bytes>` | a string of that many `x` |
//! | `env` | `{"vars": {name: value}, "args": [..]}` |
//! | `files` | `{"read_dir": text, "read_passwd": text, "create": text}` (`ok: …` or `error: …`) |
//! | `clock` | `{"system_time": text, "instant_elapsed_nanos": n, "wall_subsec_nanos": [n, …]}` |
//! | `sleep <ms>` | sleeps (a WASI monotonic-clock subscription), then `{"slept_ms": n}` |
//! | `escape` | `{attempt: "ok: …" or "error: …"}` for every ambient-authority attempt (see `escape`) |
//! | `big-call <what> <n>` | an oversized call built in the guest, answered like `invoke`, plus `"sent_bytes"` |
//! | `call-spam <n> <cmdlet> <params-json>` | `{"attempted": n, "succeeded": n, "failed": n, "first_error": <call-error> or null}` |
//! | `fail <message>` | `Err(message)` |
//! | `echo-args` | the arguments after the action, as a JSON array |
//!
//! A call-error is `{"kind": "denied", "rule": …, "reason": …}`, `{"kind": "invalid",
//! "message": …}`, `{"kind": "budget", "budget": …, "limit": n}`, `{"kind": "throttled",
//! "retry_after_ms": n|null}`, `{"kind": "remote", "error_id", "exception", "message",
//! "request_id"}`, `{"kind": "timeout", "after_ms": n}`, `{"kind": "outcome-unknown",
//! "message": …}` or `{"kind": "unavailable", "message": …}`.
//!
//! Parameters are passed to the host as given, unchecked, so tests can send malformed JSON.
//! An unknown action is an error naming the known ones.

use std::hint::black_box;
use std::io::Write;

use serde_json::{Map, Value, json};
use warden_sdk::{CallError, Plugin, exchange, log};

// Declares every cmdlet exosim implements, with its parameters (and the common parameters
// the tests use), EXCEPT `Set-OrganizationConfig` and Set-Mailbox's `Type`: those two let the
// host's tests show that a granted but undeclared cmdlet or parameter is refused.
warden_sdk::manifest! {
    name = "probe",
    description = "Test guest for the warden host's integration tests",
    cmdlets = {
        "Get-Mailbox" = ["Identity", "ResultSize", "RecipientTypeDetails", "Filter"],
        "Set-Mailbox" = ["Identity", "DisplayName", "HiddenFromAddressListsEnabled", "ProhibitSendQuota",
                         "GrantSendOnBehalfTo", "EmailAddresses", "WhatIf", "Confirm"],
        "New-Mailbox" = ["Name", "Alias", "PrimarySmtpAddress", "DisplayName", "Shared", "Room",
                         "MicrosoftOnlineServicesID", "Password", "ResetPasswordOnNextLogon", "FirstName", "LastName"],
        "Remove-Mailbox" = ["Identity", "Permanent", "Confirm"],
        "Get-MailboxStatistics" = ["Identity"],
        "Get-MailboxPermission" = ["Identity", "User", "ResultSize"],
        "Add-MailboxPermission" = ["Identity", "User", "AccessRights", "InheritanceType", "AutoMapping", "Confirm"],
        "Remove-MailboxPermission" = ["Identity", "User", "AccessRights", "InheritanceType", "Confirm"],
        "Get-RecipientPermission" = ["Identity", "Trustee", "AccessRights", "ResultSize"],
        "Add-RecipientPermission" = ["Identity", "Trustee", "AccessRights", "Confirm"],
        "Remove-RecipientPermission" = ["Identity", "Trustee", "AccessRights", "Confirm"],
        "Get-Recipient" = ["Identity", "ResultSize", "RecipientTypeDetails", "Filter"],
        "Get-DistributionGroup" = ["Identity", "ResultSize", "Filter"],
        "Get-DistributionGroupMember" = ["Identity", "ResultSize"],
        "Add-DistributionGroupMember" = ["Identity", "Member", "BypassSecurityGroupManagerCheck"],
        "Remove-DistributionGroupMember" = ["Identity", "Member", "BypassSecurityGroupManagerCheck", "Confirm"],
        "Get-AcceptedDomain" = ["Identity"],
        "Get-OrganizationConfig" = [],
    },
}

struct Probe;

warden_sdk::plugin!(Probe);

const ACTIONS: &str = "invoke, stream, grants, usage, spin, alloc, recurse, panic, stdout-flood, \
                       log-flood, big-output, env, files, clock, sleep, escape, big-call, call-spam, \
                       fail, echo-args";

impl Plugin for Probe {
    fn run(args: Vec<String>) -> Result<String, String> {
        let Some((action, rest)) = args.split_first() else {
            return Err(format!("probe: give an action: {ACTIONS}"));
        };
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        match (action.as_str(), rest.as_slice()) {
            ("invoke", [cmdlet, params]) => Ok(invoke(cmdlet, params).to_string()),
            ("stream", [cmdlet, params]) => Ok(stream(cmdlet, params).to_string()),
            ("grants", []) => to_json(&exchange::grants()),
            ("usage", []) => to_json(&exchange::usage()),
            ("spin", []) => spin(),
            ("alloc", []) => alloc(),
            ("recurse", []) => Ok(recurse(0).to_string()),
            ("panic", []) => panic!("probe: panic on purpose"),
            ("stdout-flood", []) => stdout_flood(),
            ("log-flood", []) => log_flood(),
            ("big-output", [bytes]) => {
                let n: usize = bytes
                    .parse()
                    .map_err(|e| format!("big-output {bytes:?}: {e}"))?;
                Ok("x".repeat(n))
            }
            ("env", []) => Ok(env().to_string()),
            ("files", []) => Ok(files().to_string()),
            ("clock", []) => Ok(clock().to_string()),
            ("sleep", [ms]) => {
                let ms: u64 = ms.parse().map_err(|e| format!("sleep {ms:?}: {e}"))?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(json!({ "slept_ms": ms }).to_string())
            }
            ("escape", []) => Ok(escape().to_string()),
            ("big-call", [what, n]) => {
                let n: usize = n.parse().map_err(|e| format!("big-call {n:?}: {e}"))?;
                big_call(what, n)
            }
            ("call-spam", [n, cmdlet, params]) => {
                let n: u64 = n.parse().map_err(|e| format!("call-spam {n:?}: {e}"))?;
                Ok(call_spam(n, cmdlet, params).to_string())
            }
            ("fail", [message]) => Err((*message).to_owned()),
            ("echo-args", words) => to_json(&words),
            (other, _) => Err(format!(
                "probe: unknown action or wrong arguments: {other} {} (actions: {ACTIONS})",
                rest.join(" ")
            )),
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

fn error_json(e: &CallError) -> Value {
    serde_json::to_value(e).unwrap_or_else(|_| json!({"kind": e.kind()}))
}

fn invoke(cmdlet: &str, params: &str) -> Value {
    match exchange::invoke_json(cmdlet, params) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(results) => json!({ "ok": results }),
            // The host promised a JSON array; show what it sent if not.
            Err(_) => json!({ "ok_unparsed": text }),
        },
        Err(e) => json!({ "error": error_json(&e) }),
    }
}

fn stream(cmdlet: &str, params: &str) -> Value {
    let mut pages = 0u64;
    let mut objects = 0u64;
    let raw = match exchange::stream_json(cmdlet, params) {
        Ok(raw) => raw,
        Err(e) => return json!({ "pages": 0, "objects": 0, "error": error_json(&e) }),
    };
    for page in raw {
        match page {
            Ok(text) => {
                pages += 1;
                objects += serde_json::from_str::<Vec<Value>>(&text).map_or(0, |v| v.len() as u64);
            }
            Err(e) => {
                return json!({ "pages": pages, "objects": objects, "error": error_json(&e) });
            }
        }
    }
    json!({ "pages": pages, "objects": objects })
}

fn call_spam(n: u64, cmdlet: &str, params: &str) -> Value {
    let mut succeeded = 0u64;
    let mut first_error = Value::Null;
    for _ in 0..n {
        match exchange::invoke_json(cmdlet, params) {
            Ok(_) => succeeded += 1,
            Err(e) if first_error.is_null() => first_error = error_json(&e),
            Err(_) => {}
        }
    }
    json!({ "attempted": n, "succeeded": succeeded, "failed": n - succeeded, "first_error": first_error })
}

fn spin() -> Result<String, String> {
    let mut x = 0u64;
    loop {
        // black_box makes every iteration observable, so the loop cannot be removed.
        x = black_box(x.wrapping_add(1));
    }
}

fn alloc() -> Result<String, String> {
    const CHUNK: usize = 1 << 20;
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        // Touch every 4 KiB page so the memory is really used, not just reserved.
        for i in (0..CHUNK).step_by(4096) {
            chunk[i] = 1;
        }
        held.push(black_box(chunk));
    }
}

#[allow(
    unconditional_recursion,
    reason = "the probe exists to overflow the stack"
)]
fn recurse(depth: u64) -> u64 {
    // A frame with a buffer the optimizer must keep, and work after the call, so this is
    // neither a loop nor a tail call.
    let frame = black_box([depth; 32]);
    let below = recurse(black_box(depth + 1));
    below.wrapping_add(frame[(depth % 32) as usize])
}

fn stdout_flood() -> Result<String, String> {
    let mut out = std::io::stdout();
    let mut i = 0u64;
    loop {
        // Errors are ignored: the host, not a closed pipe, has to stop this.
        let _ = writeln!(out, "probe stdout line {i}");
        i = black_box(i + 1);
    }
}

fn log_flood() -> Result<String, String> {
    let mut i = 0u64;
    loop {
        log::info(format!("probe log line {i}"));
        i = black_box(i + 1);
    }
}

fn env() -> Value {
    let vars: Map<String, Value> = std::env::vars().map(|(k, v)| (k, Value::from(v))).collect();
    let args: Vec<String> = std::env::args().collect();
    json!({ "vars": vars, "args": args })
}

fn outcome<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> String {
    match r {
        Ok(v) => format!("ok: {v:?}"),
        Err(e) => format!("error: {e}"),
    }
}

fn files() -> Value {
    let read_dir = std::fs::read_dir("/").map(|entries| {
        entries
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
    });
    let read_passwd = std::fs::read_to_string("/etc/passwd").map(|t| format!("{} bytes", t.len()));
    let create = std::fs::File::create("/tmp/x").map(|_| "created /tmp/x");
    json!({
        "read_dir": outcome(read_dir),
        "read_passwd": outcome(read_passwd),
        "create": outcome(create),
    })
}

fn clock() -> Value {
    let now = std::time::SystemTime::now();
    let start = std::time::Instant::now();
    black_box(spin_briefly());
    let elapsed = start.elapsed();
    // Several readings, so a test can see the wall clock's resolution.
    let wall_subsec_nanos: Vec<u32> = (0..8)
        .map(|_| {
            black_box(spin_briefly());
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        })
        .collect();
    json!({
        "system_time": outcome(now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs())),
        "instant_elapsed_nanos": elapsed.as_nanos() as u64,
        "wall_subsec_nanos": wall_subsec_nanos,
    })
}

/// Every way a std program reaches outside itself that compiles without `wasi:sockets`
/// (importing sockets would stop the probe from loading at all; the `sockets` guest covers it).
fn escape() -> Value {
    use std::io::Read;
    let read_dir = |path: &str| {
        std::fs::read_dir(path).map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
        })
    };
    let mut stdin = Vec::new();
    let stdin = std::io::stdin()
        .read_to_end(&mut stdin)
        .map(|n| format!("{n} bytes"));
    json!({
        "env_client_secret": outcome(std::env::var("AZURE_CLIENT_SECRET")),
        "env_vars": outcome(Ok::<_, String>(std::env::vars_os().count())),
        "args": outcome(Ok::<_, String>(std::env::args_os().count())),
        "current_dir": outcome(std::env::current_dir()),
        "read_dir_root": outcome(read_dir("/")),
        "read_dir_dot": outcome(read_dir(".")),
        "read_proc_environ": outcome(std::fs::read("/proc/self/environ").map(|b| b.len())),
        "read_audit_key": outcome(std::fs::read("audit.key").map(|b| b.len())),
        "read_etc_hosts": outcome(std::fs::read_to_string("/etc/hosts").map(|t| t.len())),
        "create_file": outcome(std::fs::File::create("/tmp/warden-escape")),
        "stdin": outcome(stdin),
        "spawn_thread": outcome(std::thread::Builder::new().spawn(|| 1).map(|h| h.join().is_ok())),
        "spawn_process": outcome(std::process::Command::new("/bin/sh").arg("-c").arg("id").output().map(|o| o.status.success())),
    })
}

/// One oversized call, built here so the test does not pass megabytes through `run`'s args.
fn big_call(what: &str, n: usize) -> Result<String, String> {
    let (cmdlet, params) = match what {
        // A cmdlet name of n letters after `Get-`.
        "cmdlet" => (format!("Get-{}", "M".repeat(n)), "{}".to_owned()),
        // One parameter whose name is n letters.
        "key" => (
            "Get-Mailbox".to_owned(),
            format!("{{\"{}\":1}}", "K".repeat(n)),
        ),
        // Identity: a string of n bytes.
        "value" => (
            "Get-Mailbox".to_owned(),
            format!("{{\"Identity\":\"{}\"}}", "v".repeat(n)),
        ),
        // Identity: a list of n integers.
        "array" => (
            "Get-Mailbox".to_owned(),
            format!("{{\"Identity\":[{}]}}", vec!["1"; n].join(",")),
        ),
        // Identity nested in n lists.
        "depth" => (
            "Get-Mailbox".to_owned(),
            format!("{{\"Identity\":{}1{}}}", "[".repeat(n), "]".repeat(n)),
        ),
        // n distinct parameters.
        "keys" => (
            "Get-Mailbox".to_owned(),
            format!(
                "{{{}}}",
                (0..n)
                    .map(|i| format!("\"P{i}\":1"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        other => {
            return Err(format!(
                "big-call: unknown kind {other} (cmdlet, key, value, array, depth, keys)"
            ));
        }
    };
    let mut answer = invoke(&cmdlet, &params);
    answer["sent_bytes"] = json!(cmdlet.len() + params.len());
    Ok(answer.to_string())
}

fn spin_briefly() -> u64 {
    (0..100_000u64).fold(0, |a, b| black_box(a ^ b))
}
