//! `warden demo`: starts the exosim emulator inside this process and walks through every
//! credential kind against its demo tenant, over real HTTPS, printing each token's diagnosis.
//! It also shows the two classic refusals (no `Exchange.ManageAsApp` → 401, no Entra role →
//! 403) as the diagnosis explains them, uses Exchange directly, and then as guests do: the
//! mailbox-report plugin (a real wasm component, embedded by build.rs) — run again, unchanged,
//! over WinRM Remote PowerShell — and Rhai scripts under one policy, with refusals, a
//! pinned-hash mismatch, a runaway loop stopped, and the audit trail. Exits non-zero if any
//! step does not behave as shown.

use crate::output::{Format, status_cell};
use anyhow::{Context, bail};
use clap::Args;
use comfy_table::{Cell, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use warden_auth::config::{AuthSettings, Environment, Overrides};
use warden_auth::diagnose::{Status, diagnose};
use warden_auth::{ReqwestTransport, TokenProvider};

/// Arguments of `warden demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

struct Scenario {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    overrides: Overrides,
    /// The diagnosis check expected to fail, or `None` when the token should pass every check.
    expected_failure: Option<&'static str>,
}

/// The demo tenant's app `client_id`, as exosim's ready info describes it.
fn demo_app<'a>(
    ready: &'a exosim::ReadyInfo,
    client_id: &str,
) -> anyhow::Result<&'a exosim::AppInfo> {
    ready
        .find_app(client_id)
        .with_context(|| format!("exosim's demo tenant has no app {client_id}"))
}

/// `value`, or an error naming what of `app` the demo needed and did not find.
fn needed<T: Clone>(app: &exosim::AppInfo, what: &str, value: &Option<T>) -> anyhow::Result<T> {
    value
        .clone()
        .with_context(|| format!("exosim's demo app {} has no {what}", app.name))
}

