//! Signed plugins through the `warden` binary: keygen, sign (embedded and detached), verify,
//! inspect, and `run` under a grant with `signed_by` (and `min_version`, and a sha256 pin as
//! well): each refusal says which case it is, nothing unverified is compiled, and the signer's
//! key id is in the run's audit lines. Hostile signature layouts are refused. And
//! `plugin new --lang rust` scaffolds a plugin that builds and runs under its own policy.

use crate::support::*;
use std::path::PathBuf;

struct Signing {
    emu: Emulator,
    env: Env,
    dir: PathBuf,
    probe: PathBuf,
    name: String,
}

impl Signing {
    async fn start() -> Self {
        let emu = Emulator::start().await;
        let env = operator_env(&emu);
        let dir = emu.dir.path().join("signing");
        std::fs::create_dir_all(&dir).unwrap();
        let probe = guest("tests/guests", "probe");
        let info = warden(
            &[
                "plugin",
                "inspect",
                &probe.display().to_string(),
                "--output",
                "json",
            ],
            &env,
        )
        .await;
        let value: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        let name = value["plugin"]["name"].as_str().unwrap().to_owned();
        Self {
            emu,
            env,
            dir,
            probe,
            name,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A fresh copy of the probe component named `file`.
    fn copy(&self, file: &str) -> String {
        let path = self.path(file);
        std::fs::copy(&self.probe, &path).unwrap();
        path
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = warden(args, &self.env).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
        stdout
    }

    async fn keygen(&self, name: &str) -> String {
        self.ok(&[
            "plugin",
            "keygen",
            "--out",
            &self.path("keys"),
            "--name",
            name,
        ])
        .await;
        std::fs::read_to_string(self.dir.join("keys").join(format!("{name}.pub"))).unwrap()
    }

    fn key_file(&self, name: &str) -> String {
        self.dir
            .join("keys")
            .join(format!("{name}.key"))
            .display()
            .to_string()
    }

    /// A policy granting the probe Get-Mailbox (ResultSize ≤ 5) by signer, with `trust` and
    /// the grant's extra lines.
    fn policy(&self, file: &str, trust: &str, grant: &str) -> String {
        let path = self.path(file);
        std::fs::write(
            &path,
            format!(
                "version = 1\n{trust}\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\nmax_result_size = 5\n\n[[grant]]\nid = \"probe\"\nplugin = \"{}\"\n{grant}\nroles = [\"reader\"]\n",
                self.name
            ),
        )
        .unwrap();
        path
    }

    /// Runs `plugin` under `policy`, compiling into the shared code cache (which only
    /// refused runs use, so it stays empty): (exit code, stderr).
    async fn run(&self, plugin: &str, policy: &str) -> (Option<i32>, String) {
        self.run_with(plugin, policy, &[]).await
    }

    /// Runs a plugin the policy accepts, compiling into a cache of its own.
    async fn run_accepted(&self, plugin: &str, policy: &str) -> (Option<i32>, String) {
        let cache = self.path("accepted-cache");
        self.run_with(plugin, policy, &["--cache-dir", &cache])
            .await
    }

    async fn run_with(&self, plugin: &str, policy: &str, flags: &[&str]) -> (Option<i32>, String) {
        let mut args = vec!["run", plugin, "--policy", policy];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "invoke", "Get-Mailbox", r#"{"ResultSize":1}"#]);
        let out = warden(&args, &self.env).await;
        (out.status.code(), text(&out).1)
    }

    async fn refused(&self, plugin: &str, policy: &str, says: &str) {
        let (code, stderr) = self.run(plugin, policy).await;
        assert_eq!(code, Some(3), "refused: {stderr}");
        assert!(stderr.contains(says), "the refusal says {says:?}: {stderr}");
        assert_eq!(
            self.compiled(),
            0,
            "nothing refused was compiled (the code cache is empty): {stderr}"
        );
    }

    /// Compiled components in the code cache: the witness that nothing was compiled.
    fn compiled(&self) -> usize {
        std::fs::read_dir(self.emu.dir.path().join("cache"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn trust(name: &str, public_pem: &str, extra: &str) -> String {
    format!("[trust.{name}]\npublic_key = \"\"\"\n{public_pem}\"\"\"\n{extra}\n")
}

fn key_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("key id"))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("a key id line: {stdout}"))
}

/// The first section of a signed component (its signature section), whole.
fn first_section(component: &[u8]) -> Vec<u8> {
    let (len, used) = leb(&component[9..]);
    component[8..9 + used + len].to_vec()
}

fn leb(bytes: &[u8]) -> (usize, usize) {
    let (mut value, mut shift) = (0usize, 0);
    for (i, b) in bytes.iter().enumerate() {
        value |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
        shift += 7;
    }
    panic!("cut short")
}

fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![u8::try_from(name.len()).unwrap()];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = vec![0];
    let mut len = body.len();
    loop {
        let byte = u8::try_from(len & 0x7f).unwrap();
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_plugin_runs_under_signed_by_and_every_other_case_is_refused_saying_why() {
    let s = Signing::start().await;
    let acme = s.keygen("acme").await;
    let other = s.keygen("other").await;
    // The secret key file is 0600 and its text is never printed.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.key_file("acme"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read_to_string(s.key_file("acme")).unwrap();
    let secret_body: String = secret.lines().filter(|l| !l.starts_with("-----")).collect();

    let policy = s.policy(
        "acme.toml",
        &trust("acme", &acme, ""),
        "signed_by = \"acme\"",
    );

    // Unsigned.
    let unsigned = s.copy("unsigned.wasm");
    s.refused(&unsigned, &policy, "it is unsigned").await;

    // Signed by another key.
    let by_other = s.copy("other.wasm");
    s.ok(&["plugin", "sign", &by_other, "--key", &s.key_file("other")])
        .await;
    s.refused(&by_other, &policy, "signed by another key").await;

    // Signed by acme: runs, and the audit lines carry the key id.
    let signed = s.copy("signed.wasm");
    std::fs::set_permissions(&signed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s
        .ok(&["plugin", "sign", &signed, "--key", &s.key_file("acme")])
        .await;
    let mode = std::fs::metadata(&signed).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o644,
        "signing in place keeps the file's mode"
    );
    assert!(!out.contains(&secret_body));
    let acme_id = key_id(&out);
    let (code, stderr) = s.run_accepted(&signed, &policy).await;
    assert_eq!(code, Some(0), "{stderr}");
    let audit = std::fs::read_to_string(s.emu.dir.path().join("audit.jsonl")).unwrap();
    let run_lines: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("Get-Mailbox") || l.contains("run started"))
        .collect();
    assert!(!run_lines.is_empty(), "{audit}");
    for line in &run_lines {
        assert!(
            line.contains(&format!("\"signer\":\"{acme_id}\"")),
            "every line of the run names the signer: {line}"
        );
    }

    // verify and inspect say the same.
    let out = s
        .ok(&[
            "plugin",
            "verify",
            &signed,
            "--key",
            &s.path("keys/acme.pub"),
        ])
        .await;
    assert!(out.contains(&format!("signed by key {acme_id}")), "{out}");
    let wrong = warden(
        &[
            "plugin",
            "verify",
            &signed,
            "--key",
            &s.path("keys/other.pub"),
        ],
        &s.env,
    )
    .await;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(text(&wrong).0.contains("another key"), "{}", text(&wrong).0);
    let out = s
        .ok(&["plugin", "inspect", &signed, "--policy", &policy])
        .await;
    assert!(
        out.contains(&format!("signature    embedded, by key {acme_id}")),
        "{out}"
    );
    assert!(
        out.contains("grant probe accepts it (signed by acme)"),
        "{out}"
    );

    // Changed after signing.
    let tampered = s.path("tampered.wasm");
    let mut bytes = std::fs::read(&signed).unwrap();
    bytes.extend_from_slice(&custom_section("added-after-signing", b"x"));
    std::fs::write(&tampered, &bytes).unwrap();
    s.refused(&tampered, &policy, "changed after it was signed")
        .await;

    // Revoked (the publisher has a new key; the old one is revoked).
    let revoked = s.policy(
        "revoked.toml",
        &format!(
            "[trust.acme]\npublic_keys = [\"\"\"\n{other}\"\"\", \"\"\"\n{acme}\"\"\"]\nrevoked = [\"{acme_id}\"]\n"
        ),
        "signed_by = \"acme\"",
    );
    s.refused(
        &signed,
        &revoked,
        &format!("key {acme_id}, which the policy revokes"),
    )
    .await;
    // `plugin verify` under that policy: the key verifies, but it is revoked: not 0.
    let out = warden(&["plugin", "verify", &signed, "--policy", &revoked], &s.env).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).0);
    assert!(
        text(&out)
            .0
            .contains(&format!("revoked      key {acme_id}")),
        "{}",
        text(&out).0
    );
    // Revoked by another publisher's entry: revoked for acme too (revocation is policy-wide).
    let elsewhere = s.policy(
        "revoked-elsewhere.toml",
        &format!(
            "{}{}",
            trust("acme", &acme, ""),
            trust("beta", &other, &format!("revoked = [\"{acme_id}\"]"))
        ),
        "signed_by = \"acme\"",
    );
    s.refused(
        &signed,
        &elsewhere,
        &format!("key {acme_id}, which the policy revokes"),
    )
    .await;
    // What inspect advises after a signature refusal: the signature or the trust, not a pin.
    let out = s
        .ok(&["plugin", "inspect", &signed, "--policy", &revoked])
        .await;
    assert!(
        out.contains("signed again") && !out.contains("re-pin"),
        "{out}"
    );

    // Older than min_version (the probe's manifest says its crate version, 0.1.0).
    let newer = s.policy(
        "newer.toml",
        &trust("acme", &acme, ""),
        "signed_by = \"acme\"\nmin_version = \"0.2.0\"",
    );
    s.refused(&signed, &newer, "older than the grant's min_version 0.2.0")
        .await;

    // A sha256 pin and signed_by: both must hold.
    let sha = warden_policy::sha256_hex(&std::fs::read(&signed).unwrap());
    let both = s.policy(
        "both.toml",
        &trust("acme", &acme, ""),
        &format!("signed_by = \"acme\"\nsha256 = \"{}\"", "1".repeat(64)),
    );
    s.refused(&signed, &both, "pins").await;
    let both = s.policy(
        "both-other.toml",
        &trust("acme", &acme, ""),
        &format!(
            "signed_by = \"acme\"\nsha256 = \"{}\"",
            warden_policy::sha256_hex(&std::fs::read(&by_other).unwrap())
        ),
    );
    s.refused(&by_other, &both, "signed by another key").await;
    let both = s.policy(
        "both-ok.toml",
        &trust("acme", &acme, ""),
        &format!("signed_by = \"acme\"\nsha256 = \"{sha}\""),
    );
    assert_eq!(s.run_accepted(&signed, &both).await.0, Some(0));
    assert_eq!(s.compiled(), 0, "refused runs compiled nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_plugin_named_by_its_file_name_gets_no_signed_by_grant() {
    // A component without a manifest name is named by its file stem, which its signature does
    // not cover: renamed to another plugin's name, it must not get that plugin's signed_by
    // grant.
    let s = Signing::start().await;
    let acme = s.keygen("acme").await;
    let renamed = s.path(&format!("{}.wasm", s.name));
    std::fs::copy(guest("tests/guests", "no-manifest"), &renamed).unwrap();
    s.ok(&["plugin", "sign", &renamed, "--key", &s.key_file("acme")])
        .await;
    let policy = s.policy(
        "acme.toml",
        &trust("acme", &acme, ""),
        "signed_by = \"acme\"",
    );
    s.refused(
        &renamed,
        &policy,
        "its name comes from the file name, not a signed manifest: build it with the SDK's manifest",
    )
    .await;
    let out = warden(&["plugin", "verify", &renamed, "--policy", &policy], &s.env).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_signatures_missing_or_for_another_build_are_refused() {
    let s = Signing::start().await;
    let acme = s.keygen("acme").await;
    let policy = s.policy(
        "acme.toml",
        &trust("acme", &acme, ""),
        "signed_by = \"acme\"",
    );
    let plugin = s.copy("detached.wasm");
    let before = std::fs::read(&plugin).unwrap();
    s.ok(&[
        "plugin",
        "sign",
        &plugin,
        "--key",
        &s.key_file("acme"),
        "--detached",
    ])
    .await;
    assert_eq!(std::fs::read(&plugin).unwrap(), before, "left unchanged");
    let sig = format!("{plugin}.sig");
    let signature = std::fs::read(&sig).unwrap();

    // Missing: the component alone is unsigned.
    std::fs::remove_file(&sig).unwrap();
    s.refused(&plugin, &policy, "it is unsigned").await;

    // Mismatched: the signature of another build beside this one.
    let changed = s.path("changed.wasm");
    let mut bytes = before.clone();
    bytes.extend_from_slice(&custom_section("another-build", b"1"));
    std::fs::write(&changed, &bytes).unwrap();
    std::fs::write(format!("{changed}.sig"), &signature).unwrap();
    s.refused(&changed, &policy, "changed after it was signed")
        .await;

    // A .sig that cannot be read is reported, not taken as "unsigned"; a FIFO does not block.
    std::fs::create_dir(&sig).unwrap();
    let (code, stderr) = s.run(&plugin, &policy).await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    std::fs::remove_dir(&sig).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &sig,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let (code, stderr) =
        tokio::time::timeout(std::time::Duration::from_secs(60), s.run(&plugin, &policy))
            .await
            .expect("a FIFO as the .sig does not block the load");
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    let out = warden(&["plugin", "inspect", &plugin, "--policy", &policy], &s.env).await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("not a regular file"),
        "{}",
        text(&out).1
    );
    std::fs::remove_file(&sig).unwrap();
    assert_eq!(s.compiled(), 0);

    // In place: runs.
    std::fs::write(&sig, &signature).unwrap();
    let (code, stderr) = s.run_accepted(&plugin, &policy).await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_signature_layouts_are_refused() {
    let s = Signing::start().await;
    let acme = s.keygen("acme").await;
    let policy = s.policy(
        "acme.toml",
        &trust("acme", &acme, ""),
        "signed_by = \"acme\"",
    );
    let signed = s.copy("signed.wasm");
    s.ok(&["plugin", "sign", &signed, "--key", &s.key_file("acme")])
        .await;
    let bytes = std::fs::read(&signed).unwrap();
    let section = first_section(&bytes);

    // Two signature sections: the second appended.
    let two = s.path("two.wasm");
    std::fs::write(&two, [bytes.as_slice(), section.as_slice()].concat()).unwrap();
    s.refused(&two, &policy, "it has 2 signature sections")
        .await;

    // A signature covering only the part before a delimiter, with more added after it.
    let partial = s.path("partial.wasm");
    let tail = [
        custom_section("signature_delimiter", &[0; 16]),
        custom_section("added-later", b"payload"),
    ]
    .concat();
    std::fs::write(&partial, [bytes.as_slice(), tail.as_slice()].concat()).unwrap();
    s.refused(&partial, &policy, "covers only part of it").await;

    // A huge signature section, first: refused by its size, never decoded.
    let huge = s.path("huge.wasm");
    let unsigned = std::fs::read(&s.probe).unwrap();
    let big = custom_section("signature", &vec![0x01; 1024 * 1024]);
    std::fs::write(
        &huge,
        [&unsigned[..8], big.as_slice(), &unsigned[8..]].concat(),
    )
    .unwrap();
    s.refused(&huge, &policy, "more than the 65536 allowed")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_validates_trust_entries() {
    let s = Signing::start().await;
    let acme = s.keygen("acme").await;
    let env = &s.env;
    let check = |path: String| async move {
        let out = warden(&["policy", "check", &path], env).await;
        (
            out.status.success(),
            format!("{}{}", text(&out).0, text(&out).1),
        )
    };
    let (ok, out) = check(s.policy(
        "bad-key.toml",
        "[trust.acme]\npublic_key = \"bm90IGEga2V5\"\n",
        "signed_by = \"acme\"",
    ))
    .await;
    assert!(!ok && out.contains("not an Ed25519 public key"), "{out}");
    let (ok, out) = check(s.policy(
        "unknown.toml",
        &trust("acme", &acme, ""),
        "signed_by = \"acne\"",
    ))
    .await;
    assert!(
        !ok && out.contains("names no [trust.acne] entry (the policy trusts acme)"),
        "{out}"
    );
    let (ok, out) = check(s.policy(
        "version.toml",
        &trust("acme", &acme, ""),
        &format!("min_version = \"1.0.0\"\nsha256 = \"{}\"", "0".repeat(64)),
    ))
    .await;
    assert!(!ok && out.contains("min_version needs signed_by"), "{out}");
    let acme_id = {
        let signed = s.copy("for-id.wasm");
        key_id(
            &s.ok(&["plugin", "sign", &signed, "--key", &s.key_file("acme")])
                .await,
        )
    };
    let (ok, out) = check(s.policy(
        "all-revoked.toml",
        &trust("acme", &acme, &format!("revoked = [\"{acme_id}\"]")),
        "signed_by = \"acme\"",
    ))
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("every key it lists is revoked"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_new_rust_scaffolds_a_plugin_that_builds_and_runs_under_its_policy() {
    let s = Signing::start().await;
    let work = s.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let work_str = work.display().to_string();

    // Refusals first: an unknown language, a name with a path in it, an existing directory.
    let out = warden(
        &["plugin", "new", "--lang", "cobol", "x", "--into", &work_str],
        &s.env,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("choose one of rust, python, js"),
        "{}",
        text(&out).1
    );
    for bad in ["../escape", "a/b", "..", ""] {
        let out = warden(
            &["plugin", "new", "--lang", "rust", bad, "--into", &work_str],
            &s.env,
        )
        .await;
        assert!(!out.status.success(), "{bad:?} refused");
        assert!(
            text(&out).1.contains("no path separators"),
            "{}",
            text(&out).1
        );
    }
    assert!(!s.dir.join("escape").exists());
    std::fs::create_dir(work.join("taken")).unwrap();
    std::fs::write(work.join("taken/keep.txt"), "mine").unwrap();
    let out = warden(
        &[
            "plugin", "new", "--lang", "rust", "taken", "--into", &work_str,
        ],
        &s.env,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("never overwritten"),
        "{}",
        text(&out).1
    );
    assert_eq!(
        std::fs::read_to_string(work.join("taken/keep.txt")).unwrap(),
        "mine"
    );

    // Scaffold, build (offline: the SDK from this checkout, the plugins' lock, whose crates
    // building the example plugins fetched), pin, run.
    guest("plugins", "mailbox-report");
    s.ok(&[
        "plugin",
        "new",
        "--lang",
        "rust",
        "hello-mail",
        "--into",
        &work_str,
    ])
    .await;
    let project = work.join("hello-mail");
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"hello-mail\""), "{manifest}");
    let sdk_line = manifest
        .lines()
        .find(|l| l.starts_with("warden-sdk"))
        .expect("a warden-sdk dependency");
    let local = manifest.replace(
        sdk_line,
        &format!(
            "warden-sdk = {{ path = {:?} }}",
            repo_root().join("sdk").canonicalize().unwrap()
        ),
    );
    std::fs::write(project.join("Cargo.toml"), local).unwrap();
    std::fs::copy(
        repo_root().join("plugins/Cargo.lock"),
        project.join("Cargo.lock"),
    )
    .unwrap();
    let target_dir = crate::support::guests_target_dir();
    let build = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--offline",
            "--quiet",
            "--target",
            "wasm32-wasip2",
        ])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = target_dir.join("wasm32-wasip2/release/hello_mail.wasm");
    let wasm_str = wasm.display().to_string();
    let policy = project.join("policy.toml").display().to_string();
    s.ok(&["policy", "pin", &policy, &wasm_str]).await;
    let out = s
        .ok(&["run", &wasm_str, "--policy", &policy, "--", "3"])
        .await;
    // Its output (a table of its one field): the first three mailboxes of the demo tenant.
    assert!(out.contains("mailboxes"), "{out}");
    assert_eq!(out.matches("; ").count(), 2, "three names: {out}");
    assert_eq!(s.emu.requests_for("Get-Mailbox"), 1);
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(
        readme.contains("hello_mail.wasm") && !readme.contains("{{"),
        "{readme}"
    );
}
