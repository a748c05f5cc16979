//! Fidelity to Exchange Online (issue 15): SecureString parameters, RBAC for Applications and
//! the EXOModuleFile lookup, against exosim over real HTTPS (docs/fidelity.md, "SecureString,
//! RBAC for Applications and what the app may run").
//!
//! Each test fails with the old client or the old emulator: the old client sent SecureString
//! values in plain text (exosim now refuses them), the old emulator refused every app without
//! a `wids` role (RBAC for Applications now authorises it), the old diagnosis failed an empty
//! `wids`, and nothing asked Exchange which cmdlets the app may run.

use crate::hostile::{call_script, granted_host_over, reason_of, rhai_string};
use crate::support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use warden_exchange::{ExchangeError, Invocation, ParamValue, Parameters};
use warden_runtime::RuntimeLimits;

/// A password that meets exosim's policy; it must never be seen anywhere but inside exosim.
const CANARY: &str = "Canary-Secret-7f3e!";

/// Client ids of the apps these tests add to the demo tenant.
const SCOPED_UNIT_APP: &str = "3c9e1f20-7a4b-4c5d-8e6f-0a1b2c3d4e51";
const SCOPED_FILTER_APP: &str = "3c9e1f20-7a4b-4c5d-8e6f-0a1b2c3d4e52";
const ORG_APP: &str = "3c9e1f20-7a4b-4c5d-8e6f-0a1b2c3d4e53";
const SCOPED_GROUPS_APP: &str = "3c9e1f20-7a4b-4c5d-8e6f-0a1b2c3d4e54";
/// Ready-info indices of those apps (after the demo tenant's four).
const UNIT: usize = 4;
const FILTER: usize = 5;
const ORG: usize = 6;
const GROUPS: usize = 7;
/// The member of the "Sales" administrative unit (created by the test as the admin).
const MEMBER: &str = "rbac.member@contoso.onmicrosoft.com";

/// The demo tenant plus three apps with no `wids` that hold Exchange role assignments:
/// Mail Recipients scoped to the "Sales" administrative unit, Mail Recipients scoped to the
/// "Shared" management scope, and Organization Management unscoped.
async fn rbac_emulator() -> Emulator {
    Emulator::start_with(|options| {
        let tenant = &mut options.tenants.tenants[0];
        tenant.administrative_units = serde_json::from_value(json!([
            {"name": "Sales", "members": [MEMBER]}
        ]))
        .unwrap();
        tenant.management_scopes = serde_json::from_value(json!([
            {"name": "Shared", "recipient_restriction_filter": "RecipientTypeDetails -eq 'SharedMailbox'"}
        ]))
        .unwrap();
        for (name, client_id, assignment) in [
            (
                "warden-rbac-unit",
                SCOPED_UNIT_APP,
                json!({"role": "Mail Recipients", "administrative_unit": "Sales"}),
            ),
            (
                "warden-rbac-filter",
                SCOPED_FILTER_APP,
                json!({"role": "Mail Recipients", "management_scope": "Shared"}),
            ),
            (
                "warden-rbac-org",
                ORG_APP,
                json!({"role": "Organization Management"}),
            ),
            (
                "warden-rbac-groups",
                SCOPED_GROUPS_APP,
                json!({"role": "Recipient Management", "administrative_unit": "Sales"}),
            ),
        ] {
            tenant.apps.push(
                serde_json::from_value(json!({
                    "name": name,
                    "client_id": client_id,
                    "roles": ["Exchange.ManageAsApp"],
                    "secret": [{}],
                    "role_assignment": [assignment],
                }))
                .unwrap(),
            );
        }
    })
    .await
}

fn call(cmdlet: &str, parameters: Value) -> Invocation {
    let parameters: Parameters = parameters
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), ParamValue::from_named_json(k, v)))
        .collect();
    Invocation::new(cmdlet, parameters)
}

