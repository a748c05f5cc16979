//! The author's loop, walked as a newcomer would (issue 20): a fresh plugin crate depending on
//! the repository's SDK by path, built with plain cargo for wasm32-wasip2, granted with
//! `warden policy init`, run against exosim, changed (a call added), refused with one error
//! naming both fixes, re-pinned with `warden policy pin`, and run again. Then each error of
//! the loop through the real CLI with its message checked.

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A run environment against a fresh exosim (app 0, client secret, audit and cache in its dir).
struct Tenant {
    emu: Emulator,
    env: Env,
}

impl Tenant {
    async fn start() -> Self {
        let emu = Emulator::start().await;
        let env = operator_env(&emu);
        Self { emu, env }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.emu.dir.path().join(name)
    }

    async fn warden(&self, args: &[&str]) -> (i32, String, String) {
        let out = warden(args, &self.env).await;
        let (stdout, stderr) = text(&out);
        (out.status.code().unwrap_or(-1), stdout, stderr)
    }
}

/// The manifest and `run` body of a plugin version, as its author would write them.
struct Version {
    cmdlets: &'static str,
    body: &'static str,
}

const LIST_ONLY: &str = r#"
    let boxes: Vec<Value> = exchange::invoke("Get-Mailbox", &json!({"ResultSize": 3}))
        .map_err(|e| e.to_string())?;
    let addresses: Vec<Value> = boxes.iter().map(|b| b["PrimarySmtpAddress"].clone()).collect();
    Ok(json!({"mailboxes": addresses}).to_string())
"#;

const WITH_PERMISSIONS: &str = r#"
    let boxes: Vec<Value> = exchange::invoke("Get-Mailbox", &json!({"ResultSize": 3}))
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for b in &boxes {
        let address = b["PrimarySmtpAddress"].clone();
        let perms: Vec<Value> =
            exchange::invoke("Get-MailboxPermission", &json!({"Identity": address}))
                .map_err(|e| e.to_string())?;
        rows.push(json!({"mailbox": address, "entries": perms.len()}));
    }
    Ok(json!({"mailboxes": rows}).to_string())
"#;

