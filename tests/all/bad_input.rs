//! Bad input through the real `warden` binary, one named test per input (`cases!`, in the
//! manner of ripgrep's `rgtest!`): every input a user supplies — config file, environment, PFX,
//! policy, plugin, Rhai script, arguments — is refused with a message naming the input and the
//! fix, exit status 1, no secret in the output, and no partial effect (no audit trail or key
//! written, no token request, nothing sent to exosim). The whole message is kept in
//! `tests/expected/bad_input/<case>.txt` (`WARDEN_TEST_BLESS=1` rewrites it).

use crate::expected::assert_expected;
use crate::support::*;
use std::path::{Path, PathBuf};

/// The client secret every case runs with (unless it removes it): it must never be printed.
const SECRET: &str = "canary-S3cr3t-value";
/// The PFX password of the PFX cases: it must never be printed either.
const PFX_PASSWORD: &str = "canary-Pfx-pa55word";

/// What shows a message carries a fix: ours say `fix:`; clap's say `tip:`, list the possible
/// values, or point at `--help`.
const FIX_MARKERS: &[&str] = &["fix:", "tip:", "[possible values:", "try '--help'"];

/// One bad input: the command line and environment, and what the refusal must say.
struct Case {
    args: Vec<String>,
    env: Env,
    /// What stderr must contain: the input's name, and words of the fix.
    says: Vec<String>,
    /// clap quotes a refused flag's value back; only a flag that never takes a real secret
    /// (`--client-secret`, refused outright) may have the canary quoted.
    quotes_its_value: bool,
}