/// A path as an environment value.
fn text(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// Runs the subcommand.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let state = tempfile::tempdir().context("creating a temporary directory for the emulator")?;
    let emulator = exosim::Exosim::start(exosim::ExosimOptions::demo(state.path()))
        .await
        .context("starting the embedded emulator")?;
    let ready = emulator.ready_info();
    let url = emulator.url();
    let ca = text(emulator.ca_file());
    let tenant_id = ready.tenant().tenant_id.clone();
    let app = demo_app(&ready, exosim::DEMO_CLIENT_ID)?;
    let no_role = demo_app(&ready, exosim::DEMO_NO_ROLE_CLIENT_ID)?;
    let no_wids = demo_app(&ready, exosim::DEMO_NO_WIDS_CLIENT_ID)?;
    let reader = demo_app(&ready, exosim::DEMO_READER_CLIENT_ID)?;
    let client_id = app.client_id.clone();
    let federated_dir = tempfile::tempdir()?;
    let federated_file = federated_dir.path().join("federated-token");
    let issuer_token = emulator.mint_federated_token(
        exosim::DEMO_FEDERATED_SUBJECT,
        exosim::TOKEN_EXCHANGE_AUDIENCE,
        Duration::from_secs(600),
    );
    std::fs::write(&federated_file, issuer_token)?;

    let base = |client: &exosim::AppInfo| -> anyhow::Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("AZURE_TENANT_ID", tenant_id.clone()),
            ("AZURE_CLIENT_ID", client.client_id.clone()),
            ("AZURE_AUTHORITY_HOST", url.clone()),
            ("WARDEN_CA_FILE", ca.clone()),
        ])
    };
    let with = |mut env: Vec<(&'static str, String)>, extra: &[(&'static str, String)]| {
        env.extend_from_slice(extra);
        env
    };
    let secret_of =
        |client: &exosim::AppInfo| needed(client, "client secret", &client.client_secret);
    let scenarios = vec![
        Scenario {
            name: "client secret",
            env: with(base(app)?, &[("AZURE_CLIENT_SECRET", secret_of(app)?)]),
            overrides: Overrides::default(),
            expected_failure: None,
        },
        Scenario {
            name: "certificate (PFX, PS256 + x5t#S256)",
            env: with(
                base(app)?,
                &[
                    (
                        "AZURE_CLIENT_CERTIFICATE_PATH",
                        text(&needed(app, "PFX certificate", &app.certificate_pfx)?),
                    ),
                    (
                        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
                        needed(app, "PFX password", &app.certificate_password)?,
                    ),
                ],
            ),
            overrides: Overrides::default(),
            expected_failure: None,
        },
        Scenario {
            name: "certificate (PEM, RS256 + x5t, v1 endpoint)",
            env: base(app)?,
            overrides: Overrides {
                certificate: Some(needed(app, "PEM key", &app.key_pem)?),
                assertion: Some(warden_auth::assertion::AssertionAlgorithm::Rs256),
                endpoint_version: Some(warden_auth::endpoint::EndpointVersion::V1),
                ..Default::default()
            },
            expected_failure: None,
        },
        Scenario {
            name: "workload identity (federated token file)",
            env: with(
                base(app)?,
                &[(
                    "AZURE_FEDERATED_TOKEN_FILE",
                    federated_file.display().to_string(),
                )],
            ),
            overrides: Overrides::default(),
            expected_failure: None,
        },
        Scenario {
            name: "managed identity (IMDS)",
            env: vec![
                ("WARDEN_IMDS_ENDPOINT", ready.imds_endpoint.clone()),
                ("WARDEN_CA_FILE", ca.clone()),
                ("AZURE_TENANT_ID", tenant_id.clone()),
            ],
            overrides: Overrides {
                credential: Some(warden_auth::config::CredentialChoice::ManagedIdentity),
                ..Default::default()
            },
            expected_failure: None,
        },
        Scenario {
            name: "app without Exchange.ManageAsApp",
            env: with(
                base(no_role)?,
                &[("AZURE_CLIENT_SECRET", secret_of(no_role)?)],
            ),
            overrides: Overrides::default(),
            expected_failure: Some("app role"),
        },
        Scenario {
            // An empty `wids` only warns: RBAC for Applications may authorise the app.
            name: "app without an Entra role (a warning)",
            env: with(
                base(no_wids)?,
                &[("AZURE_CLIENT_SECRET", secret_of(no_wids)?)],
            ),
            overrides: Overrides::default(),
            expected_failure: None,
        },
    ];

    // The PEM scenario needs the certificate next to the key: exosim writes them apart.
    let pem_bundle = state.path().join("demo-key-and-cert.pem");
    std::fs::write(
        &pem_bundle,
        format!(
            "{}{}",
            std::fs::read_to_string(needed(app, "PEM key", &app.key_pem)?)?,
            std::fs::read_to_string(needed(app, "PEM certificate", &app.certificate_pem)?)?
        ),
    )?;

    let mut rows = Vec::new();
    let mut all_as_expected = true;
    for mut scenario in scenarios {
        if scenario.overrides.certificate.is_some() {
            scenario.overrides.certificate = Some(pem_bundle.clone());
        }
        let env = Environment::from_pairs(scenario.env.iter().map(|(k, v)| (*k, v.as_str())));
        let outcome = acquire(&env, &scenario.overrides).await;
        let (status, detail, failed_checks, as_expected) = match &outcome {
            Ok((credential, checks)) => {
                let failed: Vec<&str> = checks
                    .iter()
                    .filter(|c| c.status == Status::Fail)
                    .map(|c| c.name)
                    .collect();
                let as_expected = match scenario.expected_failure {
                    None => failed.is_empty(),
                    Some(name) => failed == [name],
                };
                let detail = if failed.is_empty() {
                    format!("token via {credential}; all claim checks pass")
                } else {
                    let reasons: Vec<String> = checks
                        .iter()
                        .filter(|c| c.status == Status::Fail)
                        .map(|c| c.detail.clone())
                        .collect();
                    format!(
                        "token via {credential}; Exchange would refuse it: {}",
                        reasons.join("; ")
                    )
                };
                (
                    if failed.is_empty() {
                        Status::Pass
                    } else {
                        Status::Fail
                    },
                    detail,
                    failed.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    as_expected,
                )
            }
            Err(error) => (Status::Fail, format!("{error:#}"), vec![], false),
        };
        all_as_expected &= as_expected;
        rows.push((
            scenario.name,
            status,
            detail,
            failed_checks,
            as_expected,
            scenario.expected_failure,
        ));
    }
    let (exchange_rows, showcase) = exchange_scenarios(&emulator, &tenant_id, app, reader).await?;
    all_as_expected &= exchange_rows.iter().all(|(_, _, ok)| *ok);
    let counters = emulator.counters();
    emulator.shutdown().await;

    match args.output {
        Format::Json => {
            let scenarios: Vec<Value> = rows
                .iter()
                .map(|(name, status, detail, failed, as_expected, expected)| json!({"scenario": name, "status": status, "detail": detail, "failed_checks": failed, "expected_failure": expected, "as_expected": as_expected}))
                .collect();
            let exchange: Vec<Value> = exchange_rows
                .iter()
                .map(
                    |(step, detail, ok)| json!({"step": step, "detail": detail, "as_expected": ok}),
                )
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"emulator": url, "tenant": tenant_id, "client_id": client_id, "scenarios": scenarios, "exchange": exchange, "guests": showcase, "emulator_counters": counters, "ok": all_as_expected})
                )?
            );
        }
        Format::Text => {
            println!("exosim (embedded) at {url}, demo tenant {tenant_id}");
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(120)
                .set_header(["", "scenario", "what happened", "as expected"]);
            for (name, status, detail, _, as_expected, _) in &rows {
                table.add_row(vec![
                    status_cell(*status),
                    Cell::new(name),
                    Cell::new(detail),
                    Cell::new(if *as_expected { "yes" } else { "NO" }),
                ]);
            }
            println!("{table}");
            let mut exchange = Table::new();
            exchange
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(120)
                .set_header([
                    "Exchange Online: directly, then as a guest through the broker",
                    "what happened",
                    "as expected",
                ]);
            for (step, detail, ok) in &exchange_rows {
                exchange.add_row(vec![
                    Cell::new(step),
                    Cell::new(detail),
                    Cell::new(if *ok { "yes" } else { "NO" }),
                ]);
            }
            println!("{exchange}");
            println!(
                "\nmailbox-report's output (a plugin's view: only what its grant lets through):"
            );
            crate::output::print_guest_output(
                &warden_runtime::GuestOutput::Json(showcase.plugin_output.clone()),
                crate::output::ResultFormat::Table,
            )?;
            println!("its run in the audit trail:");
            let mut audit = Table::new();
            audit
                .load_preset(UTF8_FULL_CONDENSED)
                .set_header(["kind", "cmdlet", "rule", "outcome", "objects"]);
            for line in &showcase.plugin_audit {
                audit.add_row(["kind", "cmdlet", "rule", "outcome", "objects"].map(
                    |k| match &line[k] {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    },
                ));
            }
            println!("{audit}");
            println!(
                "token requests served by the emulator: {}, cmdlet calls: {}",
                counters.token_requests, counters.invoke_requests
            );
            println!(
                "{}",
                if all_as_expected {
                    "demo finished: every credential kind got a token, the broken apps were explained, and Exchange answered as shown"
                } else {
                    "demo FAILED: a step did not behave as expected"
                }
            );
        }
    }
    Ok(if all_as_expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn acquire(
    env: &Environment,
    overrides: &Overrides,
) -> anyhow::Result<(&'static str, Vec<warden_auth::diagnose::Check>)> {
    let settings = AuthSettings::resolve(None, overrides, env)?;
    let transport = Arc::new(ReqwestTransport::new(settings.ca_file.as_deref())?);
    let credential = settings.load_credential()?;
    let name = credential.kind.name();
    let provider = TokenProvider::new(credential, transport);
    let scope = settings.exchange_scope();
    let token = provider.get_token(&scope).await?;
    let diagnosis = diagnose(
        token.expose(),
        &crate::commands::token::expectations(&settings, &scope),
        SystemTime::now(),
    );
    Ok((name, diagnosis.checks))
}

/// Exchange through the same session guests will use: a paged read, a write seen by a later
/// read, and a Global Reader refused a write by Exchange's RBAC.
async fn exchange_scenarios(
    emulator: &exosim::Exosim,
    tenant_id: &str,
    admin_app: &exosim::AppInfo,
    reader: &exosim::AppInfo,
) -> anyhow::Result<(Vec<(&'static str, String, bool)>, Showcase)> {
    use warden_exchange::{
        ExchangeError, ExchangeSettings, Invocation, ParamValue, Parameters, RestSession, Transport,
    };
    let session_for = |app: &exosim::AppInfo| -> anyhow::Result<RestSession> {
        let env = [
            ("AZURE_TENANT_ID", tenant_id.to_owned()),
            ("AZURE_CLIENT_ID", app.client_id.clone()),
            (
                "AZURE_CLIENT_SECRET",
                needed(app, "client secret", &app.client_secret)?,
            ),
            ("AZURE_AUTHORITY_HOST", emulator.url()),
            ("WARDEN_CA_FILE", emulator.ca_file().display().to_string()),
            ("WARDEN_EXCHANGE_URL", emulator.exchange_url()),
            // exosim's own key for SecureString parameters, from its ready info.
            (
                "WARDEN_EXCHANGE_SECURE_STRING_KEY",
                emulator.ready_info().secure_string_public_key,
            ),
        ];
        let env = Environment::from_pairs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let settings = AuthSettings::resolve(None, &Overrides::default(), &env)?;
        let mut exchange = ExchangeSettings::resolve(&settings, Some(Transport::Rest), &env)?;
        exchange.page_size = Some(10);
        let tokens = TokenProvider::new(
            settings.load_credential()?,
            Arc::new(ReqwestTransport::new(settings.ca_file.as_deref())?),
        );
        Ok(warden_exchange::connect::rest_session(&exchange, tokens)?)
    };
    let identity = |value: &str| {
        Parameters::from([("Identity".to_owned(), ParamValue::String(value.to_owned()))])
    };
    let admin = session_for(admin_app)?;
    let mut rows = Vec::new();
    let mut stream = admin.stream(Invocation::new(
        "Get-Mailbox",
        Parameters::from([("ResultSize".to_owned(), ParamValue::ResultSize(None))]),
    ));
    let mut mailboxes = Vec::new();
    while let Some(page) = stream.next_page().await? {
        mailboxes.extend(page.objects);
    }
    let first = mailboxes
        .first()
        .and_then(|m| m.get("PrimarySmtpAddress"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let paged = mailboxes.len() == emulator.mailbox_count(tenant_id) && stream.pages() > 1;
    rows.push((
        "Get-Mailbox -ResultSize Unlimited",
        format!(
            "{} mailboxes in {} pages of at most 10, e.g. {first}",
            mailboxes.len(),
            stream.pages()
        ),
        paged,
    ));

    let mut rename = identity(&first);
    rename.insert(
        "DisplayName".into(),
        ParamValue::String("Renamed by warden demo".into()),
    );
    admin
        .invoke(Invocation::new("Set-Mailbox", rename.clone()))
        .await?;
    let after = admin
        .invoke(Invocation::new("Get-Mailbox", identity(&first)))
        .await?;
    let shown = after
        .first()
        .and_then(|m| m.get("DisplayName"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    rows.push((
        "Set-Mailbox -DisplayName, then Get-Mailbox",
        format!("{first} now reads '{shown}'"),
        shown == "Renamed by warden demo",
    ));

    if !reader.wids.iter().any(|r| r == exosim::GLOBAL_READER_ROLE) {
        bail!("exosim's demo app {} is not a Global Reader", reader.name);
    }
    let (detail, ok) = match session_for(reader)?
        .invoke(Invocation::new("Set-Mailbox", rename))
        .await
    {
        Err(ExchangeError::AccessDenied {
            status,
            explanation,
            ..
        }) => (format!("HTTP {status}: {explanation}"), status == 401),
        Err(other) => (other.to_string(), false),
        Ok(_) => ("the write was accepted".to_owned(), false),
    };
    rows.push(("Global Reader app tries Set-Mailbox", detail, ok));
    // The same app over the other transport, WinRM Remote PowerShell, for the plugin's rerun.
    let rps = {
        let env = [
            ("AZURE_TENANT_ID", tenant_id.to_owned()),
            ("AZURE_CLIENT_ID", admin_app.client_id.clone()),
            (
                "AZURE_CLIENT_SECRET",
                needed(admin_app, "client secret", &admin_app.client_secret)?,
            ),
            ("AZURE_AUTHORITY_HOST", emulator.url()),
            ("WARDEN_CA_FILE", emulator.ca_file().display().to_string()),
            ("WARDEN_EXCHANGE_URL", emulator.exchange_url()),
        ];
        let env = Environment::from_pairs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let settings = AuthSettings::resolve(None, &Overrides::default(), &env)?;
        let exchange = ExchangeSettings::resolve(&settings, Some(Transport::Rps), &env)?;
        let tokens = TokenProvider::new(
            settings.load_credential()?,
            Arc::new(ReqwestTransport::new(settings.ca_file.as_deref())?),
        );
        warden_exchange::connect::rps_session(&exchange, tokens)?
    };
    let (guest_rows, showcase) = broker_scenarios(emulator, admin, rps, &first).await?;
    rows.extend(guest_rows);
    Ok((rows, showcase))
}

/// The demo's example plugin, built from plugins/mailbox-report by build.rs.
const MAILBOX_REPORT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mailbox_report.wasm"));
/// Its policy; the zeros stand where an operator pins the build's sha256.
const MAILBOX_REPORT_POLICY: &str = include_str!("../../../../plugins/mailbox-report/policy.toml");
const UNPINNED: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the guest part of the demo shows besides its table rows.
#[derive(Debug, Default, serde::Serialize)]
pub struct Showcase {
    /// The plugin's report, as it printed it.
    pub plugin_output: Value,
    /// The audit lines of the plugin's run, abbreviated.
    pub plugin_audit: Vec<Value>,
}

/// Guests through the broker: a script and the mailbox-report plugin under one policy, their
/// results shaped by it, refusals that never reach Exchange, limits that stop a runaway
/// guest, and an audit trail that verifies.
async fn broker_scenarios(
    emulator: &exosim::Exosim,
    session: warden_exchange::RestSession,
    rps: warden_exchange::RpsSession,
    mailbox: &str,
) -> anyhow::Result<(Vec<(&'static str, String, bool)>, Showcase)> {
    use std::time::Duration;
    use warden_audit::{AuditKey, AuditTrail};
    use warden_broker::{Broker, GuestError};
    use warden_policy::{Policy, Principal};
    use warden_runtime::{
        GuestOutput, PluginHost, RunOutcome, RunRequest, RuntimeLimits, ScriptHost, StopReason,
    };
    const SCRIPT: &str = r#"exo::invoke("Get-Mailbox", #{ResultSize: 3})"#;
    const ONE_LINER: &str = r#"exo::invoke("Get-Mailbox", #{ResultSize: 10}).len()"#;
    const TRIES_REMOVE: &str = r#"let r = "ran"; try { exo::invoke("Remove-Mailbox", #{Identity: "x"}); } catch (e) { r = `${e.kind} by ${e.rule}`; } r"#;
    const RUNAWAY: &str = "let n = 0; loop { n += 1; }";

    let plugins = PluginHost::new(RuntimeLimits::default(), None)?;
    let plugin = plugins.load_bytes("mailbox-report.wasm", MAILBOX_REPORT.to_vec())?;
    let scripts = ScriptHost::new(RuntimeLimits::default());
    let script_grant = |id: &str, source: &str, budgets: &str| {
        format!(
            "\n[[grant]]\nid = \"{id}\"\nscript_inline_sha256 = \"{}\"\nroles = [\"reader\"]\n[grant.budgets]\n{budgets}\n",
            Principal::inline_script(source).sha256()
        )
    };
    let mut policy_text = MAILBOX_REPORT_POLICY.replace(UNPINNED, plugin.sha256());
    policy_text.push_str(
        "\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\nmax_result_size = 10\noutput = [\"DisplayName\", \"PrimarySmtpAddress\"]\n",
    );
    policy_text.push_str(&script_grant("demo-script", SCRIPT, "calls = 5"));
    policy_text.push_str(&script_grant("one-liner", ONE_LINER, "calls = 1"));
    policy_text.push_str(&script_grant("tries-remove", TRIES_REMOVE, "calls = 1"));
    policy_text.push_str(&script_grant("runaway", RUNAWAY, "cpu_secs = 1"));
    let dir = tempfile::tempdir()?;
    let policy = Arc::new(Policy::parse(
        &policy_text,
        &dir.path().join("demo-policy.toml"),
    )?);
    // The same path an installation uses: a key file created once, loaded again to verify.
    let key_file = dir.path().join("audit.key");
    let trail_path = dir.path().join("audit.jsonl");
    let audit = Arc::new(AuditTrail::open(
        &trail_path,
        AuditKey::load_or_create(&key_file)?,
    )?);
    let broker = Broker::new(
        policy.clone(),
        Arc::new(session),
        audit.clone(),
        Duration::from_secs(30),
    );
    let run = broker
        .begin(Principal::inline_script(SCRIPT), None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rows = Vec::new();
    let mut showcase = Showcase::default();

    let results = broker
        .invoke(&run, "Get-Mailbox", r#"{"ResultSize":3}"#)
        .await;
    let (detail, ok) = match &results {
        Ok(objects) => {
            let keys: Vec<&str> = objects
                .first()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            (
                format!(
                    "{} mailboxes, each with only {}",
                    objects.len(),
                    keys.join(" and ")
                ),
                objects.len() == 3 && keys == ["DisplayName", "PrimarySmtpAddress"],
            )
        }
        Err(e) => (e.to_string(), false),
    };
    rows.push(("broker: script reads Get-Mailbox -ResultSize 3", detail, ok));

    let calls_before = emulator.counters().invoke_requests;
    let refused = broker
        .invoke(
            &run,
            "Set-Mailbox",
            &format!(r#"{{"Identity":"{mailbox}","DisplayName":"x"}}"#),
        )
        .await;
    let unseen = emulator.counters().invoke_requests == calls_before;
    let (detail, ok) = match refused {
        Err(GuestError::Denied { rule, reason }) => (
            format!(
                "refused by {rule}: {reason}; requests Exchange received meanwhile: {}",
                if unseen { "none" } else { "SOME" }
            ),
            rule == "default-deny" && unseen,
        ),
        other => (format!("{other:?}"), false),
    };
    rows.push(("broker: script tries Set-Mailbox", detail, ok));

    // The plugin: a real wasm32-wasip2 component, sandboxed, reaching Exchange only through
    // the broker under the grant pinned to its sha256.
    let report = plugins
        .run(
            &plugin,
            &broker,
            RunRequest::new(vec!["--limit".into(), "5".into()]),
        )
        .await?;
    let (detail, ok) = match &report.outcome {
        RunOutcome::Completed {
            output: GuestOutput::Text(text),
        } => {
            let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            let sized = value
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .filter(|r| r["TotalItemSize"].is_string())
                        .count()
                })
                .unwrap_or(0);
            showcase.plugin_output = value;
            (
                format!(
                    "{sized} mailboxes with sizes in {} calls (grant {}, sha256 {}…)",
                    report.usage.calls,
                    report.grant_id,
                    &plugin.sha256()[..12]
                ),
                sized == 5,
            )
        }
        other => (format!("{other:?}"), false),
    };
    rows.push(("plugin: mailbox-report --limit 5", detail, ok));

    // Unchanged, over WinRM Remote PowerShell: the broker and the plugin cannot tell.
    let over_rps = Broker::new(
        policy,
        Arc::new(rps.clone()),
        audit,
        Duration::from_secs(30),
    );
    let rps_report = plugins
        .run(
            &plugin,
            &over_rps,
            RunRequest::new(vec!["--limit".into(), "5".into()]),
        )
        .await?;
    let (detail, ok) = match &rps_report.outcome {
        RunOutcome::Completed {
            output: GuestOutput::Text(text),
        } => {
            let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            let same = value == showcase.plugin_output;
            (
                format!(
                    "{} calls over /PowerShell-LiveID; output {} the REST run's",
                    rps_report.usage.calls,
                    if same {
                        "identical to"
                    } else {
                        "DIFFERENT from"
                    }
                ),
                same,
            )
        }
        other => (format!("{other:?}"), false),
    };
    rows.push((
        "plugin: the same run over WinRM Remote PowerShell",
        detail,
        ok,
    ));
    // Closing the runspace pool is what a well-behaved client does (a leaked one would hold
    // one of the account's few sessions on a real server).
    rps.close().await?;
    let trail = std::fs::read_to_string(&trail_path)?;
    showcase.plugin_audit = trail
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["run_id"] == report.run_id.as_str())
        .map(|l| {
            json!({
                "kind": l["kind"],
                "cmdlet": l["cmdlet"],
                "rule": l["rule"],
                "outcome": l["outcome"]["status"],
                "objects": l["objects"],
            })
        })
        .collect();

    // One changed byte (here: an appended custom section) and the pin no longer matches.
    let mut tampered = MAILBOX_REPORT.to_vec();
    tampered.extend_from_slice(&[0, 5, 4, b'n', b'o', b't', b'e']);
    let tampered = plugins.load_bytes("mailbox-report.wasm (modified)", tampered)?;
    let (detail, ok) = match plugins
        .run(&tampered, &broker, RunRequest::new(Vec::new()))
        .await
    {
        Err(warden_runtime::RuntimeError::Refused(GuestError::Denied { rule, .. })) => (
            format!("refused by {rule} before any of its code ran"),
            rule == "grant:mailbox-report",
        ),
        other => (format!("{other:?}"), false),
    };
    rows.push(("plugin: the same report with one section added", detail, ok));

    let calls_before = emulator.counters().invoke_requests;
    for (step, source, expect) in [
        (
            "script: one-liner Get-Mailbox -ResultSize 10, counted",
            ONE_LINER,
            json!(10),
        ),
        (
            "script: tries Remove-Mailbox, catches the refusal",
            TRIES_REMOVE,
            json!("denied by default-deny"),
        ),
    ] {
        let compiled = scripts.compile("inline script", source)?;
        let report = scripts
            .run(
                &compiled,
                Principal::inline_script(source),
                &broker,
                RunRequest::new(Vec::new()),
            )
            .await?;
        let (detail, ok) = match &report.outcome {
            RunOutcome::Completed {
                output: GuestOutput::Json(value),
            } => (format!("{source}  →  {value}"), *value == expect),
            other => (format!("{other:?}"), false),
        };
        rows.push((step, detail, ok));
    }
    let reads = emulator.counters().invoke_requests - calls_before;
    rows.push((
        "script: requests that reached Exchange",
        format!("{reads} (the one-liner's read; the refused Remove-Mailbox never left warden)"),
        reads == 1,
    ));
    let compiled = scripts.compile("inline script", RUNAWAY)?;
    let report = scripts
        .run(
            &compiled,
            Principal::inline_script(RUNAWAY),
            &broker,
            RunRequest::new(Vec::new()),
        )
        .await?;
    let (detail, ok) = match &report.outcome {
        RunOutcome::Stopped { reason } => (
            format!("{reason} after {:.1} s", report.elapsed.as_secs_f64()),
            matches!(
                reason,
                StopReason::Cpu { .. } | StopReason::ScriptLimit { .. }
            ),
        ),
        other => (format!("{other:?}"), false),
    };
    rows.push(("script: an endless loop", detail, ok));

    let report = warden_audit::verify(&trail_path, &AuditKey::load(&key_file)?)?;
    rows.push((
        "broker: audit trail verifies",
        format!("{} lines, chain intact: {}", report.lines, report.ok()),
        report.ok() && report.lines >= 4,
    ));
    Ok((rows, showcase))
}

/// The demo's delegated tasks (`warden serve --demo`): their scripts, as h-tasks wrote them.
const LIST_MAILBOXES: &str = include_str!("../../../../scripts/tasks/list-mailboxes.rhai");
const RENAME_MAILBOX: &str = include_str!("../../../../scripts/tasks/rename-mailbox.rhai");

/// The demo policy of `warden serve --demo`: the shipped task policy (its grants pin the two
/// scripts above; `policy_tasks::the_shipped_task_policy_pins_its_scripts…` keeps them in step),
/// written for the demo tenant's domain.
const SERVE_DEMO_POLICY: &str = include_str!("../../../../scripts/tasks/policy.toml");
/// The domain the shipped task policy names.
const SERVE_DEMO_POLICY_DOMAIN: &str = "contoso.onmicrosoft.com";

/// `warden serve --demo`'s emulated tenant, its policy and the service's wiring to both.
pub struct ServeDemo {
    emulator: exosim::Exosim,
    wiring: super::serve::Wiring,
}

impl std::fmt::Debug for ServeDemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeDemo")
            .field("url", &self.emulator.url())
            .finish_non_exhaustive()
    }
}

impl ServeDemo {
    /// What the service is started with.
    pub fn wiring(&self) -> super::serve::Wiring {
        self.wiring.clone()
    }
}

/// Starts the embedded exosim in `state_dir/exosim`, writes the demo policy and its task
/// scripts into `state_dir`, and connects to the demo tenant's Exchange as its admin app (the
/// same `connect()` as every command).
pub async fn serve_demo(state_dir: &std::path::Path) -> anyhow::Result<ServeDemo> {
    use warden_exchange::{ExchangeSettings, connect};
    let emulator = exosim::Exosim::start(exosim::ExosimOptions::demo(state_dir.join("exosim")))
        .await
        .context("starting the embedded emulator")?;
    let ready = emulator.ready_info();
    let tenant = ready.tenant();
    let app = demo_app(&ready, exosim::DEMO_CLIENT_ID)?;
    let service = ready
        .sign_in
        .service_app
        .clone()
        .context("exosim's demo tenant has no service app")?;
    let env = [
        ("AZURE_TENANT_ID", tenant.tenant_id.clone()),
        ("AZURE_CLIENT_ID", app.client_id.clone()),
        (
            "AZURE_CLIENT_SECRET",
            needed(app, "client secret", &app.client_secret)?,
        ),
        ("AZURE_AUTHORITY_HOST", emulator.url()),
        ("WARDEN_CA_FILE", emulator.ca_file().display().to_string()),
        ("WARDEN_EXCHANGE_URL", emulator.exchange_url()),
    ];
    let env = Environment::from_pairs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let settings = AuthSettings::resolve(None, &Overrides::default(), &env)?;
    let exchange = ExchangeSettings::resolve(&settings, None, &env)?;
    let tokens = TokenProvider::new(
        settings.load_credential()?,
        Arc::new(ReqwestTransport::new(settings.ca_file.as_deref())?),
    );
    let runner = connect(&exchange, tokens)?;

    std::fs::write(state_dir.join("list-mailboxes.rhai"), LIST_MAILBOXES)?;
    std::fs::write(state_dir.join("rename-mailbox.rhai"), RENAME_MAILBOX)?;
    let policy_text = SERVE_DEMO_POLICY.replace(SERVE_DEMO_POLICY_DOMAIN, exosim::DEMO_DOMAIN);
    let policy = state_dir.join("demo-policy.toml");
    std::fs::write(&policy, policy_text)?;

    let group_names = tenant
        .groups
        .iter()
        .map(|g| (g.object_id.clone(), g.name.clone()))
        .collect();
    let mut ready_fields = serde_json::Map::new();
    ready_fields.insert("exosim".into(), serde_json::to_value(&ready)?);
    ready_fields.insert("policy".into(), policy.display().to_string().into());
    let wiring = super::serve::Wiring {
        runner,
        auth: warden_serve::AuthSettings {
            authority: url::Url::parse(&ready.authority)
                .context("exosim's ready info has no OIDC authority")?,
            tenant_id: tenant.tenant_id.clone(),
            client_id: service.client_id.clone(),
            client_secret: service.client_secret.clone().into(),
            app_id_uri: service.app_id_uri.clone(),
            public_url: None,
            session_ttl: Duration::from_secs(8 * 3600),
            // The demo tenant's public client: `msal` or curl users get API tokens through it.
            api_clients: tenant
                .sign_in
                .public_client
                .iter()
                .map(|c| c.client_id.clone())
                .collect(),
        },
        policy,
        group_names,
        ca_file: Some(emulator.ca_file().to_owned()),
        ready: ready_fields,
    };
    Ok(ServeDemo { emulator, wiring })
}
