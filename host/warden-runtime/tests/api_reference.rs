//! docs/rhai-api.md is what the script engine registers (issue 20, "Reference"): a change to
//! the engine fails here until the file is regenerated. The signatures come from Rhai's
//! `metadata` feature, which also changes how the engine runs (`parse_json` through serde past
//! the size limits, `///` comments, `to_json`), so it is this crate's `api-reference` feature,
//! never on in the product: run with
//! `cargo test -p warden-runtime --features api-reference --test api_reference`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_policy::{Policy, Principal};
use warden_runtime::{RuntimeLimits, ScriptHost};

const BLESS: &str = "WARDEN_TEST_BLESS=1 cargo test -p warden-runtime --features api-reference --test api_reference";

#[derive(Debug)]
struct NoCalls;

impl warden_exchange::CmdletRunner for NoCalls {
    fn start(&self, _: warden_exchange::Invocation) -> Box<dyn warden_exchange::PageStream> {
        unreachable!("listing the script API makes no call")
    }
}

/// The reference as kept in docs/rhai-api.md.
fn rhai_reference(signatures: &[String]) -> String {
    let (host, language): (Vec<&String>, Vec<&String>) = signatures.iter().partition(|s| {
        s.starts_with("exo::")
            || s.starts_with("log::")
            || s.starts_with("progress(")
            || s.starts_with("next(")
    });
    let mut out = format!(
        "# The Rhai script API\n\n\
         Every function a script run by `warden script` or `warden eval` can call, generated from \
         the engine itself (`ScriptHost::api_signatures` under warden-runtime's `api-reference` \
         feature, which is never on in the product). Do not edit by hand: after changing the \
         engine, regenerate it with\n\n\
         ```sh\n{BLESS}\n```\n\n\
         How the calls behave (refusals, paging, limits) is in [`scripts/README.md`](../scripts/README.md).\n\n\
         ## warden's host API\n\n",
    );
    for signature in host {
        out.push_str(&format!("- `{signature}`\n"));
    }
    out.push_str(
        "\n## The language surface\n\nRhai's core, logic, math, array, map and string packages as \
         warden configures them (no `eval`, `import` or `sleep`; size-bounded string functions).\n\n",
    );
    for signature in language {
        out.push_str(&format!("- `{signature}`\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rhai_api_reference_matches_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let source = "ARGS";
    let sha = warden_policy::sha256_hex(source.as_bytes());
    let policy = Policy::parse(
        &format!(
            "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\n\
             [[grant]]\nid = \"reference\"\n\
             script_inline_sha256 = \"{sha}\"\nroles = [\"reader\"]\n"
        ),
        Path::new("reference.toml"),
    )
    .unwrap();
    let audit = AuditTrail::open(
        &dir.path().join("audit.jsonl"),
        AuditKey::from_bytes([3; 32]),
    )
    .unwrap();
    let broker = Broker::new(
        Arc::new(policy),
        Arc::new(NoCalls),
        Arc::new(audit),
        Duration::from_secs(5),
    );
    let host = ScriptHost::new(RuntimeLimits::default());
    let signatures = host
        .api_signatures(&broker, Principal::inline_script(source))
        .unwrap();
    assert!(
        signatures.iter().any(|s| s.starts_with("exo::invoke(")),
        "{signatures:?}"
    );
    let generated = rhai_reference(&signatures);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/rhai-api.md");
    if std::env::var_os("WARDEN_TEST_BLESS").is_some() {
        std::fs::write(&file, &generated).unwrap();
        return;
    }
    let kept = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        kept == generated,
        "docs/rhai-api.md differs from the engine's functions; regenerate with {BLESS}"
    );
}