/// Writes the plugin crate (`shared-owners`) into `dir` and builds it; returns the component.
fn build_plugin(dir: &Path, version: &Version) -> PathBuf {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let sdk = repo_root().join("sdk").canonicalize().unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"shared-owners\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nwarden-sdk = {{ path = {:?} }}\n\n\
             [workspace]\n",
            sdk.display().to_string()
        ),
    )
    .unwrap();
    // The SDK's own lock file, so the build resolves offline to what the SDK was checked with.
    let lock = dir.join("Cargo.lock");
    if !lock.exists() {
        std::fs::copy(repo_root().join("sdk/Cargo.lock"), &lock).unwrap();
    }
    std::fs::write(
        dir.join("src/lib.rs"),
        format!(
            r#"use warden_sdk::serde_json::{{json, Value}};
use warden_sdk::{{Plugin, exchange}};

warden_sdk::manifest! {{
    name = "shared-owners",
    description = "Mailboxes and who may use them",
    cmdlets = {{ {} }},
    reads = {{ "Get-Mailbox" = ["PrimarySmtpAddress"] }},
}}

struct SharedOwners;

impl Plugin for SharedOwners {{
    fn run(_args: Vec<String>) -> Result<String, String> {{
        warden_sdk::reads::require(WARDEN_READS)?;
        {}
    }}
}}

warden_sdk::plugin!(SharedOwners);
"#,
            version.cmdlets, version.body
        ),
    )
    .unwrap();
    // Shared with the other guests' builds, so the SDK's dependencies are built once.
    let target = crate::support::guests_target_dir();
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "--offline",
            "--target",
            "wasm32-wasip2",
        ])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building the fresh plugin failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Each version gets its own file: a plugin is pinned by its bytes.
    let built = target.join("wasm32-wasip2/release/shared_owners.wasm");
    let copy = dir.join(format!(
        "shared_owners-{}.wasm",
        warden_policy::sha256_hex(&std::fs::read(&built).unwrap())
    ));
    std::fs::copy(&built, &copy).unwrap();
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_walks_the_loop_from_a_fresh_crate_to_a_re_pinned_run() {
    let tenant = Tenant::start().await;
    let crate_dir = tenant.path("shared-owners");
    let policy = tenant.path("policy.toml");
    let policy_s = policy.display().to_string();

    // 1. A fresh crate, built, granted by `policy init` (nothing hand-written), run.
    let v1 = build_plugin(
        &crate_dir,
        &Version {
            cmdlets: r#""Get-Mailbox" = ["ResultSize"]"#,
            body: LIST_ONLY,
        },
    );
    let v1_s = v1.display().to_string();
    let (code, _, err) = tenant
        .warden(&["policy", "init", &v1_s, "--into", &policy_s])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("added grant shared-owners"), "{err}");
    let drafted = std::fs::read_to_string(&policy).unwrap();
    assert!(
        drafted.contains("output = [\"PrimarySmtpAddress\"]"),
        "{drafted}"
    );
    let (code, out, err) = tenant.warden(&["policy", "check", &policy_s]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = tenant
        .warden(&[
            "run", &v1_s, "--policy", &policy_s, "--quiet", "--output", "json",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("@"), "three addresses: {out}");

    // 2. The author adds a call but forgets the manifest. The changed bytes need a new pin
    //    first; inspect says so, and its advice, followed as printed, works.
    let v2 = build_plugin(
        &crate_dir,
        &Version {
            cmdlets: r#""Get-Mailbox" = ["ResultSize"]"#,
            body: WITH_PERMISSIONS,
        },
    );
    let v2_s = v2.display().to_string();
    let (code, out, err) = tenant
        .warden(&["plugin", "inspect", &v2_s, "--policy", &policy_s])
        .await;
    assert_eq!(code, 0, "{err}");
    let advice = out
        .lines()
        .find_map(|l| l.strip_prefix("If the change is intended, re-pin it: "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("inspect gives the re-pin command: {out}"));
    let words: Vec<&str> = advice.split_whitespace().collect();
    assert_eq!(words[..3], ["warden", "policy", "pin"], "{advice}");
    let (code, out, err) = tenant.warden(&words[1..]).await;
    assert_eq!(code, 0, "following inspect's advice works: {out}{err}");
    assert!(
        out.contains("manifest: unchanged since the last pin"),
        "{out}"
    );

    // 3. The call is in neither the manifest nor the policy: ONE refusal naming both fixes.
    let (code, out, err) = tenant
        .warden(&["run", &v2_s, "--policy", &policy_s, "--quiet"])
        .await;
    assert_eq!(code, 1, "{out}{err}");
    for part in [
        "Get-MailboxPermission is neither declared by the plugin nor granted (no role of grant shared-owners allows it)",
        "manifest",
        "warden policy pin",
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }

    // 4. Both fixes: declare it, rebuild, `policy pin --grant-declared` (which says what
    //    changed and grants it in the plugin's own role), run.
    let v3 = build_plugin(
        &crate_dir,
        &Version {
            cmdlets: r#""Get-Mailbox" = ["ResultSize"], "Get-MailboxPermission" = ["Identity"]"#,
            body: WITH_PERMISSIONS,
        },
    );
    let v3_s = v3.display().to_string();
    let (code, out, err) = tenant
        .warden(&["policy", "pin", &policy_s, &v3_s, "--grant-declared"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("manifest: + Get-MailboxPermission (Identity)"),
        "{out}"
    );
    assert!(
        out.contains("granted: Get-MailboxPermission (Identity) in role shared-owners"),
        "{out}"
    );
    let (code, out, err) = tenant.warden(&["policy", "check", &policy_s]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = tenant
        .warden(&[
            "run", &v3_s, "--policy", &policy_s, "--quiet", "--output", "json",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("entries"), "{out}");
    assert!(tenant.emu.requests_for("Get-MailboxPermission") >= 1);

    // 5. inspect --policy: every declared need granted, the table and the JSON agree.
    let rows = declared_rows_agree(&tenant, &v3_s, &policy_s).await;
    assert!(rows.iter().all(|r| r["granted"] == true), "{rows:?}");

    // 6. Output shaping that removes a property the plugin reads: inspect flags it, and the
    //    SDK's reads::require names it with the grant's output list (a failure, exit 1).
    let shaped = std::fs::read_to_string(&policy).unwrap().replace(
        "output = [\"PrimarySmtpAddress\"]",
        "output = [\"DisplayName\"]",
    );
    std::fs::write(&policy, shaped).unwrap();
    let rows = declared_rows_agree(&tenant, &v3_s, &policy_s).await;
    let flagged = rows
        .iter()
        .find(|r| r["kind"] == "reads" && r["name"] == "PrimarySmtpAddress")
        .expect("the read property is listed");
    assert_eq!(flagged["granted"], false);
    assert!(
        flagged["why"]
            .as_str()
            .unwrap()
            .contains("removed by output shaping"),
        "{flagged}"
    );
    let (code, out, err) = tenant
        .warden(&["run", &v3_s, "--policy", &policy_s, "--quiet"])
        .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("Get-Mailbox: PrimarySmtpAddress removed by the grant's output shaping (output = [DisplayName])"),
        "{err}"
    );
}

/// `plugin inspect --policy` as JSON and as a table: the same rows, cell for cell.
async fn declared_rows_agree(tenant: &Tenant, plugin: &str, policy: &str) -> Vec<Value> {
    let (code, json, err) = tenant
        .warden(&[
            "plugin", "inspect", plugin, "--policy", policy, "--output", "json",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&json).unwrap();
    let rows = doc["policy"]["declared"].as_array().unwrap().clone();
    let (code, table, err) = tenant
        .warden(&["plugin", "inspect", plugin, "--policy", policy])
        .await;
    assert_eq!(code, 0, "{err}");
    let section = table
        .split("what it declares, against this policy:")
        .nth(1)
        .unwrap_or_else(|| panic!("the table is printed: {table}"));
    let cells: Vec<Vec<String>> = section
        .lines()
        .filter(|l| l.starts_with('│'))
        .skip(1) // the header
        .map(|l| {
            l.trim_matches('│')
                .split('┆')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    let from_json: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["cmdlet"].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
                if r["granted"] == true { "yes" } else { "no" }.to_owned(),
                r["why"].as_str().unwrap().to_owned(),
            ]
        })
        .collect();
    assert!(!from_json.is_empty());
    assert_eq!(cells, from_json, "table and JSON disagree");
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_is_granted_by_init_from_its_calls_and_runs() {
    let tenant = Tenant::start().await;
    let script = tenant.path("count.rhai");
    std::fs::write(
        &script,
        "let n = exo::invoke(\"Get-Mailbox\", #{ResultSize: 4}).len();\n\
         let who = \"Get-User\";\n\
         if n > 100 { exo::invoke(who); }\n\
         n\n",
    )
    .unwrap();
    let policy = tenant.path("policy.toml").display().to_string();
    let script_s = script.display().to_string();
    let (code, _, err) = tenant
        .warden(&["policy", "init", &script_s, "--into", &policy])
        .await;
    assert_eq!(code, 0, "{err}");
    // The call it cannot read is named, with its line, and left out.
    assert!(
        err.contains("warning: line 3: exo::invoke's cmdlet is not a string literal"),
        "{err}"
    );
    let drafted = std::fs::read_to_string(&policy).unwrap();
    assert!(drafted.contains("max_result_size = 4"), "{drafted}");
    let (code, out, err) = tenant
        .warden(&[
            "script", &script_s, "--policy", &policy, "--quiet", "--output", "json",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refuses_a_script_nested_past_the_runtimes_limit_without_crashing() {
    // Parsed with no depth limit, 100,000 nested brackets overflow the parser's stack and
    // abort the process; the runtime's own limit refuses them with the parser's message.
    let tenant = Tenant::start().await;
    let script = tenant.path("deep.rhai");
    let depth = 100_000;
    std::fs::write(
        &script,
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
    )
    .unwrap();
    let script_s = script.display().to_string();
    let (code, out, err) = tenant.warden(&["policy", "init", &script_s]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("the script does not parse"), "{err}");
    assert!(err.contains("fix:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_through_a_symlink_and_keeps_the_files_permissions() {
    use std::os::unix::fs::PermissionsExt as _;
    let tenant = Tenant::start().await;
    let plugin = guest("plugins", "permission-audit").display().to_string();
    let real = tenant.path("real-policy.toml");
    std::fs::write(&real, "version = 1\n").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = tenant.path("policy.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let link_s = link.display().to_string();
    let (code, _, err) = tenant
        .warden(&["policy", "init", &plugin, "--into", &link_s])
        .await;
    assert_eq!(code, 0, "{err}");
    // The link is still a link, and the file it names got the grant with its mode kept.
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let written = std::fs::read_to_string(&real).unwrap();
    assert!(written.contains("[[grant]]"), "{written}");
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the policy's mode changed to {mode:o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_adds_to_a_policy_and_never_clobbers_it() {
    let tenant = Tenant::start().await;
    let plugin = guest("plugins", "permission-audit").display().to_string();
    let policy = tenant.path("policy.toml");
    let policy_s = policy.display().to_string();
    // A role with the name init would choose, a comment, and an unrelated grant.
    let before = format!(
        "version = 1\n# the operator's note\n[roles.permission-audit]\n\
         [[roles.permission-audit.cmdlet]]\nname = \"Get-User\"\n\n[[grant]]\n\
         id = \"other\"\nscript_inline_sha256 = \"{}\"\nroles = [\"permission-audit\"]\n",
        "a".repeat(64)
    );
    std::fs::write(&policy, &before).unwrap();
    let (code, _, err) = tenant
        .warden(&["policy", "init", &plugin, "--into", &policy_s])
        .await;
    assert_eq!(code, 0, "{err}");
    let after = std::fs::read_to_string(&policy).unwrap();
    assert!(
        after.starts_with(&before[..before.find("[[grant]]").unwrap()]),
        "{after}"
    );
    assert!(after.contains("# the operator's note"), "{after}");
    assert!(after.contains("[roles.permission-audit-2]"), "{after}");
    assert!(
        after.contains("roles = [\"permission-audit-2\"]"),
        "{after}"
    );
    // Twice: refused, pointing at pin; the file is unchanged.
    let (code, _, err) = tenant
        .warden(&["policy", "init", &plugin, "--into", &policy_s])
        .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("already names plugin permission-audit"),
        "{err}"
    );
    assert!(err.contains("fix: `warden policy pin"), "{err}");
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), after);
    // A plugin that declares nothing cannot be drafted least-privilege.
    let bare = guest("tests/guests", "no-manifest").display().to_string();
    let (code, _, err) = tenant.warden(&["policy", "init", &bare]).await;
    assert_eq!(code, 1);
    assert!(err.contains("declares nothing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_get_did_you_mean_and_check_lints_unknown_cmdlets() {
    let tenant = Tenant::start().await;
    let plugin = guest("plugins", "permission-audit").display().to_string();
    let policy = tenant.path("policy.toml").display().to_string();
    let (code, _, err) = tenant
        .warden(&["policy", "init", &plugin, "--into", &policy])
        .await;
    assert_eq!(code, 0, "{err}");
    let explain = |cmdlet: &'static str, param: &'static str| {
        let (plugin, policy) = (plugin.clone(), policy.clone());
        let tenant = &tenant;
        async move {
            tenant
                .warden(&[
                    "policy",
                    "explain",
                    "--policy",
                    &policy,
                    "--plugin",
                    "permission-audit",
                    "--component",
                    &plugin,
                    cmdlet,
                    "-p",
                    param,
                ])
                .await
        }
    };
    let (code, out, _) = explain("get-mailboxpermision", "Identity=a@contoso.com").await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("did you mean Get-MailboxPermission?"), "{out}");
    let (code, out, _) = explain("Get-MailboxPermission", "identiy=a@contoso.com").await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("did you mean Identity?"), "{out}");
    let (_, out, _) = explain("Get-Userr", "Identity=a").await;
    assert!(
        out.contains("did you mean Get-User? (not granted either)"),
        "{out}"
    );

    let typo = tenant.path("typo.toml");
    std::fs::write(
        &typo,
        "version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailboxx\"\n\
         [[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\n",
    )
    .unwrap();
    let (code, _, err) = tenant
        .warden(&["policy", "check", &typo.display().to_string()])
        .await;
    assert_eq!(code, 0, "a lint is a warning: {err}");
    assert!(
        err.contains("warning: role r names Get-Mailboxx, which is not an Exchange cmdlet warden knows; did you mean Get-Mailbox?"),
        "{err}"
    );
    assert_eq!(
        err.matches("not an Exchange cmdlet").count(),
        1,
        "Get-Mailbox is known: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_and_run_apply_one_name_rule_to_file_stems() {
    let tenant = Tenant::start().await;
    let bare = guest("tests/guests", "no-manifest");
    let odd = tenant.path("my plugin.wasm");
    std::fs::copy(&bare, &odd).unwrap();
    let odd_s = odd.display().to_string();
    let policy = tenant.path("p.toml");
    std::fs::write(&policy, "version = 1\n").unwrap();
    let (code, _, inspect_err) = tenant.warden(&["plugin", "inspect", &odd_s]).await;
    assert_eq!(code, 1);
    let (code, _, run_err) = tenant
        .warden(&["run", &odd_s, "--policy", &policy.display().to_string()])
        .await;
    assert_eq!(code, 1, "{run_err}");
    for err in [&inspect_err, &run_err] {
        assert!(err.contains("\"my plugin\", which is not 1 to 64"), "{err}");
        assert!(err.contains("fix: rename the file"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_refusal_names_the_value_to_the_operator_and_not_to_the_guest() {
    let tenant = Tenant::start().await;
    let script = tenant.path("rename.rhai");
    let source = r#"let out = [];
try {
    exo::invoke("Set-Mailbox", #{Identity: "chentanaka@contoso.onmicrosoft.com", DisplayName: "Far Too Long Display Name"});
} catch (e) { out.push(e.rule); out.push(e.reason); }
try {
    exo::invoke("Set-Mailbox", #{Identity: "chentanaka@contoso.onmicrosoft.com", Password: "hunter2hunter2"});
} catch (e) { out.push(e.rule); out.push(e.reason); }
out
"#;
    std::fs::write(&script, source).unwrap();
    let policy = tenant.path("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[roles.writer]\n[[roles.writer.cmdlet]]\nname = \"Set-Mailbox\"\n\
             [roles.writer.cmdlet.parameters]\nIdentity = {{ any = true }}\n\
             DisplayName = {{ length = [1, 8] }}\nPassword = {{ length = [1, 4], sensitive = true }}\n\n\
             [[grant]]\nscript = \"rename.rhai\"\nsha256 = \"{}\"\nroles = [\"writer\"]\n\
             [grant.budgets]\nwrites = 2\n",
            warden_policy::sha256_hex(source.as_bytes())
        ),
    )
    .unwrap();
    let (policy_s, script_s) = (policy.display().to_string(), script.display().to_string());
    let (code, out, err) = tenant
        .warden(&[
            "script", &script_s, "--policy", &policy_s, "--output", "json",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    // The guest: the rule and the reason, never the value.
    assert!(out.contains("role:writer/Set-Mailbox/DisplayName"), "{out}");
    assert!(
        !out.contains("Far Too Long"),
        "the guest is not told its value: {out}"
    );
    // The operator: the value and the rule that refused it.
    assert!(
        err.contains(
            "Set-Mailbox refused: DisplayName = \"Far Too Long Display Name\" refused by role:writer/Set-Mailbox/DisplayName"
        ),
        "{err}"
    );
    // A sensitive value is shown to no one.
    assert!(err.contains("Password = (sensitive: not shown)"), "{err}");
    assert!(!format!("{out}{err}").contains("hunter2"), "{out}{err}");
    assert_eq!(tenant.emu.requests_for("Set-Mailbox"), 0);

    // `policy explain` is the operator's too.
    let (code, out, _) = tenant
        .warden(&[
            "policy",
            "explain",
            "--policy",
            &policy_s,
            "--script",
            &script_s,
            "Set-Mailbox",
            "-p",
            "Identity=a",
            "-p",
            "DisplayName=Far Too Long",
        ])
        .await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("value:     DisplayName = \"Far Too Long\" refused by role:writer/Set-Mailbox/DisplayName"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_changes_only_the_hash_and_its_record_in_a_hand_written_policy() {
    let tenant = Tenant::start().await;
    let plugin = guest("plugins", "mailbox-report").display().to_string();
    let shipped =
        std::fs::read_to_string(repo_root().join("plugins/mailbox-report/policy.toml")).unwrap();
    let policy = tenant.path("policy.toml");
    std::fs::write(&policy, &shipped).unwrap();
    let policy_s = policy.display().to_string();
    // The refusal a run gets names the command that fixes it.
    let (code, _, err) = tenant
        .warden(&["run", &plugin, "--policy", &policy_s, "--quiet"])
        .await;
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("re-pin it: `warden policy pin {policy_s} FILE`")),
        "{err}"
    );
    let (code, out, err) = tenant.warden(&["policy", "pin", &policy_s, &plugin]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no earlier pin record"), "{out}");
    let pinned = std::fs::read_to_string(&policy).unwrap();
    let sha = warden_policy::sha256_hex(&std::fs::read(&plugin).unwrap());
    let changed: Vec<&str> = pinned
        .lines()
        .filter(|l| !shipped.lines().any(|s| s == *l))
        .collect();
    assert_eq!(
        changed.len(),
        2,
        "only the hash and the record: {changed:?}"
    );
    assert_eq!(changed[1], format!("sha256 = \"{sha}\""));
    assert!(changed[0].starts_with("# warden pin: "), "{changed:?}");
    assert!(
        pinned.contains("# The operator pins the hash"),
        "comments stay"
    );
    let (code, out, err) = tenant
        .warden(&[
            "run", &plugin, "--policy", &policy_s, "--quiet", "--", "--limit", "2",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
}

/// The ids of the grants `policy check` reads from `policy`.
async fn grant_ids(tenant: &Tenant, policy: &str) -> Vec<String> {
    let (code, out, err) = tenant
        .warden(&["policy", "check", policy, "--output", "json"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    summary["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_names_a_hostile_script_path_only_in_an_escaped_value() {
    let tenant = Tenant::start().await;
    let policy = tenant.path("policy.toml");
    let policy_s = policy.display().to_string();
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[roles.admin]\n[[roles.admin.cmdlet]]\nname = \"Set-Mailbox\"\n\n\
             [[grant]]\nid = \"other\"\nscript_inline_sha256 = \"{}\"\nroles = [\"admin\"]\n",
            "a".repeat(64)
        ),
    )
    .unwrap();
    // A file name that, written raw into a comment, is a grant of the privileged role.
    let hostile = format!(
        "x\n[[grant]]\nid = \"evil\"\nscript_inline_sha256 = \"{}\"\nroles = [\"admin\"]\n#.rhai",
        "b".repeat(64)
    );
    let script = tenant.path(&hostile);
    std::fs::write(
        &script,
        "exo::invoke(\"Get-Mailbox\", #{ResultSize: 2}).len()\n",
    )
    .unwrap();
    let script_s = script.display().to_string();
    // Printed or written, the draft holds one grant more, and it is not `evil`.
    let (code, out, err) = tenant.warden(&["policy", "init", &script_s]).await;
    assert_eq!(code, 0, "{err}");
    let printed = tenant.path("printed.toml");
    std::fs::write(&printed, &out).unwrap();
    let ids = grant_ids(&tenant, &printed.display().to_string()).await;
    assert_eq!(ids.len(), 1, "{ids:?}\n{out}");
    assert_ne!(ids[0], "evil");
    let (code, _, err) = tenant
        .warden(&["policy", "init", &script_s, "--into", &policy_s])
        .await;
    assert_eq!(code, 0, "{err}");
    let ids = grant_ids(&tenant, &policy_s).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], "other");
    assert_ne!(ids[1], "evil");
}

/// `permission-audit` granted by init, then its drafted role without the entry for
/// Get-RecipientPermission (as if the manifest had grown since).
async fn drafted_then_narrowed(tenant: &Tenant, plugin: &str, policy: &Path) -> String {
    let policy_s = policy.display().to_string();
    let (code, _, err) = tenant
        .warden(&["policy", "init", plugin, "--into", &policy_s])
        .await;
    assert_eq!(code, 0, "{err}");
    let drafted = std::fs::read_to_string(policy).unwrap();
    let header = "[[roles.permission-audit.cmdlet]]\nname = \"Get-RecipientPermission\"";
    let start = drafted.find(header).expect(&drafted);
    // Up to the next entry or the grant's leading comments (its pin record stays).
    let rest = &drafted[start + header.len()..];
    let end = start
        + header.len()
        + ["\n[[", "\n#"]
            .iter()
            .filter_map(|m| rest.find(m))
            .min()
            .map(|i| i + 1)
            .unwrap();
    let narrowed = format!("{}{}", &drafted[..start], &drafted[end..]);
    std::fs::write(policy, &narrowed).unwrap();
    narrowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_widens_only_with_the_flag_and_never_a_shared_role() {
    let tenant = Tenant::start().await;
    let plugin = guest("plugins", "permission-audit").display().to_string();
    let policy = tenant.path("policy.toml");
    let policy_s = policy.display().to_string();
    let narrowed = drafted_then_narrowed(&tenant, &plugin, &policy).await;
    let granted_in = |text: &str| text.contains("name = \"Get-RecipientPermission\"");
    assert!(!granted_in(&narrowed), "{narrowed}");

    // By default pin re-pins and only says what it would grant.
    let (code, out, err) = tenant.warden(&["policy", "pin", &policy_s, &plugin]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("would grant: Get-RecipientPermission (Identity) in role permission-audit"),
        "{out}"
    );
    assert!(out.contains("--grant-declared"), "{out}");
    assert!(!granted_in(&std::fs::read_to_string(&policy).unwrap()));

    // A role another grant names is never widened, and the report names that grant.
    let shared = format!(
        "{}\n[[grant]]\nid = \"other\"\nscript_inline_sha256 = \"{}\"\n\
         roles = [\"permission-audit\"]\n",
        std::fs::read_to_string(&policy).unwrap(),
        "a".repeat(64)
    );
    std::fs::write(&policy, &shared).unwrap();
    let (code, out, err) = tenant
        .warden(&["policy", "pin", &policy_s, &plugin, "--grant-declared"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("not granted: Get-RecipientPermission is declared"),
        "{out}"
    );
    assert!(
        out.contains("role permission-audit is also named by grant other"),
        "{out}"
    );
    assert!(!granted_in(&std::fs::read_to_string(&policy).unwrap()));

    // Its own role, with the flag: granted.
    let own = shared[..shared.rfind("\n[[grant]]\nid = \"other\"").unwrap()].to_owned();
    std::fs::write(&policy, &own).unwrap();
    let (code, out, err) = tenant
        .warden(&["policy", "pin", &policy_s, &plugin, "--grant-declared"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("granted: Get-RecipientPermission (Identity) in role permission-audit"),
        "{out}"
    );
    assert!(granted_in(&std::fs::read_to_string(&policy).unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_refuses_a_plugin_that_is_not_the_one_pinned() {
    let tenant = Tenant::start().await;
    let plugin = guest("plugins", "permission-audit").display().to_string();
    let policy = tenant.path("policy.toml");
    let policy_s = policy.display().to_string();
    let drafted = drafted_then_narrowed(&tenant, &plugin, &policy).await;
    let with_record = |edit: &dyn Fn(&str) -> String| -> String {
        drafted
            .lines()
            .map(|l| {
                if l.starts_with("# warden pin: ") {
                    edit(l)
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    // Pinned under another name.
    let renamed = with_record(&|l| {
        l.replace(
            "\"plugin\":\"permission-audit\"",
            "\"plugin\":\"mailbox-report\"",
        )
    });
    assert_ne!(renamed, drafted, "the record names the plugin");
    // Pinned with cmdlets this manifest shares none of.
    let disjoint = with_record(&|l| l.replace("\"Get-", "\"Get-Other"));
    for (text, says) in [
        (&renamed, "pinned to a plugin named mailbox-report"),
        (&disjoint, "declares none of the cmdlets it was pinned with"),
    ] {
        std::fs::write(&policy, text).unwrap();
        for flag in [None, Some("--grant-declared")] {
            let mut args = vec!["policy", "pin", &policy_s, &plugin];
            args.extend(flag);
            let (code, out, err) = tenant.warden(&args).await;
            assert_eq!(code, 1, "{out}{err}");
            assert!(err.contains(says), "{says:?} in {err}");
            assert_eq!(&std::fs::read_to_string(&policy).unwrap(), text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_and_pin_refuse_inline_tables_with_the_fix() {
    let tenant = Tenant::start().await;
    let policy = tenant.path("policy.toml");
    let policy_s = policy.display().to_string();
    let inline = format!(
        "version = 1\nroles = {{ r = {{ cmdlet = [{{ name = \"Get-User\" }}] }} }}\n\
         grant = [{{ id = \"g\", script_inline_sha256 = \"{}\", roles = [\"r\"] }}]\n",
        "a".repeat(64)
    );
    std::fs::write(&policy, &inline).unwrap();
    let (code, out, err) = tenant.warden(&["policy", "check", &policy_s]).await;
    assert_eq!(code, 0, "the inline form is a valid policy: {out}{err}");
    let script = tenant.path("count.rhai");
    std::fs::write(&script, "exo::invoke(\"Get-Mailbox\").len()\n").unwrap();
    let script_s = script.display().to_string();
    let (code, _, err) = tenant
        .warden(&["policy", "init", &script_s, "--into", &policy_s])
        .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("as an inline table or array"), "{err}");
    assert!(err.contains("fix: write it in the"), "{err}");
    let (code, _, err) = tenant
        .warden(&["policy", "pin", &policy_s, &script_s])
        .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("as an inline table or array"), "{err}");
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), inline);
}
