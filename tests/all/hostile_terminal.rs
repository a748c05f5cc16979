//! What a guest says cannot steer the operator's terminal, cannot blow up rendering, and
//! cannot flood the audit trail (issue 13 items 6 and 11, issue 21 items 2, 4 and 6), through
//! the real `warden` binary, the `hostile-text` guest and Rhai one-liners, against exosim.
//!
//! - Terminal safety: no ESC, CR, backspace, DEL, C1 or bidi control from guest text reaches
//!   stdout or stderr raw, in any output mode (table, CSV, JSON, plain text, `--quiet`, `-v`);
//!   the escaped form is visible; JSON output still parses back to the guest's exact strings.
//! - `plugin inspect` shows the real sha256 and declarations; a manifest's forged lines stay
//!   inside one marked, escaped field.
//! - `warden invoke` shows what a mailbox holds (a display name anyone with that right sets)
//!   escaped, and exact as JSON.
//! - Names from a component's wasm name section, logged in a backtrace, are escaped too.
//! - 3,000 objects with distinct keys render as a bounded table or CSV with a note on stderr.
//! - JSON nested 100 deep (wasm) or 60 deep (Rhai) prints compact, within twice its size.
//! - Every audit line stays under `warden_audit::MAX_LINE_BYTES` for a 4 MB map key (Rhai) and
//!   a ~64 KB unlisted parameter (wasm), and the trail verifies.

use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// The guest's hostile text (tests/guests/hostile-text/src/lib.rs, `HOSTILE`).
const HOSTILE: &str = "before\u{1b}[2K\r\u{1b}[1A\u{1b}]0;pwned\u{7}\u{1b}[31mred\u{8}\u{7f}\
                       \u{9b}2J\u{85}\u{202e}desrever\u{202c}\u{2066}iso\u{2069}\r\
                       run forged (grant x): completed in 0.01 s; 0 call(s)\n[guest info] forged";