impl Case {
    fn new(base: &Env, args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: base.clone(),
            says: Vec::new(),
            quotes_its_value: false,
        }
    }

    fn set(mut self, vars: &[(&str, &str)]) -> Self {
        for (name, value) in vars {
            self.env.retain(|(n, _)| n != name);
            self.env.push(((*name).to_owned(), (*value).to_owned()));
        }
        self
    }

    fn unset(mut self, names: &[&str]) -> Self {
        self.env.retain(|(n, _)| !names.contains(&n.as_str()));
        self
    }

    fn says(mut self, needles: &[&str]) -> Self {
        self.says = needles.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    fn quotes_its_value(mut self) -> Self {
        self.quotes_its_value = true;
        self
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> String {
    let file = dir.join(name);
    std::fs::write(&file, contents).unwrap();
    path(&file)
}

/// A PFX (protected by [`PFX_PASSWORD`]) of a self-signed RSA certificate that expired in 2021.
fn expired_pfx(dir: &Path) -> String {
    let work = dir.join("expired-ca");
    std::fs::create_dir_all(work.join("db")).unwrap();
    std::fs::write(work.join("db/index.txt"), "").unwrap();
    std::fs::write(work.join("db/serial"), "01\n").unwrap();
    let config = write(
        &work,
        "ca.cnf",
        "[ca]\ndefault_ca = d\n[d]\ndatabase = db/index.txt\nnew_certs_dir = db\nserial = db/serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n",
    );
    let at = |name: &str| path(&work.join(name));
    let (key, csr, cert, pfx) = (
        at("key.pem"),
        at("req.csr"),
        at("cert.pem"),
        path(&dir.join("expired.pfx")),
    );
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=expired",
    ]);
    // `openssl ca` is the one CLI way to set a validity in the past.
    let output = std::process::Command::new("openssl")
        .current_dir(&work)
        .args([
            "ca",
            "-batch",
            "-config",
            &config,
            "-selfsign",
            "-keyfile",
            &key,
            "-in",
            &csr,
            "-out",
            &cert,
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20210101000000Z",
            "-notext",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let password = format!("pass:{PFX_PASSWORD}");
    openssl(&[
        "pkcs12", "-export", "-inkey", &key, "-in", &cert, "-out", &pfx, "-passout", &password,
    ]);
    pfx
}

/// PFX files that are not usable credentials: one without its private key, one with an EC key.
fn keyless_and_ec_pfx(dir: &Path) -> (String, String) {
    let at = |name: &str| path(&dir.join(name));
    let password = format!("pass:{PFX_PASSWORD}");
    let (rsa_key, rsa_cert, keyless) = (at("rsa.key"), at("rsa.pem"), at("keyless.pfx"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &rsa_key,
        "-out",
        &rsa_cert,
        "-subj",
        "/CN=keyless",
        "-days",
        "30",
    ]);
    openssl(&[
        "pkcs12", "-export", "-nokeys", "-in", &rsa_cert, "-out", &keyless, "-passout", &password,
    ]);
    let (ec_key, ec_cert, ec) = (at("ec.key"), at("ec.pem"), at("ec.pfx"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &ec_key,
        "-out",
        &ec_cert,
        "-subj",
        "/CN=ec",
        "-days",
        "30",
    ]);
    openssl(&[
        "pkcs12", "-export", "-inkey", &ec_key, "-in", &ec_cert, "-out", &ec, "-passout", &password,
    ]);
    (keyless, ec)
}

/// One emulator, the environment every case starts from, and the files a case writes.
struct Fixture {
    emu: Emulator,
    dir: PathBuf,
    audit: PathBuf,
    audit_key: PathBuf,
    base: Env,
}

impl Fixture {
    async fn start() -> Self {
        let emu = Emulator::start().await;
        let dir = emu.dir.path().to_owned();
        let audit = dir.join("audit.jsonl");
        let audit_key = dir.join("state/audit.key");
        let base = with(
            emu.env_for(0),
            &[
                ("AZURE_CLIENT_SECRET", SECRET),
                ("WARDEN_AUDIT", &path(&audit)),
                ("WARDEN_AUDIT_KEY", &path(&audit_key)),
                ("WARDEN_CACHE_DIR", &path(&dir.join("cache"))),
            ],
        );
        Self {
            emu,
            dir,
            audit,
            audit_key,
            base,
        }
    }

    fn case(&self, args: &[&str]) -> Case {
        Case::new(&self.base, args)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        write(&self.dir, name, contents)
    }

    fn missing(&self, name: &str) -> String {
        path(&self.dir.join(name))
    }

    /// `token` with the certificate credential of this PFX file, no client secret.
    fn with_pfx(&self, file: &str) -> Case {
        self.case(&["token"]).unset(&["AZURE_CLIENT_SECRET"]).set(&[
            ("AZURE_CLIENT_CERTIFICATE_PATH", file),
            ("AZURE_CLIENT_CERTIFICATE_PASSWORD", PFX_PASSWORD),
        ])
    }

    /// A policy file that is valid but for `body`.
    fn policy_of(&self, name: &str, body: &str) -> String {
        self.write(name, format!("version = 1\n{body}"))
    }

    fn scripts_policy(&self) -> String {
        path(&repo_root().join("scripts/policy.toml"))
    }

    fn run(&self, plugin: &str) -> Case {
        self.case(&["run", plugin, "--policy", &self.scripts_policy()])
    }

    fn eval_under(&self, policy: &str) -> Case {
        self.case(&["eval", "1 + 1", "--policy", policy])
    }

    fn config_file(&self, name: &str, contents: &str) -> String {
        self.write(name, contents)
    }

    /// The text of a refusal with what differs between runs (temporary paths, the emulator's
    /// address, tenant and app) replaced by names.
    fn normalised(&self, stderr: &str) -> String {
        let repo = repo_root();
        let mut replacements = vec![
            (path(&self.dir), "$TMP".to_owned()),
            (path(&repo), "$REPO".to_owned()),
            // Where the guests are built when CARGO_TARGET_DIR or WARDEN_GUESTS_TARGET_DIR is
            // outside the checkout.
            (
                path(&crate::support::guests_target_dir()),
                "$REPO/target/guests".to_owned(),
            ),
            (self.emu.exosim.url(), "$EXOSIM".to_owned()),
            (self.emu.tenant_id(), "$TENANT_ID".to_owned()),
            (self.emu.app_str(0, "client_id"), "$CLIENT_ID".to_owned()),
        ];
        if let Ok(canonical) = repo.canonicalize() {
            replacements.push((path(&canonical), "$REPO".to_owned()));
        }
        // Longest first, so a path inside another is not cut in two.
        replacements.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        let mut text = stderr.to_owned();
        for (from, to) in replacements {
            text = text.replace(&from, &to);
        }
        // A cut component's offset depends on how big this build of the plugin is.
        if let Some(at) = text.find("(at offset 0x") {
            let digits = at + "(at offset 0x".len();
            let end = text[digits..]
                .find(|c: char| !c.is_ascii_hexdigit())
                .map_or(text.len(), |n| digits + n);
            text.replace_range(at..end, "(at offset $OFFSET");
        }
        text
    }

    /// Runs `case` and checks the refusal: status 1, the needles and a fix in stderr, the whole
    /// message as expected, nothing on stdout, no secret printed, nothing written or sent.
    async fn check(&self, name: &str, case: Case) {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let output = warden(&args, &case.env).await;
        let (stdout, stderr) = text(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{name}: exit status\n{stdout}\n{stderr}"
        );
        for needle in &case.says {
            assert!(
                stderr.contains(needle.as_str()),
                "{name}: stderr lacks {needle:?}:\n{stderr}"
            );
        }
        assert!(
            FIX_MARKERS.iter().any(|m| stderr.contains(m)),
            "{name}: no fix given:\n{stderr}"
        );
        assert!(
            stdout.trim().is_empty(),
            "{name}: stdout holds {stdout:?} on failure"
        );
        if !case.quotes_its_value {
            for secret in [SECRET, PFX_PASSWORD] {
                assert!(
                    !stdout.contains(secret) && !stderr.contains(secret),
                    "{name}: a secret was printed:\n{stderr}"
                );
            }
        }
        assert!(
            !self.audit.exists()
                && !self.audit_key.exists()
                && !self.audit_key.parent().unwrap().exists(),
            "{name}: the audit trail or its key was created"
        );
        assert_eq!(
            self.emu.token_requests(),
            0,
            "{name}: a token was requested"
        );
        assert!(
            self.emu.exosim.exchange_log().is_empty(),
            "{name}: a request reached Exchange"
        );
        assert_expected("bad_input", name, &self.normalised(&stderr));
    }
}

/// One test per bad input: `name: |fixture| case;` runs `case` against a fresh emulator and
/// checks it with [`Fixture::check`], its expected message in `tests/expected/bad_input/name.txt`.
macro_rules! cases {
    ($($name:ident: |$fx:ident| $case:expr;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let $fx = Fixture::start().await;
            let case = $case;
            $fx.check(stringify!($name), case).await;
        }
    )+};
}

// The config file.
cases! {
    config_toml_syntax: |fx| {
        let file = fx.config_file("syntax.toml", "[tenants.contoso\ntenant_id = \"x\"\n");
        fx.case(&["token", "--config", &file])
            .says(&["syntax.toml", "line 1", "config.example.toml"])
    };
    config_unknown_key: |fx| {
        let file = fx.config_file(
            "unknown.toml",
            "[tenants.contoso]\ntenantid = \"contoso.onmicrosoft.com\"\n",
        );
        fx.case(&["token", "--config", &file]).says(&[
            "unknown.toml",
            "line 2",
            "unknown field `tenantid`",
            "tenant_id",
        ])
    };
    config_a_secret_written_inline: |fx| {
        let file = fx.config_file(
            "inline-secret.toml",
            "[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_secret = \"inline\"\n",
        );
        fx.case(&["token", "--config", &file])
            .says(&["inline-secret.toml", "line 3", "client_secret"])
    };
    config_wrong_type: |fx| {
        let file = fx.config_file(
            "type.toml",
            "[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = 5\n",
        );
        fx.case(&["token", "--config", &file])
            .says(&["type.toml", "line 3", "invalid type", "a string"])
    };
    config_default_tenant_without_its_profile: |fx| {
        let file = fx.config_file("default.toml", "default_tenant = \"fabrikam\"\n");
        fx.case(&["token", "--config", &file])
            .says(&["default.toml", "fabrikam", "add the profile"])
    };
    config_missing_file: |fx| {
        fx.case(&["token", "--config", "/nonexistent/warden.toml"])
            .says(&["/nonexistent/warden.toml", "cannot be read", "--config"])
    };
    config_warden_config_names_no_file: |fx| {
        fx.case(&["token"])
            .set(&[("WARDEN_CONFIG", "/nonexistent/env.toml")])
            .says(&["/nonexistent/env.toml", "WARDEN_CONFIG"])
    };
    config_profile_typo: |fx| {
        let good = fx.config_file(
            "warden.toml",
            &format!(
                "[tenants.contoso]\ntenant_id = \"{}\"\nclient_id = \"{}\"\n",
                fx.emu.tenant_id(),
                fx.emu.app_str(0, "client_id")
            ),
        );
        fx.case(&["token", "--config", &good, "--tenant", "contso"])
            .says(&["no tenant profile 'contso'", "did you mean 'contoso'"])
    };
    config_a_profile_but_no_file: |fx| {
        fx.case(&["token", "--tenant", "contoso"])
            .says(&["--tenant contoso", "no config file", "--config FILE"])
    };
}

// The environment.
cases! {
    env_no_credential: |fx| {
        fx.case(&["token"])
            .unset(&["AZURE_CLIENT_SECRET"])
            .says(&["no credential is configured", "AZURE_CLIENT_SECRET"])
    };
    env_no_client_id: |fx| {
        fx.case(&["token"])
            .unset(&["AZURE_CLIENT_ID"])
            .says(&["no client (application) id", "AZURE_CLIENT_ID"])
    };
    env_no_tenant: |fx| {
        fx.case(&["token"])
            .unset(&["AZURE_TENANT_ID"])
            .says(&["no tenant", "AZURE_TENANT_ID"])
    };
    env_tenant_typo: |fx| {
        fx.case(&["token"])
            .set(&[("AZURE_TENANT_ID", "contoso")])
            .says(&["neither a tenant GUID nor a domain", "AZURE_TENANT_ID"])
    };
    env_multi_tenant_alias: |fx| {
        fx.case(&["token"])
            .set(&[("AZURE_TENANT_ID", "common")])
            .says(&["'common'", "AZURE_TENANT_ID", "multi-tenant alias"])
    };
    env_client_id_not_a_guid: |fx| {
        fx.case(&["token"])
            .set(&[("AZURE_CLIENT_ID", "my-app")])
            .says(&["'my-app'", "AZURE_CLIENT_ID", "not a GUID"])
    };
    env_http_authority: |fx| {
        fx.case(&["token"])
            .set(&[("AZURE_AUTHORITY_HOST", "http://127.0.0.1:1")])
            .says(&["not https", "AZURE_AUTHORITY_HOST"])
    };
    env_authority_with_a_path: |fx| {
        fx.case(&["token"])
            .set(&[("AZURE_AUTHORITY_HOST", "https://login.example/tenant")])
            .says(&["AZURE_AUTHORITY_HOST", "scheme and host only"])
    };
    env_ca_file_missing: |fx| {
        fx.case(&["token"])
            .set(&[("WARDEN_CA_FILE", "/nonexistent/ca.pem")])
            .says(&["/nonexistent/ca.pem", "WARDEN_CA_FILE"])
    };
    env_federated_token_file_missing: |fx| {
        fx.case(&["token"])
            .unset(&["AZURE_CLIENT_SECRET"])
            .set(&[("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/federated")])
            .says(&["/nonexistent/federated", "AZURE_FEDERATED_TOKEN_FILE"])
    };
    env_exchange_url_over_http: |fx| {
        fx.case(&["invoke", "Get-Mailbox", "-p", "ResultSize=1"])
            .set(&[("WARDEN_EXCHANGE_URL", "http://127.0.0.1:1")])
            .says(&["not https", "WARDEN_EXCHANGE_URL"])
    };
    env_tenant_typo_before_a_script_runs: |fx| {
        fx.case(&["eval", "1 + 1", "--policy", &fx.scripts_policy()])
            .set(&[("AZURE_TENANT_ID", "contoso")])
            .says(&["neither a tenant GUID nor a domain", "AZURE_TENANT_ID"])
    };
    env_exchange_url_over_http_before_a_script_runs: |fx| {
        fx.case(&["eval", "1 + 1", "--policy", &fx.scripts_policy()])
            .set(&[("WARDEN_EXCHANGE_URL", "http://127.0.0.1:1")])
            .says(&["not https", "WARDEN_EXCHANGE_URL"])
    };
}

// PFX files.
cases! {
    pfx_unreadable: |fx| {
        fx.with_pfx("/nonexistent/cert.pfx")
            .says(&["/nonexistent/cert.pfx", "cannot be read"])
    };
    pfx_corrupt: |fx| {
        let file = fx.write("malformed.pfx", b"\x30\x82\x01\x00this is not a pkcs12 archive");
        fx.with_pfx(&file).says(&["malformed.pfx", "not a valid PFX"])
    };
    pfx_truncated: |fx| {
        let bytes = std::fs::read(fx.emu.app_str(0, "certificate_pfx")).unwrap();
        let file = fx.write("truncated.pfx", &bytes[..bytes.len() / 2]);
        fx.with_pfx(&file).says(&["truncated.pfx"])
    };
    pfx_wrong_password: |fx| {
        let pfx = fx.emu.app_str(0, "certificate_pfx");
        fx.with_pfx(&pfx).says(&[&pfx, "password is wrong"])
    };
    pfx_no_private_key: |fx| {
        let (keyless, _) = keyless_and_ec_pfx(&fx.dir);
        fx.with_pfx(&keyless).says(&[
            "keyless.pfx",
            "no private key",
            "export the certificate *with* its private key",
        ])
    };
    pfx_not_an_rsa_key: |fx| {
        let (_, ec) = keyless_and_ec_pfx(&fx.dir);
        fx.with_pfx(&ec).says(&["ec.pfx", "not an RSA key"])
    };
    pfx_expired_certificate: |fx| {
        let expired = expired_pfx(&fx.dir);
        fx.with_pfx(&expired).says(&[
            "expired.pfx",
            "CN=expired",
            "expired on 2021-01-01",
            "create a new certificate",
        ])
    };
}

// Policy files: each is valid but for one line.
cases! {
    policy_syntax_error: |fx| {
        let file = fx.policy_of("p-syntax.toml", "[roles.r\n");
        fx.eval_under(&file).says(&["p-syntax.toml:2", "fix:"])
    };
    policy_unknown_field: |fx| {
        let file = fx.policy_of(
            "p-unknown.toml",
            "[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nmax_results = 5\n",
        );
        fx.eval_under(&file).says(&[
            "p-unknown.toml:5",
            "unknown field `max_results`",
            "max_result_size",
        ])
    };
    policy_bad_sha256: |fx| {
        let file = fx.policy_of(
            "p-sha.toml",
            "[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\n[[grant]]\nplugin = \"p\"\nsha256 = \"c0ffee\"\nroles = [\"r\"]\n",
        );
        fx.eval_under(&file)
            .says(&["p-sha.toml", "\"c0ffee\" is not a SHA-256"])
    };
    policy_bad_pattern: |fx| {
        let file = fx.policy_of(
            "p-regex.toml",
            "[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\n[roles.r.cmdlet.parameters]\nIdentity = { pattern = \"(unclosed\" }\n",
        );
        fx.case(&["policy", "check", &file])
            .says(&["p-regex.toml:6", "(unclosed"])
    };
    policy_another_version: |fx| {
        let file = fx.write("p-version.toml", "version = 2\n");
        fx.eval_under(&file)
            .says(&["p-version.toml:1", "version 2 is not supported"])
    };
    policy_missing_file: |fx| {
        fx.eval_under(&fx.missing("no-policy.toml")).says(&[
            "no-policy.toml",
            "cannot read the policy",
            "--policy",
        ])
    };
    policy_none_at_all: |fx| {
        fx.case(&["eval", "1 + 1"])
            .says(&["no policy", "--policy FILE", "WARDEN_POLICY"])
    };
}

// Plugin files.
cases! {
    plugin_not_wasm: |fx| {
        let notes = fx.write("notes.wasm", "these are notes");
        fx.run(&notes).says(&["notes.wasm", "not a WebAssembly"])
    };
    plugin_a_core_module: |fx| {
        let core = fx.write("core.wasm", b"\0asm\x01\0\0\0");
        fx.run(&core).says(&["core.wasm", "wasm32-wasip2"])
    };
    plugin_truncated: |fx| {
        let probe = std::fs::read(guest("tests/guests", "probe")).unwrap();
        let file = fx.write("truncated.wasm", &probe[..probe.len() / 2]);
        fx.run(&file).says(&["truncated.wasm"])
    };
    plugin_another_wit_version: |fx| {
        let future_wit = path(&guest("tests/guests", "future-wit"));
        fx.run(&future_wit).says(&["future_wit.wasm", "0.1.0"])
    };
    plugin_missing_file: |fx| {
        fx.run(&fx.missing("missing.wasm")).says(&["missing.wasm"])
    };
    plugin_inspect_not_wasm: |fx| {
        let notes = fx.write("notes.wasm", "these are notes");
        fx.case(&["plugin", "inspect", &notes])
            .says(&["notes.wasm", "not a WebAssembly"])
    };
}

// Rhai scripts (a runtime error is the last test: it runs).
cases! {
    script_syntax_error: |fx| {
        let broken = fx.write("broken.rhai", "let x = (1 +;");
        fx.case(&["script", &broken, "--policy", &fx.scripts_policy()])
            .says(&["broken.rhai", "syntax error"])
    };
    script_missing_file: |fx| {
        fx.case(&["script", &fx.missing("gone.rhai"), "--policy", &fx.scripts_policy()])
            .says(&["gone.rhai"])
    };
    eval_syntax_error: |fx| {
        fx.case(&["eval", "exo::invoke(", "--policy", &fx.scripts_policy()])
            .says(&["inline script", "syntax error"])
    };
}

// Command-line arguments.
cases! {
    args_a_secret_as_a_flag: |fx| {
        fx.case(&["token", "--client-secret", SECRET])
            .says(&["--client-secret"])
            .quotes_its_value()
    };
    args_unknown_cloud: |fx| {
        fx.case(&["token", "--cloud", "germany"]).says(&["germany", "gcchigh"])
    };
    args_unknown_credential_kind: |fx| {
        fx.case(&["token", "--credential", "password"])
            .says(&["'password'", "workload-identity"])
    };
    args_unknown_subcommand: |fx| {
        fx.case(&["tokn"]).says(&["tokn", "token"])
    };
    args_unknown_output_format: |fx| {
        fx.case(&["token", "--output", "yaml"]).says(&["yaml", "json"])
    };
    args_parameter_without_a_value: |fx| {
        fx.case(&["invoke", "Get-Mailbox", "-p", "ResultSize"])
            .says(&["'ResultSize'", "NAME=VALUE"])
    };
    args_parameter_given_twice: |fx| {
        fx.case(&["invoke", "Get-Mailbox", "-p", "ResultSize=1", "-p", "resultsize=2"])
            .says(&["ResultSize", "twice"])
    };
    args_page_size_out_of_range: |fx| {
        fx.case(&["invoke", "Get-Mailbox", "--page-size", "5000"])
            .says(&["--page-size", "5000", "1..=1000"])
    };
    args_call_timeout_not_a_number: |fx| {
        fx.case(&["eval", "1", "--call-timeout", "soon", "--policy", &fx.scripts_policy()])
            .says(&["--call-timeout", "soon"])
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rhai_runtime_error_names_the_script_and_line_and_writes_nothing() {
    let emu = Emulator::start().await;
    let dir = emu.dir.path();
    let audit = dir.join("audit.jsonl");
    let env = with(
        emu.env_for(0),
        &[
            ("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret")),
            ("WARDEN_AUDIT", &path(&audit)),
            ("WARDEN_AUDIT_KEY", &path(&dir.join("audit.key"))),
        ],
    );
    // It reads once, then fails (index out of range) before the write on its last line.
    let source = "let boxes = exo::invoke(\"Get-Mailbox\", #{ResultSize: 2});\n\
                  let first = boxes[0];\n\
                  let name = boxes[7].DisplayName;\n\
                  exo::invoke(\"Set-Mailbox\", #{Identity: first.PrimarySmtpAddress, DisplayName: name});\n";
    let script = write(dir, "boom.rhai", source);
    let policy = write(
        dir,
        "policy.toml",
        format!(
            "version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nmax_result_size = 5\n[[roles.r.cmdlet]]\nname = \"Set-Mailbox\"\nparameters.Identity = {{ any = true }}\nparameters.DisplayName = {{ any = true }}\n[[grant]]\nscript = \"boom.rhai\"\nsha256 = \"{}\"\nroles = [\"r\"]\n[grant.budgets]\nwrites = 1\n",
            warden_policy::sha256_hex(source.as_bytes())
        ),
    );

    let output = warden(&["script", &script, "--policy", &policy], &env).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    for needle in ["boom.rhai", "line 3", "7"] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    assert!(stdout.trim().is_empty(), "{stdout}");
    assert_eq!(
        emu.requests_for("Get-Mailbox"),
        1,
        "the script ran: {stderr}"
    );
    assert_eq!(emu.cmdlet_requests(|c| c.starts_with("Set-")), 0);
    let trail = std::fs::read_to_string(&audit).unwrap();
    let end = trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find_map(|l| {
            l["rule"]
                .as_str()?
                .strip_prefix("run-end:")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no run-end line:\n{trail}"));
    assert!(end.starts_with("failed"), "{end}");
}
