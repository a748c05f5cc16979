//! The plugin author's loop (issue 20) through the real `warden` binary: recorded answers
//! replayed without a tenant, exosim's author fixtures in the demo tenant, exit statuses that
//! mean one thing each, output that says "0 results", keeps Exchange's property order and
//! shows lists readably, and `-v` levels. (The Rhai API reference is checked by
//! host/warden-runtime/tests/api_reference.rs.)

use crate::support::*;
use serde_json::Value;

const UNPINNED: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A reading role every inline test script is granted.
const READER_ROLE: &str = "[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\n\
max_result_size = 5\n";

struct Author {
    emu: Emulator,
    env: Env,
}

impl Author {
    async fn start() -> Self {
        let emu = Emulator::start().await;
        let env = operator_env(&emu);
        Self { emu, env }
    }

    fn path(&self, name: &str) -> String {
        self.emu.dir.path().join(name).display().to_string()
    }

    /// An example plugin and its committed policy, the grant pinned to this build.
    fn example(&self, name: &str) -> (String, String) {
        let wasm = guest("plugins", name);
        let sha = warden_policy::sha256_hex(&std::fs::read(&wasm).unwrap());
        let text =
            std::fs::read_to_string(repo_root().join("plugins").join(name).join("policy.toml"))
                .unwrap()
                .replace(UNPINNED, &sha);
        let policy = self.path(&format!("{name}-policy.toml"));
        std::fs::write(&policy, text).unwrap();
        (wasm.display().to_string(), policy)
    }

    /// A policy granting the one-liner `source` the reader role.
    fn inline_policy(&self, source: &str) -> String {
        let sha = warden_policy::sha256_hex(source.as_bytes());
        let path = self.path(&format!("inline-{}.toml", &sha[..12]));
        std::fs::write(
            &path,
            format!(
                "version = 1\n{READER_ROLE}\n[[grant]]\nid = \"inline\"\n\
                 script_inline_sha256 = \"{sha}\"\nroles = [\"reader\"]\n"
            ),
        )
        .unwrap();
        path
    }

    /// The probe under a policy that lets it read five mailboxes.
    fn probe(&self) -> (String, String) {
        let wasm = guest("tests/guests", "probe");
        let sha = warden_policy::sha256_hex(&std::fs::read(&wasm).unwrap());
        let policy = self.path("probe-policy.toml");
        std::fs::write(
            &policy,
            format!(
                "version = 1\n{READER_ROLE}\n[[grant]]\nid = \"probe\"\nplugin = \"probe\"\n\
                 sha256 = \"{sha}\"\nroles = [\"reader\"]\n[grant.budgets]\ncpu_secs = 1\n"
            ),
        )
        .unwrap();
        (wasm.display().to_string(), policy)
    }
}

/// The environment of a replay: no tenant, no credential, no emulator.
fn offline(env: &Env) -> Env {
    env.iter()
        .filter(|(k, _)| k.starts_with("WARDEN_AUDIT") || k == "WARDEN_CACHE_DIR")
        .cloned()
        .collect()
}