/// A REST session for app 0 that encrypts with the key exosim publishes, configured the way an
/// operator would: `WARDEN_EXCHANGE_SECURE_STRING_KEY`.
fn session_with_published_key(emu: &Emulator) -> warden_exchange::RestSession {
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    let settings = settings(&env, &Default::default()).unwrap();
    let key = emu.ready["secure_string_public_key"].as_str().unwrap();
    assert!(key.starts_with("<RSAKeyValue>"), "{key}");
    let exchange_env = warden_auth::config::Environment::from_pairs([
        ("WARDEN_EXCHANGE_URL", emu.exosim.exchange_url().as_str()),
        ("WARDEN_EXCHANGE_SECURE_STRING_KEY", key),
    ]);
    let exchange = warden_exchange::ExchangeSettings::resolve(
        &settings,
        Some(warden_exchange::Transport::Rest),
        &exchange_env,
    )
    .unwrap();
    warden_exchange::connect::rest_session(&exchange, provider(&settings).unwrap()).unwrap()
}

/// Some user mailbox's address (not [`MEMBER`]).
async fn a_user_mailbox(emu: &Emulator) -> String {
    operator_invoke(
        emu,
        "Get-Mailbox",
        json!({"RecipientTypeDetails": "UserMailbox", "ResultSize": 5}),
    )
    .await
    .iter()
    .filter_map(|m| m["PrimarySmtpAddress"].as_str().map(str::to_owned))
    .find(|a| a != MEMBER)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_strings_leave_encrypted_with_the_configured_key_and_exosim_refuses_plain_text() {
    let emu = Emulator::start().await;
    let user = a_user_mailbox(&emu).await;
    let session = session_with_published_key(&emu);
    // Encrypted with exosim's key: exosim decrypts it and applies its password policy, so a
    // weak value is refused by that policy (it arrived intact) and a good one is set.
    session
        .invoke(call(
            "Set-Mailbox",
            json!({"Identity": user, "Password": CANARY}),
        ))
        .await
        .unwrap();
    assert!(calls_of(&emu, "Set-Mailbox").last().unwrap().applied);
    let weak = session
        .invoke(call(
            "Set-Mailbox",
            json!({"Identity": user, "Password": "weak"}),
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(weak.contains("password policy"), "{weak}");
    assert!(!weak.contains("weak\""), "the value is not echoed: {weak}");

    // The module's own key (the default): exosim cannot decrypt it, as the service could not
    // decrypt a block under a key it does not hold.
    let module_keyed = admin_session(&emu)
        .invoke(call(
            "Set-Mailbox",
            json!({"Identity": user, "Password": CANARY}),
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        module_keyed.contains("not encrypted with the service's public key"),
        "{module_keyed}"
    );

    // What the old client sent: the plain text. exosim refuses it without echoing it.
    let (_, tokens) = admin_session_and_provider(&emu);
    let token = tokens.get_token(EXCHANGE_SCOPE).await.unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(emu.ca()).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let answer = http
        .post(format!(
            "{}/adminapi/beta/{}/InvokeCommand",
            emu.exosim.exchange_url(),
            emu.tenant_id()
        ))
        .bearer_auth(token.expose())
        .json(&json!({"CmdletInput": {"CmdletName": "Set-Mailbox",
            "Parameters": {"Identity": user, "Password": CANARY}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let body = answer.text().await.unwrap();
    assert!(body.contains("System.Security.SecureString"), "{body}");
    assert!(!body.contains(CANARY), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_strings_over_rps_are_refused_before_sending_and_name_rest() {
    // REST-only behaviour: RPS would need PSRP's session-key exchange, which is not implemented.
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rps);
    let before = calls_of(&emu, "Set-Mailbox").len();
    let error = invoke_all(
        runner.as_ref(),
        call(
            "Set-Mailbox",
            json!({"Identity": "anyone@contoso.onmicrosoft.com", "Password": CANARY}),
        ),
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, ExchangeError::Invalid(_)), "{text}");
    assert!(text.contains("--transport rest"), "{text}");
    assert!(!text.contains(CANARY) && !format!("{error:?}").contains(CANARY));
    assert_eq!(
        calls_of(&emu, "Set-Mailbox").len(),
        before,
        "nothing was sent"
    );
}

#[test]
fn an_invocations_debug_never_shows_a_secure_value() {
    let invocation = call(
        "New-MigrationEndpoint",
        json!({"Identity": "x", "OAuthCode": CANARY, "Password": CANARY}),
    );
    let shown = format!("{invocation:?}");
    assert!(!shown.contains(CANARY), "{shown}");
    assert!(shown.contains("OAuthCode"), "{shown}");
}

/// What the hostile tests grant: Set-Mailbox with its SecureString `Password`, opted in.
const SECURE_ROLES: &str = r#"
[roles.resetter]
[[roles.resetter.cmdlet]]
name = "Set-Mailbox"
[roles.resetter.cmdlet.parameters]
Identity = { length = [1, 256] }
Password = { length = [1, 256], sensitive = true }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_get_a_secure_value_echoed_back_from_wasm_or_rhai() {
    let emu = Emulator::start().await;
    let user = a_user_mailbox(&emu).await;
    let session: Arc<dyn warden_exchange::CmdletRunner> =
        Arc::new(session_with_published_key(&emu));
    // The value as a string (set), too weak (exosim's policy refuses it), and in shapes meant
    // to make some layer quote it back: a list, a number-like text, a credential-shaped map.
    let tries: Vec<Value> = vec![
        json!(CANARY),
        json!(CANARY[..7].to_owned()),
        json!([CANARY]),
        json!({"UserName": "x", "Password": CANARY}),
        json!(format!("{CANARY}{}", "x".repeat(300))),
    ];
    let scripts: Vec<String> = tries
        .iter()
        .map(|value| {
            call_script(
                &rhai_string("Set-Mailbox"),
                &format!(
                    "#{{Identity: {}, Password: {}}}",
                    rhai_string(&user),
                    crate::hostile::rhai_literal(value)
                ),
            )
        })
        .collect();
    let host = granted_host_over(
        emu,
        session,
        RuntimeLimits::default(),
        SECURE_ROLES,
        "roles = [\"resetter\"]\n[grant.budgets]\nwrites = 100\n",
        &scripts,
    );
    let mut seen = Vec::new();
    for (value, script) in tries.iter().zip(&scripts) {
        let parameters = json!({"Identity": user, "Password": value}).to_string();
        let (wasm, wasm_log) = host.probe(&["invoke", "Set-Mailbox", &parameters]).await;
        let (rhai, rhai_log) = host.script(script, &[]).await;
        for (what, report, log) in [("wasm", &wasm, &wasm_log), ("Rhai", &rhai, &rhai_log)] {
            let answer = crate::guests::output_json(report);
            if let Some(error) = answer.get("error") {
                seen.push(format!("{what} {value}: {}", reason_of(error)));
            }
            let everything = format!("{answer} {report:?} {log:?}");
            assert!(
                !everything.contains(&CANARY[..12]),
                "{what} {value}: the value came back: {everything}"
            );
        }
    }
    let audit = std::fs::read_to_string(&host.audit_path).unwrap();
    assert!(!audit.contains(&CANARY[..12]), "the audit kept the value");
    assert!(audit.contains("Password"), "the audit names the parameter");
    assert!(
        warden_audit::verify(&host.audit_path, &host.key)
            .unwrap()
            .ok()
    );
    // The string was set (once per runtime); the other shapes never reached Exchange intact.
    let applied = host
        .emu
        .exosim
        .exchange_log()
        .iter()
        .filter(|r| r.cmdlet.as_deref() == Some("Set-Mailbox") && r.applied)
        .count();
    assert!(applied >= 1, "{seen:?}");
}

#[test]
fn granting_a_secure_string_parameter_is_an_explicit_opt_in_and_never_ad_hoc() {
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| {
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, format!("version = 1\n{text}")).unwrap();
        warden_policy::Policy::load(&path)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // OAuthCode: a SecureString whose name looks like no password, secret or token.
    let role = |constraint: &str| {
        format!(
            "[roles.migrate]\n[[roles.migrate.cmdlet]]\nname = \"New-MigrationEndpoint\"\n\
             [roles.migrate.cmdlet.parameters]\nOAuthCode = {constraint}\n"
        )
    };
    let pinned = "[[grant]]\nscript_inline_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"migrate\"]\n";
    let why = load(&format!("{}{pinned}", role("{ any = true }"))).unwrap_err();
    assert!(
        why.contains("SecureString") && why.contains("sensitive = true"),
        "{why}"
    );
    load(&format!(
        "{}{pinned}",
        role("{ any = true, sensitive = true }")
    ))
    .unwrap();
    // An ad hoc script's text is audited whole: it may not take one at all.
    let ad_hoc =
        "[[grant]]\nprincipal = \"operator\"\nscript_inline = \"any\"\nroles = [\"migrate\"]\n";
    let why = load(&format!(
        "{}{ad_hoc}",
        role("{ any = true, sensitive = true }")
    ))
    .unwrap_err();
    assert!(why.contains("ad hoc"), "{why}");
    // The audit keeps OAuthCode keyed-hashed by name alone.
    assert!(warden_policy::names::sensitive_by_name("OAuthCode"));
}

async fn an_app_without_wids_is_authorised_by_its_role_assignment_within_its_scope(
    transport: Transport,
) {
    let emu = rbac_emulator().await;
    operator_invoke(
        &emu,
        "New-Mailbox",
        json!({"Name": "RBAC Member", "Alias": "rbac.member", "PrimarySmtpAddress": MEMBER}),
    )
    .await;
    let outsider = a_user_mailbox(&emu).await;
    let shared = operator_invoke(
        &emu,
        "Get-Mailbox",
        json!({"RecipientTypeDetails": "SharedMailbox", "ResultSize": 1}),
    )
    .await[0]["PrimarySmtpAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let set = |who: &str| {
        call(
            "Set-Mailbox",
            json!({"Identity": who, "DisplayName": "Renamed by RBAC"}),
        )
    };

    // Administrative unit: reads are organisation-wide, writes only on its members.
    let (unit, _) = runner_for(&emu, UNIT, transport);
    assert!(
        !invoke_all(unit.as_ref(), call("Get-Mailbox", json!({"ResultSize": 3})))
            .await
            .unwrap()
            .is_empty()
    );
    invoke_all(unit.as_ref(), set(MEMBER)).await.unwrap();
    let refused = invoke_all(unit.as_ref(), set(&outsider))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("out of the current user's write scope"),
        "{transport:?}: {refused}"
    );
    // Mail Recipients does not hold New-Mailbox.
    let refused = invoke_all(unit.as_ref(), call("New-Mailbox", json!({"Name": "x"})))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("New-Mailbox"),
        "{transport:?}: {refused}"
    );

    // Management scope (a recipient filter): shared mailboxes only.
    let (filter, _) = runner_for(&emu, FILTER, transport);
    invoke_all(filter.as_ref(), set(&shared)).await.unwrap();
    let refused = invoke_all(filter.as_ref(), set(MEMBER))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("write scope"), "{transport:?}: {refused}");

    // An unscoped role group: anywhere.
    let (org, _) = runner_for(&emu, ORG, transport);
    invoke_all(org.as_ref(), set(&outsider)).await.unwrap();

    // Neither a wids role nor an assignment: every cmdlet refused (403), as before.
    let (none, _) = runner_for(&emu, 2, transport);
    match invoke_all(none.as_ref(), call("Get-Mailbox", json!({})))
        .await
        .unwrap_err()
    {
        ExchangeError::AccessDenied { status, .. } => assert_eq!(status, 403, "{transport:?}"),
        other => panic!("{transport:?}: {other}"),
    }
}

over_both_transports!(an_app_without_wids_is_authorised_by_its_role_assignment_within_its_scope);

/// The scope is checked on what the cmdlet acts on, as the binder bound it: a group for the
/// group-member cmdlets, a mailbox named by a number, and a target that resolves to nothing is
/// refused rather than let through (the old check resolved every target as a mailbox from the
/// raw JSON string and allowed the write when that failed).
async fn a_scoped_app_cannot_write_outside_its_scope_by_group_number_or_unknown_target(
    transport: Transport,
) {
    let emu = rbac_emulator().await;
    operator_invoke(
        &emu,
        "New-Mailbox",
        json!({"Name": "RBAC Member", "Alias": "rbac.member", "PrimarySmtpAddress": MEMBER}),
    )
    .await;
    operator_invoke(
        &emu,
        "New-Mailbox",
        json!({"Name": "Numbered", "Alias": "424242"}),
    )
    .await;
    let group = operator_invoke(&emu, "Get-DistributionGroup", json!({"ResultSize": 1})).await[0]
        ["PrimarySmtpAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let (scoped, _) = runner_for(&emu, GROUPS, transport);
    let out_of_scope = |refused: ExchangeError| {
        let refused = refused.to_string();
        assert!(
            refused.contains("out of the current user's write scope"),
            "{transport:?}: {refused}"
        );
    };

    // A group outside the unit: refused, and the member was not added.
    out_of_scope(
        invoke_all(
            scoped.as_ref(),
            call(
                "Add-DistributionGroupMember",
                json!({"Identity": group, "Member": MEMBER}),
            ),
        )
        .await
        .unwrap_err(),
    );
    let members = operator_invoke(
        &emu,
        "Get-DistributionGroupMember",
        json!({"Identity": group}),
    )
    .await;
    assert!(
        !members
            .iter()
            .any(|m| m["PrimarySmtpAddress"].as_str() == Some(MEMBER)),
        "{transport:?}: {members:?}"
    );
    // A mailbox named by a number (bound as its text, like PowerShell's binder).
    out_of_scope(
        invoke_all(
            scoped.as_ref(),
            call(
                "Set-Mailbox",
                json!({"Identity": 424242, "DisplayName": "x"}),
            ),
        )
        .await
        .unwrap_err(),
    );
    // A target that resolves to nothing: fail closed.
    out_of_scope(
        invoke_all(
            scoped.as_ref(),
            call(
                "Set-Mailbox",
                json!({"Identity": "nobody@nowhere.example", "DisplayName": "x"}),
            ),
        )
        .await
        .unwrap_err(),
    );
    // Inside the unit it still works.
    invoke_all(
        scoped.as_ref(),
        call(
            "Set-Mailbox",
            json!({"Identity": MEMBER, "DisplayName": "In scope"}),
        ),
    )
    .await
    .unwrap();
}

over_both_transports!(
    a_scoped_app_cannot_write_outside_its_scope_by_group_number_or_unknown_target
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exo_module_file_lists_what_each_app_may_run() {
    // REST-only: the module's connect-time lookup has no RPS counterpart.
    let emu = rbac_emulator().await;
    let exported = |index: usize| {
        let emu = &emu;
        async move {
            let env = with(
                emu.env_for(index),
                &[("AZURE_CLIENT_SECRET", &emu.app_str(index, "client_secret"))],
            );
            let settings = settings(&env, &Default::default()).unwrap();
            let exchange = exchange_settings(emu, &settings, Transport::Rest);
            let transport = warden_auth::ReqwestTransport::new(Some(emu.exosim.ca_file())).unwrap();
            warden_exchange::rest::module_file::exported_cmdlets(
                &exchange.rest_config().unwrap(),
                &provider(&settings).unwrap(),
                &transport,
            )
            .await
        }
    };
    let admin = exported(0).await.unwrap();
    assert!(admin.iter().any(|c| c == "Remove-Mailbox"), "{admin:?}");
    let reader = exported(3).await.unwrap();
    assert!(reader.iter().all(|c| c.starts_with("Get-")), "{reader:?}");
    let unit = exported(UNIT).await.unwrap();
    assert!(unit.iter().any(|c| c == "Set-Mailbox"), "{unit:?}");
    assert!(!unit.iter().any(|c| c == "New-Mailbox"), "{unit:?}");
    match exported(2).await.unwrap_err() {
        ExchangeError::AccessDenied { status, .. } => assert_eq!(status, 403),
        other => panic!("{other}"),
    }
    let lookups = emu
        .exosim
        .exchange_log()
        .iter()
        .filter(|r| r.path.contains("/EXOModuleFile"))
        .count();
    assert_eq!(lookups, 4, "one GET per lookup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_warns_about_an_empty_wids_and_lists_the_cmdlets_the_app_may_run() {
    let emu = rbac_emulator().await;
    let env = with(
        emu.env_for(UNIT),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(UNIT, "client_secret"))],
    );
    let output = warden(&["doctor", "--output", "json"], &env).await;
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(output.status.success(), "{report}");
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check: {report}"))
            .clone()
    };
    let role = check("directory role");
    assert_eq!(role["status"], "warn", "{role}");
    let fix = role["fix"].as_str().unwrap();
    assert!(
        fix.contains("Exchange Administrator") && fix.contains("New-ManagementRoleAssignment -App"),
        "{fix}"
    );
    let cmdlets = check("cmdlets");
    assert_eq!(cmdlets["status"], "pass", "{cmdlets}");
    assert!(
        cmdlets["detail"].as_str().unwrap().contains("Set-Mailbox"),
        "{cmdlets}"
    );
    // Get-OrganizationConfig is outside Mail Recipients: the probe only warns.
    assert_eq!(check("exchange")["status"], "warn", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_with_a_tenant_warns_about_grants_the_app_cannot_run() {
    let emu = Emulator::start().await;
    let dir = emu.dir.path();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[tenants.reader]\ntenant_id = \"{}\"\nclient_id = \"{}\"\nauthority_host = \"{}\"\n\
             [tenants.reader.credential]\nkind = \"secret\"\nsecret_env = \"READER_SECRET\"\n",
            emu.tenant_id(),
            emu.app_str(3, "client_id"),
            emu.exosim.url()
        ),
    )
    .unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[roles.cleanup]\n[[roles.cleanup.cmdlet]]\nname = \"Get-Mailbox\"\n\
         [[roles.cleanup.cmdlet]]\nname = \"Remove-Mailbox\"\n\
         [[grant]]\nscript_inline_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"cleanup\"]\n",
    )
    .unwrap();
    let env: Env = vec![
        ("WARDEN_CA_FILE".into(), emu.ca()),
        ("WARDEN_EXCHANGE_URL".into(), emu.exosim.exchange_url()),
        ("READER_SECRET".into(), emu.app_str(3, "client_secret")),
    ];
    let policy_s = policy.display().to_string();
    let config_s = config.display().to_string();
    let output = warden(
        &[
            "policy", "check", &policy_s, "--config", &config_s, "--tenant", "reader",
        ],
        &env,
    )
    .await;
    let (out, err) = text(&output);
    assert!(
        output.status.success(),
        "a warning keeps the exit code: {out}{err}"
    );
    assert!(
        err.contains("allows Remove-Mailbox") && err.contains("does not let it run"),
        "{err}"
    );
    assert!(!err.contains("allows Get-Mailbox"), "{err}");
    // Without --tenant nothing is asked.
    let output = warden(&["policy", "check", &policy_s], &env).await;
    assert!(!text(&output).1.contains("does not let it run"));
}