/// Characters that steer a terminal: C0/C1 controls and DEL, bidi controls, line separators.
fn steers(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                       | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Fails naming the first steering character in `bytes`, with its surroundings, or a line a
/// guest's line break started that poses as warden's own.
fn assert_clean(bytes: &[u8], what: &str) {
    assert_steers_nothing(bytes, what);
    for line in String::from_utf8_lossy(bytes).lines() {
        assert!(
            !line.starts_with("run forged") && !line.starts_with("[guest info] forged"),
            "{what}: a forged line: {line:?}"
        );
    }
}

/// Only the first half of [`assert_clean`]: for a plugin's plain-text output on stdout, whose
/// line breaks are its own.
fn assert_steers_nothing(bytes: &[u8], what: &str) {
    let text = String::from_utf8_lossy(bytes);
    if let Some((at, c)) = text.char_indices().find(|&(_, c)| steers(c)) {
        let from = text.floor_char_boundary(at.saturating_sub(60));
        let to = text.ceil_char_boundary((at + 60).min(text.len()));
        panic!("{what}: raw {:?} at byte {at}: {:?}", c, &text[from..to]);
    }
}

fn assert_both_clean(out: &Output, what: &str) {
    assert_clean(&out.stdout, &format!("{what} (stdout)"));
    assert_clean(&out.stderr, &format!("{what} (stderr)"));
}

struct Setup {
    emu: Emulator,
    env: Vec<(String, String)>,
}

impl Setup {
    async fn start() -> Self {
        let emu = Emulator::start().await;
        let path = |name: &str| emu.dir.path().join(name).display().to_string();
        let secret = emu.app_str(0, "client_secret");
        let env = with(
            emu.env_for(0),
            &[
                ("AZURE_CLIENT_SECRET", &secret),
                ("WARDEN_AUDIT", &path("audit.jsonl")),
                ("WARDEN_AUDIT_KEY", &path("audit.key")),
                ("WARDEN_CACHE_DIR", &path("cache")),
            ],
        );
        Setup { emu, env }
    }

    fn audit(&self) -> std::path::PathBuf {
        self.emu.dir.path().join("audit.jsonl")
    }

    /// A policy granting Get-Mailbox (Identity, ResultSize) to the hostile plugin and to each
    /// one-liner.
    fn policy(&self, wasm: &Path, one_liners: &[&str]) -> String {
        let sha = warden_policy::sha256_hex(&std::fs::read(wasm).unwrap());
        let mut text = format!(
            "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\n\
             max_result_size = 5\n[roles.reader.cmdlet.parameters]\nIdentity = {{ any = true }}\n\n\
             [[grant]]\nid = \"hostile\"\nplugin = \"hostile-text\"\nsha256 = \"{sha}\"\n\
             roles = [\"reader\"]\n"
        );
        for (i, source) in one_liners.iter().enumerate() {
            let pin = warden_policy::Principal::inline_script(source)
                .sha256()
                .to_owned();
            text.push_str(&format!(
                "\n[[grant]]\nid = \"one-liner-{i}\"\nscript_inline_sha256 = \"{pin}\"\n\
                 roles = [\"reader\"]\n"
            ));
        }
        let path = self.emu.dir.path().join("policy.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    async fn warden(&self, args: &[&str]) -> Output {
        warden(args, &self.env).await
    }
}

fn hostile_guest() -> std::path::PathBuf {
    guest("tests/guests", "hostile-text")
}

/// `HOSTILE` as a Rhai string literal (every non-printing character as `\u`/`\U`).
fn rhai_literal(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_text_is_escaped_in_every_output_mode() {
    let setup = Setup::start().await;
    let wasm = hostile_guest();
    let wasm_str = wasm.display().to_string();
    let policy = setup.policy(&wasm, &[]);
    let run = |extra: &'static [&'static str], action: &'static [&'static str]| {
        let mut args = vec!["run", wasm_str.as_str(), "--policy", policy.as_str()];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(action);
        args
    };

    // Logs, captured stdout/stderr, progress and a table of hostile keys and values.
    for (extra, what) in [
        (&[][..], "table"),
        (&["--output", "csv"][..], "csv"),
        (&["--output", "json"][..], "json"),
        (&["--quiet"][..], "quiet"),
        (&["-v"][..], "verbose"),
    ] {
        let out = setup.warden(&run(extra, &["show"])).await;
        assert!(out.status.success(), "{what}: {}", text(&out).1);
        assert_both_clean(&out, &format!("run show {what}"));
        let (stdout, stderr) = text(&out);
        if what == "json" {
            // JSON stays exact: the guest's strings come back unchanged.
            let value: Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(value[0]["Name"], HOSTILE, "{stdout}");
            assert_eq!(value[0][HOSTILE], "value under a hostile key");
        } else {
            assert!(stdout.contains(r"before\x1b[2K\r"), "{what}: {stdout}");
        }
        if what != "quiet" {
            assert!(
                stderr.contains(r"[guest info] before\x1b[2K\r\x1b[1A"),
                "{what}: the log line, escaped: {stderr}"
            );
            assert!(stderr.contains(r"[guest stdout] before\x1b"), "{stderr}");
            assert!(
                stderr.contains(r"\u{9b}2J\u{85}\u{202e}desrever"),
                "{stderr}"
            );
        }
    }

    // Plain-text output, and the guest's error (shown even with --quiet).
    for (extra, action, what) in [
        (&[][..], &["text"][..], "text"),
        (&["--output", "csv"][..], &["text"][..], "text as csv"),
        (&[][..], &["fail"][..], "fail"),
        (&["--quiet"][..], &["fail"][..], "fail quiet"),
    ] {
        let out = setup.warden(&run(extra, action)).await;
        assert_steers_nothing(&out.stdout, what);
        assert_clean(&out.stderr, what);
        if action == ["fail"] {
            assert_eq!(out.status.code(), Some(1), "{what}");
            assert!(
                text(&out)
                    .1
                    .contains(r"error: the guest failed: before\x1b[2K\r"),
                "{what}: {}",
                text(&out).1
            );
        } else {
            assert!(
                text(&out).0.contains(r"\u{202e}desrever"),
                "{}",
                text(&out).0
            );
        }
    }
    let out = setup.warden(&run(&["--output", "json"], &["text"])).await;
    assert_clean(&out.stdout, "text as json");
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        HOSTILE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripts_text_is_escaped_in_every_output_mode() {
    let setup = Setup::start().await;
    let h = rhai_literal(HOSTILE);
    let show = format!(
        "log::info({h}); log::warn({h}); print({h}); debug({h}); progress(1, 2, {h}); \
         let m = #{{}}; m[{h}] = {h}; m.Name = {h}; [m, #{{Note: \"cell \" + {h}}}]"
    );
    let fail = format!("throw {h}");
    let policy = setup.policy(&hostile_guest(), &[&show, &fail]);
    for extra in [
        &[][..],
        &["--output", "csv"][..],
        &["--output", "json"][..],
        &["--quiet"][..],
        &["-v"][..],
    ] {
        let mut args = vec!["eval", show.as_str(), "--policy", policy.as_str()];
        args.extend_from_slice(extra);
        let out = setup.warden(&args).await;
        assert!(out.status.success(), "{extra:?}: {}", text(&out).1);
        assert_both_clean(&out, &format!("eval {extra:?}"));
        if extra == ["--output", "json"] {
            let value: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(value[0]["Name"], HOSTILE);
        }
    }
    for extra in [&[][..], &["--quiet"][..]] {
        let mut args = vec!["eval", fail.as_str(), "--policy", policy.as_str()];
        args.extend_from_slice(extra);
        let out = setup.warden(&args).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);
        assert_both_clean(&out, &format!("eval throw {extra:?}"));
        assert!(text(&out).1.contains(r"before\x1b[2K"), "{}", text(&out).1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_inspect_keeps_a_manifests_words_in_one_marked_escaped_field() {
    let setup = Setup::start().await;
    let wasm = hostile_guest();
    let wasm_str = wasm.display().to_string();
    let sha = warden_policy::sha256_hex(&std::fs::read(&wasm).unwrap());
    let policy = setup.policy(&wasm, &[]);
    for extra in [&[][..], &["--policy", policy.as_str()][..]] {
        let mut args = vec!["plugin", "inspect", wasm_str.as_str()];
        args.extend_from_slice(extra);
        let out = setup.warden(&args).await;
        assert!(out.status.success(), "{}", text(&out).1);
        assert_both_clean(&out, "plugin inspect");
        let stdout = text(&out).0;
        // The sha256 line is the real one, and no other hash poses as it (the grant snippet
        // quotes the real one); exactly one declares block, the real one.
        let sha_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("sha256")).collect();
        assert_eq!(
            sha_lines.first().copied(),
            Some(format!("sha256       {sha}").as_str()),
            "{stdout}"
        );
        assert!(sha_lines.iter().all(|l| l.contains(&sha)), "{stdout}");
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with("declares")).count(),
            1,
            "{stdout}"
        );
        assert!(
            stdout.contains("declares\n  Get-Mailbox Identity, ResultSize\n"),
            "{stdout}"
        );
        let description = stdout
            .lines()
            .find(|l| l.trim_start().starts_with("description"))
            .expect("the description is shown");
        assert!(
            description.contains(r"A friendly report\x1b[2K\r\nsha256       0000"),
            "{description}"
        );
        assert!(stdout.contains("from its manifest (the plugin's own words, escaped):"));
    }
    let out = setup
        .warden(&["plugin", "inspect", &wasm_str, "--output", "json"])
        .await;
    assert_clean(&out.stdout, "plugin inspect --output json");
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        info["plugin"]["description"]
            .as_str()
            .unwrap()
            .starts_with("A friendly report\u{1b}[2K\r\n"),
        "JSON keeps the exact text"
    );
}