// Issue 20, "Testing without a tenant": the example plugins (a report, the audit, and one that
// writes) and an example script, recorded against exosim, then replayed with exosim stopped and
// no credential: the same output, through the same policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_runs_the_examples_from_their_recorded_answers_with_exosim_stopped() {
    let author = Author::start().await;
    let scripts = repo_root().join("scripts");
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    for (name, args) in [
        ("mailbox-report", &["--limit", "4"][..]),
        ("permission-audit", &[][..]),
        (
            "shared-mailbox",
            &[
                "--name",
                "Reception Desk",
                "--address",
                "receptiondesk@contoso.onmicrosoft.com",
                "--full-access",
                "wenlopez@contoso.onmicrosoft.com",
                "--send-as",
                "wenlopez@contoso.onmicrosoft.com",
            ][..],
        ),
    ] {
        let (wasm, policy) = author.example(name);
        let mut argv = vec!["run".to_owned(), wasm, "--policy".into(), policy];
        argv.extend(["--output".into(), "json".into(), "--".into()]);
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        runs.push((name.to_owned(), argv));
    }
    runs.push((
        "shared-mailbox-access.rhai".into(),
        vec![
            "script".into(),
            scripts
                .join("shared-mailbox-access.rhai")
                .display()
                .to_string(),
            "--policy".into(),
            scripts.join("policy.toml").display().to_string(),
            "--output".into(),
            "json".into(),
        ],
    ));

    let mut recorded = Vec::new();
    for (name, argv) in &runs {
        let tape = author.path(&format!("{name}.jsonl"));
        let mut args: Vec<&str> = argv.iter().map(String::as_str).collect();
        args.splice(2..2, ["--record", tape.as_str()]);
        let out = warden(&args, &author.env).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert!(stderr.contains("recorded "), "{name}: {stderr}");
        let recording = std::fs::read_to_string(&tape).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&tape).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{name}: the recording is the owner's only");
        }
        assert!(!recording.is_empty(), "{name}: nothing recorded");
        // Never a credential or a token: none reaches a cmdlet runner.
        let secret = author.emu.app_str(0, "client_secret");
        for forbidden in [secret.as_str(), "eyJ", "Bearer", "client_secret"] {
            assert!(
                !recording.contains(forbidden),
                "{name}: {forbidden} recorded"
            );
        }
        recorded.push((name.clone(), argv.clone(), tape, stdout));
    }
    // The audit and the script have something to say in the demo tenant (its fixtures).
    let audit: Value = serde_json::from_str(&recorded[1].3).unwrap();
    assert!(
        audit.as_array().is_some_and(|rows| rows.len() >= 3),
        "{audit}"
    );

    author.emu.exosim.stop().await;
    let offline = offline(&author.env);
    // Exosim is really gone: without --replay the report cannot run.
    let live = warden(
        &recorded[0].1.iter().map(String::as_str).collect::<Vec<_>>(),
        &author.env,
    )
    .await;
    assert_ne!(live.status.code(), Some(0), "{}", text(&live).1);

    for (name, argv, tape, expected) in &recorded {
        let mut args: Vec<&str> = argv.iter().map(String::as_str).collect();
        args.splice(2..2, ["--replay", tape.as_str()]);
        let out = warden(&args, &offline).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        // The write's plugin says what it changed: the same as when it ran against exosim.
        assert_eq!(&stdout, expected, "{name}: replayed output differs");
    }
}

// A replay's calls never reached Exchange: they go to a trail beside the live one, which
// never records them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_writes_its_calls_beside_the_live_trail_not_into_it() {
    let author = Author::start().await;
    let (wasm, policy) = author.example("mailbox-report");
    let tape = author.path("one.jsonl");
    let args = ["run", &wasm, "--policy", &policy, "--quiet"];
    let mut record: Vec<&str> = args.to_vec();
    record.extend(["--record", &tape, "--", "--limit", "1"]);
    let out = warden(&record, &author.env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let live = author
        .env
        .iter()
        .find(|(k, _)| k == "WARDEN_AUDIT")
        .map(|(_, v)| std::path::PathBuf::from(v))
        .expect("the author's environment names its trail");
    let before = std::fs::read_to_string(&live).unwrap();

    let mut replay: Vec<&str> = args.to_vec();
    replay.extend(["--replay", &tape, "--", "--limit", "1"]);
    let out = warden(&replay, &offline(&author.env)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert_eq!(
        std::fs::read_to_string(&live).unwrap(),
        before,
        "the live trail grew"
    );
    let stem = live.file_stem().unwrap().to_string_lossy().into_owned();
    let beside = live.with_file_name(format!("{stem}.replay.jsonl"));
    let replayed = std::fs::read_to_string(&beside).unwrap();
    assert!(replayed.contains("Get-Mailbox"), "{replayed}");
}

// A call the recording does not have is an error naming the cmdlet and its parameters, and
// the run exits 1 even when the guest carried on.
// A recording path that is a link is replaced, never followed (a link to the audit trail
// must not truncate it), and a run that is refused before it starts leaves a recording alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_never_follows_a_link_and_a_refused_run_keeps_the_old_one() {
    let author = Author::start().await;
    let (wasm, policy) = author.example("mailbox-report");
    let victim = author.path("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let tape = author.path("tape.jsonl");
    std::os::unix::fs::symlink(&victim, &tape).unwrap();
    let out = warden(
        &[
            "run", &wasm, "--policy", &policy, "--record", &tape, "--", "--limit", "1",
        ],
        &author.env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let meta = std::fs::symlink_metadata(&tape).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the link was replaced by the recording"
    );
    let recorded = std::fs::read_to_string(&tape).unwrap();
    assert!(recorded.contains("Get-Mailbox"), "{recorded}");

    // Refused before it starts (no grant names this script): the recording stays.
    let script = author.path("unpinned.rhai");
    std::fs::write(&script, "exo::invoke(\"Get-Mailbox\", #{ResultSize: 1})").unwrap();
    let out = warden(
        &["script", &script, "--policy", &policy, "--record", &tape],
        &author.env,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out).1);
    assert_eq!(std::fs::read_to_string(&tape).unwrap(), recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_names_a_call_the_recording_does_not_have() {
    let author = Author::start().await;
    let (wasm, policy) = author.example("mailbox-report");
    let tape = author.path("two.jsonl");
    let out = warden(
        &[
            "run", &wasm, "--policy", &policy, "--record", &tape, "--", "--limit", "2",
        ],
        &author.env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);

    let offline = offline(&author.env);
    let out = warden(
        &[
            "run", &wasm, "--policy", &policy, "--replay", &tape, "--", "--limit", "3",
        ],
        &offline,
    )
    .await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not in the recording: Get-Mailbox {\"ResultSize\":3}"),
        "{stderr}"
    );
    assert!(stderr.contains("--record"), "the fix is named: {stderr}");

    // A file that is not a recording: its line, and the fix.
    std::fs::write(&tape, "{\"cmdlet\": 1}\n").unwrap();
    let out = warden(
        &["run", &wasm, "--policy", &policy, "--replay", &tape],
        &offline,
    )
    .await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("two.jsonl:1: not a recorded call"),
        "{stderr}"
    );
}

