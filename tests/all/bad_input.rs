//! Bad input through the real `warden` binary, as one table: every input a user supplies —
//! config file, environment, PFX, policy, plugin, Rhai script, arguments — is refused with a
//! message naming the input and the fix, exit status 1, no secret in the output, and no
//! partial effect (no audit trail or key written, no token request, nothing sent to exosim).

use crate::support::*;
use std::path::Path;

/// The client secret every case runs with (unless it removes it): it must never be printed.
const SECRET: &str = "canary-S3cr3t-value";
/// The PFX password of the PFX cases: it must never be printed either.
const PFX_PASSWORD: &str = "canary-Pfx-pa55word";

/// What shows a message carries a fix: ours say `fix:`; clap's say `tip:`, list the possible
/// values, or point at `--help`.
const FIX_MARKERS: &[&str] = &["fix:", "tip:", "[possible values:", "try '--help'"];

/// One row of the table.
struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Env,
    /// What stderr must contain: the input's name, and words of the fix.
    says: Vec<String>,
}

impl Case {
    fn new(name: &'static str, base: &Env, args: &[&str]) -> Self {
        Self {
            name,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: base.clone(),
            says: Vec::new(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_with_its_name_and_fix_and_changes_nothing() {
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
    let case = |name, args: &[&str]| Case::new(name, &base, args);

    // Config files.
    let good_config = write(
        &dir,
        "warden.toml",
        format!(
            "[tenants.contoso]\ntenant_id = \"{}\"\nclient_id = \"{}\"\n",
            emu.tenant_id(),
            emu.app_str(0, "client_id")
        ),
    );
    let config_syntax = write(&dir, "syntax.toml", "[tenants.contoso\ntenant_id = \"x\"\n");
    let config_unknown = write(
        &dir,
        "unknown.toml",
        "[tenants.contoso]\ntenantid = \"contoso.onmicrosoft.com\"\n",
    );
    let config_inline_secret = write(
        &dir,
        "inline-secret.toml",
        "[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_secret = \"inline\"\n",
    );
    let config_type = write(
        &dir,
        "type.toml",
        "[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = 5\n",
    );
    let config_default = write(&dir, "default.toml", "default_tenant = \"fabrikam\"\n");

    // PFX files.
    let pfx = emu.app_str(0, "certificate_pfx");
    let malformed_pfx = write(
        &dir,
        "malformed.pfx",
        b"\x30\x82\x01\x00this is not a pkcs12 archive",
    );
    let pfx_bytes = std::fs::read(&pfx).unwrap();
    let truncated_pfx = write(&dir, "truncated.pfx", &pfx_bytes[..pfx_bytes.len() / 2]);
    let expired_pfx = expired_pfx(&dir);
    let (keyless_pfx, ec_pfx) = keyless_and_ec_pfx(&dir);
    let with_pfx = |name, file: &str| {
        case(name, &["token"])
            .unset(&["AZURE_CLIENT_SECRET"])
            .set(&[
                ("AZURE_CLIENT_CERTIFICATE_PATH", file),
                ("AZURE_CLIENT_CERTIFICATE_PASSWORD", PFX_PASSWORD),
            ])
    };

    // Policy files: each is valid but for one line.
    let policy_of = |name: &str, body: &str| write(&dir, name, format!("version = 1\n{body}"));
    let policy_syntax = policy_of("p-syntax.toml", "[roles.r\n");
    let policy_unknown = policy_of(
        "p-unknown.toml",
        "[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nmax_results = 5\n",
    );
    let policy_sha = policy_of(
        "p-sha.toml",
        "[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\n[[grant]]\nplugin = \"p\"\nsha256 = \"c0ffee\"\nroles = [\"r\"]\n",
    );
    let policy_regex = policy_of(
        "p-regex.toml",
        "[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\n[roles.r.cmdlet.parameters]\nIdentity = { pattern = \"(unclosed\" }\n",
    );
    let policy_version = write(&dir, "p-version.toml", "version = 2\n");
    let scripts_policy = path(&repo_root().join("scripts/policy.toml"));

    // Plugin files and scripts.
    let notes = write(&dir, "notes.wasm", "these are notes");
    let core = write(&dir, "core.wasm", b"\0asm\x01\0\0\0");
    let probe = std::fs::read(guest("tests/guests", "probe")).unwrap();
    let truncated_wasm = write(&dir, "truncated.wasm", &probe[..probe.len() / 2]);
    let future_wit = path(&guest("tests/guests", "future-wit"));
    let broken_rhai = write(&dir, "broken.rhai", "let x = (1 +;");
    let missing = |name: &str| path(&dir.join(name));

    let run = |name, plugin: &str| case(name, &["run", plugin, "--policy", &scripts_policy]);
    let eval_under = |name, policy: &str| case(name, &["eval", "1 + 1", "--policy", policy]);

    let cases = vec![
        // The config file.
        case(
            "config: TOML syntax",
            &["token", "--config", &config_syntax],
        )
        .says(&["syntax.toml", "line 1", "config.example.toml"]),
        case(
            "config: unknown key",
            &["token", "--config", &config_unknown],
        )
        .says(&[
            "unknown.toml",
            "line 2",
            "unknown field `tenantid`",
            "tenant_id",
        ]),
        case(
            "config: a secret written inline",
            &["token", "--config", &config_inline_secret],
        )
        .says(&["inline-secret.toml", "line 3", "client_secret"]),
        case("config: wrong type", &["token", "--config", &config_type]).says(&[
            "type.toml",
            "line 3",
            "invalid type",
            "a string",
        ]),
        case(
            "config: default_tenant without its profile",
            &["token", "--config", &config_default],
        )
        .says(&["default.toml", "fabrikam", "add the profile"]),
        case(
            "config: missing file",
            &["token", "--config", "/nonexistent/warden.toml"],
        )
        .says(&["/nonexistent/warden.toml", "cannot be read", "--config"]),
        case("config: WARDEN_CONFIG names no file", &["token"])
            .set(&[("WARDEN_CONFIG", "/nonexistent/env.toml")])
            .says(&["/nonexistent/env.toml", "WARDEN_CONFIG"]),
        case(
            "config: profile typo",
            &["token", "--config", &good_config, "--tenant", "contso"],
        )
        .says(&["no tenant profile 'contso'", "did you mean 'contoso'"]),
        case(
            "config: a profile but no file",
            &["token", "--tenant", "contoso"],
        )
        .says(&["--tenant contoso", "no config file", "--config FILE"]),
        // The environment.
        case("env: no credential", &["token"])
            .unset(&["AZURE_CLIENT_SECRET"])
            .says(&["no credential is configured", "AZURE_CLIENT_SECRET"]),
        case("env: no client id", &["token"])
            .unset(&["AZURE_CLIENT_ID"])
            .says(&["no client (application) id", "AZURE_CLIENT_ID"]),
        case("env: no tenant", &["token"])
            .unset(&["AZURE_TENANT_ID"])
            .says(&["no tenant", "AZURE_TENANT_ID"]),
        case("env: tenant typo", &["token"])
            .set(&[("AZURE_TENANT_ID", "contoso")])
            .says(&["neither a tenant GUID nor a domain", "AZURE_TENANT_ID"]),
        case("env: multi-tenant alias", &["token"])
            .set(&[("AZURE_TENANT_ID", "common")])
            .says(&["'common'", "AZURE_TENANT_ID", "multi-tenant alias"]),
        case("env: client id not a GUID", &["token"])
            .set(&[("AZURE_CLIENT_ID", "my-app")])
            .says(&["'my-app'", "AZURE_CLIENT_ID", "not a GUID"]),
        case("env: http authority", &["token"])
            .set(&[("AZURE_AUTHORITY_HOST", "http://127.0.0.1:1")])
            .says(&["not https", "AZURE_AUTHORITY_HOST"]),
        case("env: authority with a path", &["token"])
            .set(&[("AZURE_AUTHORITY_HOST", "https://login.example/tenant")])
            .says(&["AZURE_AUTHORITY_HOST", "scheme and host only"]),
        case("env: CA file missing", &["token"])
            .set(&[("WARDEN_CA_FILE", "/nonexistent/ca.pem")])
            .says(&["/nonexistent/ca.pem", "WARDEN_CA_FILE"]),
        case("env: federated token file missing", &["token"])
            .unset(&["AZURE_CLIENT_SECRET"])
            .set(&[("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/federated")])
            .says(&["/nonexistent/federated", "AZURE_FEDERATED_TOKEN_FILE"]),
        case(
            "env: Exchange URL over http",
            &["invoke", "Get-Mailbox", "-p", "ResultSize=1"],
        )
        .set(&[("WARDEN_EXCHANGE_URL", "http://127.0.0.1:1")])
        .says(&["not https", "WARDEN_EXCHANGE_URL"]),
        case(
            "env: tenant typo, before a script runs",
            &["eval", "1 + 1", "--policy", &scripts_policy],
        )
        .set(&[("AZURE_TENANT_ID", "contoso")])
        .says(&["neither a tenant GUID nor a domain", "AZURE_TENANT_ID"]),
        case(
            "env: Exchange URL over http, before a script runs",
            &["eval", "1 + 1", "--policy", &scripts_policy],
        )
        .set(&[("WARDEN_EXCHANGE_URL", "http://127.0.0.1:1")])
        .says(&["not https", "WARDEN_EXCHANGE_URL"]),
        // PFX files.
        with_pfx("pfx: unreadable", "/nonexistent/cert.pfx")
            .says(&["/nonexistent/cert.pfx", "cannot be read"]),
        with_pfx("pfx: corrupt", &malformed_pfx).says(&["malformed.pfx", "not a valid PFX"]),
        with_pfx("pfx: truncated", &truncated_pfx).says(&["truncated.pfx"]),
        with_pfx("pfx: wrong password", &pfx).says(&[&pfx, "password is wrong"]),
        with_pfx("pfx: no private key", &keyless_pfx).says(&[
            "keyless.pfx",
            "no private key",
            "export the certificate *with* its private key",
        ]),
        with_pfx("pfx: not an RSA key", &ec_pfx).says(&["ec.pfx", "not an RSA key"]),
        with_pfx("pfx: expired certificate", &expired_pfx).says(&[
            "expired.pfx",
            "CN=expired",
            "expired on 2021-01-01",
            "create a new certificate",
        ]),
        // Policy files.
        eval_under("policy: syntax error", &policy_syntax).says(&["p-syntax.toml:2", "fix:"]),
        eval_under("policy: unknown field", &policy_unknown).says(&[
            "p-unknown.toml:5",
            "unknown field `max_results`",
            "max_result_size",
        ]),
        eval_under("policy: bad sha256", &policy_sha)
            .says(&["p-sha.toml", "\"c0ffee\" is not a SHA-256"]),
        case("policy: bad pattern", &["policy", "check", &policy_regex])
            .says(&["p-regex.toml:6", "(unclosed"]),
        eval_under("policy: another version", &policy_version)
            .says(&["p-version.toml:1", "version 2 is not supported"]),
        eval_under("policy: missing file", &missing("no-policy.toml")).says(&[
            "no-policy.toml",
            "cannot read the policy",
            "--policy",
        ]),
        case("policy: none at all", &["eval", "1 + 1"]).says(&[
            "no policy",
            "--policy FILE",
            "WARDEN_POLICY",
        ]),
        // Plugin files.
        run("plugin: not wasm", &notes).says(&["notes.wasm", "not a WebAssembly"]),
        run("plugin: a core module", &core).says(&["core.wasm", "wasm32-wasip2"]),
        run("plugin: truncated", &truncated_wasm).says(&["truncated.wasm"]),
        run("plugin: another WIT version", &future_wit).says(&["future_wit.wasm", "0.1.0"]),
        run("plugin: missing file", &missing("missing.wasm")).says(&["missing.wasm"]),
        case("plugin: inspect not wasm", &["plugin", "inspect", &notes])
            .says(&["notes.wasm", "not a WebAssembly"]),
        // Rhai scripts (a runtime error is the next test: it runs).
        case(
            "script: syntax error",
            &["script", &broken_rhai, "--policy", &scripts_policy],
        )
        .says(&["broken.rhai", "syntax error"]),
        case(
            "script: missing file",
            &["script", &missing("gone.rhai"), "--policy", &scripts_policy],
        )
        .says(&["gone.rhai"]),
        case(
            "eval: syntax error",
            &["eval", "exo::invoke(", "--policy", &scripts_policy],
        )
        .says(&["inline script", "syntax error"]),
        // Command-line arguments.
        case(
            "args: a secret as a flag",
            &["token", "--client-secret", SECRET],
        )
        .says(&["--client-secret"]),
        case("args: unknown cloud", &["token", "--cloud", "germany"]).says(&["germany", "gcchigh"]),
        case(
            "args: unknown credential kind",
            &["token", "--credential", "password"],
        )
        .says(&["'password'", "workload-identity"]),
        case("args: unknown subcommand", &["tokn"]).says(&["tokn", "token"]),
        case(
            "args: unknown output format",
            &["token", "--output", "yaml"],
        )
        .says(&["yaml", "json"]),
        case(
            "args: parameter without a value",
            &["invoke", "Get-Mailbox", "-p", "ResultSize"],
        )
        .says(&["'ResultSize'", "NAME=VALUE"]),
        case(
            "args: parameter given twice",
            &[
                "invoke",
                "Get-Mailbox",
                "-p",
                "ResultSize=1",
                "-p",
                "resultsize=2",
            ],
        )
        .says(&["ResultSize", "twice"]),
        case(
            "args: page size out of range",
            &["invoke", "Get-Mailbox", "--page-size", "5000"],
        )
        .says(&["--page-size", "5000", "1..=1000"]),
        case(
            "args: call timeout not a number",
            &[
                "eval",
                "1",
                "--call-timeout",
                "soon",
                "--policy",
                &scripts_policy,
            ],
        )
        .says(&["--call-timeout", "soon"]),
    ];

    for case in cases {
        let name = case.name;
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
        if name != "args: a secret as a flag" {
            // clap quotes the refused flag's value back; that flag never takes a real secret.
            for secret in [SECRET, PFX_PASSWORD] {
                assert!(
                    !stdout.contains(secret) && !stderr.contains(secret),
                    "{name}: a secret was printed:\n{stderr}"
                );
            }
        }
        assert!(
            !audit.exists() && !audit_key.exists() && !audit_key.parent().unwrap().exists(),
            "{name}: the audit trail or its key was created"
        );
        assert_eq!(emu.token_requests(), 0, "{name}: a token was requested");
        assert!(
            emu.exosim.exchange_log().is_empty(),
            "{name}: a request reached Exchange"
        );
    }
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