/// Stdout of a bounded rendering of 3,000 single-key objects: 16 columns × 3,000 short rows
/// stay far below this (unbounded, it was 3,000 × 3,000 cells: tens of megabytes).
const BOUNDED_STDOUT: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_keys_render_as_a_bounded_table_or_csv_with_a_note() {
    let setup = Setup::start().await;
    let wasm = hostile_guest();
    let wasm_str = wasm.display().to_string();
    let one_liner = "let out = []; for i in 0..3000 { let m = #{}; m[\"k\" + i] = i; \
                     out.push(m); } out";
    let policy = setup.policy(&wasm, &[one_liner]);
    let wasm_run = |format: &'static str| {
        vec![
            "run", &wasm_str, "--policy", &policy, "--output", format, "--", "keys", "3000",
        ]
    };
    let rhai_run =
        |format: &'static str| vec!["eval", one_liner, "--policy", &policy, "--output", format];
    for args in [
        wasm_run("table"),
        wasm_run("csv"),
        rhai_run("table"),
        rhai_run("csv"),
    ] {
        let out = setup.warden(&args).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            out.stdout.len() < BOUNDED_STDOUT,
            "{args:?}: {} bytes of stdout",
            out.stdout.len()
        );
        assert!(
            stderr.contains("of 3000 columns") && stderr.contains("more columns not shown"),
            "{args:?}: the fold is named: {stderr}"
        );
        // Every row is still there: 3,000 rows plus the header (and the table's rule).
        let rows = stdout.lines().count();
        assert!((3001..=3002).contains(&rows), "{args:?}: {rows} lines");
    }
    // JSON has everything.
    let out = setup.warden(&wasm_run("json")).await;
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().map(Vec::len), Some(3000));
    assert_eq!(all[2999]["k2999"], 2999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_prints_within_a_small_multiple_of_its_size() {
    let setup = Setup::start().await;
    let wasm = hostile_guest();
    let wasm_str = wasm.display().to_string();
    // Arrays around 100,000 zeros: ~200 KB of JSON, 12-20 MB pretty-printed (each zero on a
    // line of its own behind two spaces per level). Rhai results nest at most 64 deep.
    let one_liner = "let a = []; a.pad(100000, 0); for d in 0..59 { a = [a]; } a";
    let policy = setup.policy(&wasm, &[one_liner]);
    for format in ["table", "json"] {
        let wasm_run = vec![
            "run", &wasm_str, "--policy", &policy, "--output", format, "--", "nested", "100",
            "100000",
        ];
        let rhai_run = vec!["eval", one_liner, "--policy", &policy, "--output", format];
        for (args, depth) in [(wasm_run, 100), (rhai_run, 60)] {
            let out = setup.warden(&args).await;
            let (_, stderr) = text(&out);
            assert!(out.status.success(), "{args:?}: {stderr}");
            let value: Value = serde_json::from_slice(&out.stdout).unwrap();
            let compact = serde_json::to_vec(&value).unwrap().len();
            assert!(
                out.stdout.len() <= compact * 2 + 1024,
                "{args:?}: {} bytes of stdout for {compact} bytes of JSON",
                out.stdout.len()
            );
            assert!(stderr.contains("printed compact"), "{args:?}: {stderr}");
            let mut inner = &value;
            for _ in 1..depth {
                inner = &inner[0];
            }
            assert_eq!(*inner, Value::from(vec![0; 100_000]), "{args:?}: exact");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_stay_under_the_cap_for_huge_keys_and_parameters() {
    let setup = Setup::start().await;
    let wasm = hostile_guest();
    let wasm_str = wasm.display().to_string();
    // A 4 MB map key whose value has no JSON form: the refusal reason quotes the key.
    let four_mb_key = "let k = \"k\"; k.pad(4194304, \"k\"); let m = #{}; m[k] = Fn(\"f\"); \
                       let r = \"allowed\"; try { exo::invoke(\"Get-Mailbox\", m); } \
                       catch (e) { r = \"refused\"; } r";
    let policy = setup.policy(&wasm, &[four_mb_key]);

    let out = setup
        .warden(&["eval", four_mb_key, "--policy", &policy, "--output", "json"])
        .await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(text(&out).0.trim(), "\"refused\"");

    // An unlisted parameter of almost 64 KiB (just under max_parameter_bytes), three times.
    let out = setup
        .warden(&[
            "run",
            &wasm_str,
            "--policy",
            &policy,
            "--output",
            "json",
            "--",
            "big-param",
            "1000",
            "60000",
            "3",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["refused"], 3, "{answer}");

    let trail = std::fs::read_to_string(setup.audit()).unwrap();
    let mut refusals = 0;
    for (n, line) in trail.split_inclusive('\n').enumerate() {
        assert!(
            line.len() <= warden_audit::MAX_LINE_BYTES,
            "audit line {} is {} bytes (cap {})",
            n + 1,
            line.len(),
            warden_audit::MAX_LINE_BYTES
        );
        let value: Value = serde_json::from_str(line).unwrap();
        if value["allowed"] == false {
            refusals += 1;
            assert!(
                line.contains("[cut: "),
                "the refusal says what was cut: {line}"
            );
        }
    }
    assert_eq!(refusals, 4, "{trail}");
    let key = setup.emu.dir.path().join("audit.key").display().to_string();
    let out = setup
        .warden(&[
            "audit",
            "verify",
            &setup.audit().display().to_string(),
            "--key",
            &key,
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out).0);
    // Nothing refused reached Exchange.
    assert_eq!(setup.emu.requests_for("Get-Mailbox"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_escapes_what_a_mailbox_holds_and_json_keeps_it_exact() {
    // Whoever may set a display name chooses text that `warden invoke` shows the operator.
    let setup = Setup::start().await;
    let first = operator_invoke(
        &setup.emu,
        "Get-Mailbox",
        serde_json::json!({"ResultSize": 1}),
    )
    .await[0]["PrimarySmtpAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    operator_invoke(
        &setup.emu,
        "Set-Mailbox",
        serde_json::json!({"Identity": first, "DisplayName": HOSTILE}),
    )
    .await;
    let out = setup
        .warden(&["invoke", "Get-Mailbox", "-p", &format!("Identity={first}")])
        .await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_both_clean(&out, "invoke");
    assert!(text(&out).0.contains(r"before\x1b[2K"), "{}", text(&out).0);
    let out = setup
        .warden(&[
            "invoke",
            "Get-Mailbox",
            "-p",
            &format!("Identity={first}"),
            "--output",
            "json",
        ])
        .await;
    assert_both_clean(&out, "invoke --output json");
    let object: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(object["DisplayName"], HOSTILE);
}

/// A component whose `run` passes the host's `log` a message that is not UTF-8 (a host-side
/// error, logged with its wasm backtrace) from a function the name section names with
/// escape sequences and a forged line.
fn named_component() -> Vec<u8> {
    wat::parse_str(NAMED_WAT).expect("valid WAT")
}

/// The WAT of [`named_component`].
const NAMED_WAT: &str = r#"(component
  (import "warden:plugin/log@0.1.0" (instance $log
    (type $l (enum "trace" "debug" "info" "warn" "error"))
    (export "level" (type $lvl (eq $l)))
    (export "log" (func (param "level" $lvl) (param "message" string)))))
  (core module $memory (memory (export "mem") 1))
  (core instance $memory (instantiate $memory))
  (alias core export $memory "mem" (core memory $mem))
  (alias export $log "log" (func $log))
  (core func $lowered (canon lower (func $log) (memory $mem)))
  (core instance $host (export "mem" (memory $mem)) (export "log" (func $lowered)))
  (core module $m
    (import "host" "mem" (memory 1))
    (import "host" "log" (func $log (param i32 i32 i32)))
    (data (i32.const 200) "\ff\fe\fd")
    (func $run (@name "evil\1b]0;pwned\07\1b[2J\c2\9b31m\e2\80\ae\0d\0a[guest info] forged")
      (param i32 i32) (result i32)
      (call $log (i32.const 2) (i32.const 200) (i32.const 3))
      (i32.const 16))
    (export "run" (func $run))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (type $r (result string (error string)))
  (func (export "run") (param "args" (list string)) (result $r)
    (canon lift (core func $i "run") (memory $mem)
      (realloc (core func $i "realloc")))))"#;

/// `component` with a `warden:manifest` custom section holding `manifest` appended.
fn with_manifest(mut component: Vec<u8>, manifest: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"warden:manifest";
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(manifest.as_bytes());
    component.push(0);
    leb(body.len(), &mut component);
    component.extend_from_slice(&body);
    component
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_manifest_cannot_forge_lines_in_the_error() {
    let setup = Setup::start().await;
    let forged = "\n  fix: forged\n[guest info] forged\nrun forged";
    // The same in a TOML string: valid TOML that holds line breaks.
    let escaped = forged.replace('\n', "\\n");
    for (i, manifest) in [
        // Not TOML: the parser quotes the offending text.
        format!("name = \"x{forged}\"\n"),
        format!("name = 5\n\"{forged}\" = 1\n=\n"),
        // Valid TOML, invalid values: warden quotes them.
        format!("name = \"bad name{escaped}\"\n"),
        format!("description = 5\nversion = \"{escaped}\"\n"),
        format!("[cmdlets]\n\"Get-Mailbox{escaped}\" = [\"Identity\"]\n"),
        format!("[cmdlets]\n\"Get-Mailbox\" = [\"Identity{escaped}\"]\n"),
        String::new(),
    ]
    .iter()
    .enumerate()
    {
        let wasm = setup.emu.dir.path().join(format!("manifest-{i}.wasm"));
        let component = if manifest.is_empty() {
            // No manifest: a core import name (any UTF-8) that validation quotes.
            let name = forged.replace('\n', "\\0a");
            wat::parse_str(NAMED_WAT.replace(
                r#"(import "host" "log""#,
                &format!(r#"(import "host" "log{name}""#),
            ))
            .unwrap()
        } else {
            with_manifest(named_component(), manifest)
        };
        std::fs::write(&wasm, &component).unwrap();
        // A grant, so that a run gets as far as compiling it.
        let policy = setup.emu.dir.path().join(format!("manifest-{i}.toml"));
        std::fs::write(
            &policy,
            format!(
                "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\n\n\
                 [[grant]]\nid = \"m\"\nplugin = \"manifest-{i}\"\nsha256 = \"{}\"\n\
                 roles = [\"reader\"]\n",
                warden_policy::sha256_hex(&component)
            ),
        )
        .unwrap();
        let policy = policy.display().to_string();
        let wasm = wasm.display().to_string();
        for args in [
            vec!["run", wasm.as_str(), "--policy", policy.as_str()],
            vec!["plugin", "inspect", wasm.as_str()],
        ] {
            let out = setup.warden(&args).await;
            let (_, stderr) = text(&out);
            // Without a manifest the component inspects fine.
            if !manifest.is_empty() || args[0] == "run" {
                assert!(!out.status.success(), "{manifest:?} {args:?}: {stderr}");
            }
            assert_both_clean(&out, &format!("{manifest:?} {args:?}"));
            assert!(
                stderr
                    .lines()
                    .all(|l| !l.trim_start().starts_with("fix: forged")),
                "{manifest:?} {args:?}: a forged fix line: {stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_file_name_cannot_forge_lines_in_the_error() {
    let setup = Setup::start().await;
    let policy = setup.policy(&hostile_guest(), &[]);
    // Whoever ships the file names it; its stem is the plugin's name when it has no manifest.
    let name = "evil\n  fix: forged\n[guest info] forged\nrun forged\u{1b}[2K";
    for (what, bytes) in [
        ("not wasm", b"not wasm".to_vec()),
        ("a component no grant names", named_component()),
    ] {
        let wasm = setup.emu.dir.path().join(format!("{name} {what}.wasm"));
        std::fs::write(&wasm, bytes).unwrap();
        let wasm = wasm.display().to_string();
        let out = setup
            .warden(&["run", wasm.as_str(), "--policy", policy.as_str()])
            .await;
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{what}: {stderr}");
        let inspected = setup.warden(&["plugin", "inspect", wasm.as_str()]).await;
        for out in [&out, &inspected] {
            assert_both_clean(out, what);
            let (stdout, stderr) = text(out);
            assert!(
                stdout
                    .lines()
                    .chain(stderr.lines())
                    .all(|l| !l.trim_start().starts_with("fix: forged")),
                "{what}: a forged fix line: {stdout}{stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_the_wasm_name_section_reach_the_terminal_escaped() {
    let setup = Setup::start().await;
    let wasm = setup.emu.dir.path().join("named.wasm");
    std::fs::write(&wasm, named_component()).unwrap();
    let sha = warden_policy::sha256_hex(&std::fs::read(&wasm).unwrap());
    let policy = setup.emu.dir.path().join("named-policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\n\n\
             [[grant]]\nid = \"named\"\nplugin = \"named\"\nsha256 = \"{sha}\"\nroles = [\"reader\"]\n"
        ),
    )
    .unwrap();
    let (wasm, policy) = (wasm.display().to_string(), policy.display().to_string());
    for extra in [&[][..], &["--quiet"][..], &["-vvv"][..]] {
        let mut args = vec!["run", wasm.as_str(), "--policy", policy.as_str()];
        args.extend_from_slice(extra);
        // It traps (its log message is not UTF-8): a failure of the guest, exit 1, not a limit.
        // NO_COLOR: the logger's own colours are not what is tested here.
        let out = warden(&args, &with(setup.env.clone(), &[("NO_COLOR", "1")])).await;
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", text(&out).1);
        assert_both_clean(&out, &format!("named {extra:?}"));
    }
}