// Issue 20, "Errors that finish the job": 0 completed, 1 failed (a guest's error, a panic or
// trap, warden's own error), 2 a "no" from `policy explain`, 3 refused, 4 stopped at a limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_means_one_thing_each() {
    let author = Author::start().await;
    let (probe, policy) = author.probe();
    let run = |args: &'static [&'static str]| {
        let mut argv = vec![
            "run".to_owned(),
            probe.clone(),
            "--policy".into(),
            policy.clone(),
        ];
        argv.push("--".into());
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    };
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (run(&["grants"]), 0, "completed"),
        (run(&["fail", "bye"]), 1, "the guest failed: bye"),
        (run(&["panic"]), 1, "the guest failed: it trapped"),
        (run(&["spin"]), 4, "CPU limit"),
        (vec!["run".into(), probe.clone()], 1, "no policy was given"),
    ];
    for (argv, code, says) in cases {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = warden(&args, &author.env).await;
        let stderr = text(&out).1;
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        if args.contains(&"panic") {
            // Printed once: the SDK's log line, not again on the captured stderr.
            assert_eq!(
                stderr.matches("probe: panic on purpose").count(),
                1,
                "{stderr}"
            );
            assert!(!stderr.contains("limit"), "a panic is no limit: {stderr}");
        }
    }
    // Refused by the policy: another plugin under the probe's policy.
    let (report, _) = author.example("mailbox-report");
    let out = warden(&["run", &report, "--policy", &policy], &author.env).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out).1);
    // A "no" that is an answer, not a failure.
    let out = warden(
        &[
            "policy",
            "explain",
            "--policy",
            &policy,
            "--plugin",
            "probe",
            "--sha256",
            UNPINNED,
            "Get-Mailbox",
        ],
        &author.env,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    // A script's error and a usage mistake are failures too.
    let source = "throw \"no such mailbox\"";
    let script_policy = author.inline_policy(source);
    let out = warden(&["eval", source, "--policy", &script_policy], &author.env).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);
    let out = warden(&["run", "--no-such-flag"], &author.env).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);
}

// An empty result says "0 results" rather than drawing nothing; lists in CSV and tables read
// as `a; b`, nested values as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_results_say_so_and_list_cells_read_as_items() {
    let author = Author::start().await;
    let empty = "exo::invoke(\"Get-Mailbox\", #{ResultSize: 1}).filter(|m| false)";
    let policy = author.inline_policy(empty);
    for (format, stdout_is, stderr_has) in [
        ("table", "0 results\n", ""),
        ("json", "[]\n", ""),
        ("csv", "", "0 results"),
    ] {
        let out = warden(
            &[
                "eval", empty, "--policy", &policy, "--output", format, "--quiet",
            ],
            &author.env,
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        assert_eq!(stdout, stdout_is, "{format}");
        assert!(stderr.contains(stderr_has), "{format}: {stderr}");
    }

    let lists = "exo::invoke(\"Get-Mailbox\", #{ResultSize: 2}).map(|m| #{Name: m.Name, \
                 Addresses: m.EmailAddresses, Nested: [#{a: 1}]})";
    let policy = author.inline_policy(lists);
    let out = warden(
        &[
            "eval", lists, "--policy", &policy, "--output", "csv", "--quiet",
        ],
        &author.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let second = stdout.lines().nth(1).unwrap_or_default();
    assert!(
        second.starts_with(
            "SMTP:stefanmeyer@contoso.onmicrosoft.com; smtp:stefanmeyer@contoso.mail.onmicrosoft.com,"
        ),
        "{stdout}"
    );
    assert!(second.contains(r#""[{""a"":1}]""#), "{stdout}");
}

// Exchange's property order reaches the operator: `warden invoke --output json` keeps the
// order exosim sends (Name, Alias, DisplayName, …, not alphabetical), and a plugin's rows
// keep the order it wrote their fields in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_property_order_is_kept_in_json_csv_and_tables() {
    let author = Author::start().await;
    let out = warden(
        &[
            "invoke",
            "Get-Mailbox",
            "-p",
            "ResultSize=1",
            "--output",
            "json",
        ],
        &author.env,
    )
    .await;
    let stdout = text(&out).0;
    assert!(
        stdout.starts_with(r#"{"Name":"StefanMeyer","Alias":"StefanMeyer","DisplayName":"#)
            || stdout.starts_with(r#"{"Name":""#),
        "{stdout}"
    );
    let name = stdout.find("\"Name\"").unwrap();
    let alias = stdout.find("\"Alias\"").unwrap();
    let display = stdout.find("\"DisplayName\"").unwrap();
    assert!(name < alias && alias < display, "{stdout}");

    let (audit, policy) = author.example("permission-audit");
    for (format, header) in [("csv", "Mailbox,Trustee,Right"), ("table", "Mailbox")] {
        let out = warden(
            &[
                "run", &audit, "--policy", &policy, "--output", format, "--quiet",
            ],
            &author.env,
        )
        .await;
        let stdout = text(&out).0;
        let first = stdout.lines().next().unwrap_or_default();
        assert!(first.starts_with(header), "{format}: {stdout}");
        let (trustee, right) = (first.find("Trustee").unwrap(), first.find("Right").unwrap());
        assert!(trustee < right, "{format}: {first}");
    }
}

// The demo tenant has what the examples need: shared mailboxes with delegates holding
// FullAccess and SendAs, distribution groups with members, and forwarding inside and outside
// the organisation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tenant_has_the_author_fixtures() {
    let author = Author::start().await;
    let invoke = |args: &'static [&'static str]| {
        let env = author.env.clone();
        async move {
            let mut argv = vec!["invoke"];
            argv.extend_from_slice(args);
            argv.extend(["--output", "json"]);
            let out = warden(&argv, &env).await;
            assert!(out.status.success(), "{args:?}: {}", text(&out).1);
            text(&out)
                .0
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let shared = invoke(&["Get-Mailbox", "-p", "RecipientTypeDetails=SharedMailbox"]).await;
    let names: Vec<&str> = shared
        .iter()
        .filter_map(|m| m["DisplayName"].as_str())
        .collect();
    assert!(
        names.contains(&"Reception Desk") && names.contains(&"Accounts Payable"),
        "{names:?}"
    );
    let full = invoke(&[
        "Get-MailboxPermission",
        "-p",
        "Identity=receptiondesk@contoso.onmicrosoft.com",
    ])
    .await;
    let delegates = full
        .iter()
        .filter(|p| {
            p["AccessRights"].to_string().contains("FullAccess")
                && p["User"] != "NT AUTHORITY\\SELF"
        })
        .count();
    assert_eq!(delegates, 2, "{full:?}");
    let send_as = invoke(&[
        "Get-RecipientPermission",
        "-p",
        "Identity=accountspayable@contoso.onmicrosoft.com",
    ])
    .await;
    assert!(
        send_as
            .iter()
            .filter(|p| p["AccessRights"].to_string().contains("SendAs"))
            .count()
            >= 2,
        "{send_as:?}"
    );
    let groups = invoke(&["Get-DistributionGroup"]).await;
    let group = groups[0]["PrimarySmtpAddress"].as_str().unwrap().to_owned();
    let env = author.env.clone();
    let out = warden(
        &[
            "invoke",
            "Get-DistributionGroupMember",
            "-p",
            &format!("Identity={group}"),
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    assert!(
        !text(&out).0.trim().is_empty(),
        "{group} has members: {}",
        text(&out).1
    );
    let mailboxes = invoke(&["Get-Mailbox", "-p", "ResultSize=Unlimited"]).await;
    let external = mailboxes
        .iter()
        .filter(|m| m["ForwardingSmtpAddress"] == "smtp:records@fabrikam.example")
        .count();
    let internal = mailboxes
        .iter()
        .filter(|m| {
            m["ForwardingAddress"]
                .as_str()
                .is_some_and(|a| a.ends_with("@contoso.onmicrosoft.com"))
        })
        .count();
    assert_eq!((external, internal), (1, 1));
    // Set-Mailbox changes forwarding, so a plugin that turns it off can be tried here.
    let forwarder = mailboxes
        .iter()
        .find(|m| m["ForwardingSmtpAddress"] == "smtp:records@fabrikam.example")
        .and_then(|m| m["PrimarySmtpAddress"].as_str())
        .unwrap()
        .to_owned();
    // An empty string is refused by the binder, as Exchange refuses it; `$null` clears.
    let out = warden(
        &[
            "invoke",
            "Set-Mailbox",
            "-p",
            &format!("Identity={forwarder}"),
            "-p",
            "ForwardingSmtpAddress=\"\"",
        ],
        &author.env,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("because it is an empty string"),
        "{}",
        text(&out).1
    );
    for set in [
        "ForwardingSmtpAddress=null",
        "DeliverToMailboxAndForward=false",
    ] {
        let out = warden(
            &[
                "invoke",
                "Set-Mailbox",
                "-p",
                &format!("Identity={forwarder}"),
                "-p",
                set,
            ],
            &author.env,
        )
        .await;
        assert!(out.status.success(), "{set}: {}", text(&out).1);
    }
    let after = author
        .emu
        .exosim
        .mailbox(&author.emu.tenant_id(), &forwarder)
        .unwrap();
    assert_eq!(after["ForwardingSmtpAddress"], Value::Null, "{after}");
    assert_eq!(after["DeliverToMailboxAndForward"], false, "{after}");
    assert_eq!(
        mailboxes.len(),
        author.emu.exosim.mailbox_count(&author.emu.tenant_id())
    );
    assert_eq!(mailboxes.len(), 25, "the fixtures are within --mailboxes");
}

// `-v` shows warden's own decisions and calls, not its dependencies' (HTTP, TLS); those come
// only with the highest level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_shows_warden_first_and_dependencies_only_at_the_highest_level() {
    let author = Author::start().await;
    let mut levels = Vec::new();
    for flag in ["-v", "-vvv"] {
        let out = warden(
            &[
                "invoke",
                "Get-Mailbox",
                "-p",
                "ResultSize=1",
                flag,
                "--output",
                "json",
            ],
            &author.env,
        )
        .await;
        assert!(out.status.success(), "{}", text(&out).1);
        levels.push(text(&out).1);
    }
    // hyper-util's connection pool and rustls log at debug/trace.
    let dependency = |log: &str| {
        log.lines()
            .filter(|l| l.contains("DEBUG") || l.contains("TRACE"))
            .any(|l| l.contains("connect") || l.contains("pool") || l.contains("tls"))
    };
    assert!(!dependency(&levels[0]), "-v: {}", levels[0]);
    assert!(dependency(&levels[1]), "-vvv: {}", levels[1]);

    // A guest's calls: each one the policy let through, by cmdlet and parameter names.
    let (probe, policy) = author.probe();
    let out = warden(
        &[
            "run",
            &probe,
            "--policy",
            &policy,
            "-v",
            "--",
            "invoke",
            "Get-Mailbox",
            r#"{"ResultSize":2}"#,
        ],
        &author.env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("calling Exchange")
            && l.contains("cmdlet=Get-Mailbox")
            && l.contains("parameters=ResultSize")),
        "{stderr}"
    );
    assert!(!dependency(&stderr), "{stderr}");
}
