//! exosim as many tenants (`exosim serve --tenants N`, [`exosim::TenantsConfig::add_fleet`])
//! over real HTTPS: generated tenants serve their own data; the multi-tenant app `warden-fleet`
//! gets a token per tenant from that tenant's authority (a client secret and a certificate,
//! through warden's own token provider), which Exchange accepts for that tenant only; a tenant
//! without consent answers Entra's AADSTS700016 (docs/protocol/entra-auth.md §1.6, after the
//! error codes reference and MSAL.NET's `WrongTenantError700016` fixture); faults and throttling
//! aimed at one tenant leave the others alone; both request logs name each request's tenant;
//! msal-python, an independent client, gets tokens per tenant too.

use crate::support::*;
use exosim::{FLEET_CLIENT_ID, FleetConfig};
use serde_json::{Value, json};

const TENANTS: usize = 50;
const UNCONSENTED: [usize; 2] = [3, 11];

/// A running fleet and one HTTPS client for the whole test (a client per request would cost a
/// TLS handshake each).
struct Fleet {
    emu: Emulator,
    http: reqwest::Client,
}

impl std::ops::Deref for Fleet {
    type Target = Emulator;

    fn deref(&self) -> &Emulator {
        &self.emu
    }
}

async fn fleet() -> Fleet {
    let emu = Emulator::start_with(|o| {
        o.tenants
            .add_fleet(&FleetConfig {
                tenants: TENANTS,
                unconsented: UNCONSENTED.to_vec(),
                mailboxes: 4,
            })
            .unwrap();
    })
    .await;
    let ca = std::fs::read(emu.exosim.ca_file()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    Fleet { emu, http }
}

fn fleet_app(emu: &Emulator) -> Value {
    emu.ready["multi_tenant_apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["client_id"] == FLEET_CLIENT_ID)
        .expect("the ready file lists warden-fleet")
        .clone()
}

/// A client-credentials request with the fleet app's secret to tenant `index`'s authority.
async fn token_request(emu: &Fleet, index: usize) -> (u16, Value) {
    let app = fleet_app(emu);
    let response = emu
        .http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            emu.exosim.url(),
            FleetConfig::domain(index)
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", FLEET_CLIENT_ID),
            ("client_secret", app["client_secret"].as_str().unwrap()),
            ("scope", EXCHANGE_SCOPE),
        ])
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn token(emu: &Fleet, index: usize) -> String {
    let (status, body) = token_request(emu, index).await;
    assert_eq!(status, 200, "tenant {index}: {body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// `Get-Mailbox` at the Exchange URL of `tenant` (id or domain) with `token`.
async fn get_mailbox(emu: &Fleet, tenant: &str, token: &str) -> (u16, Value) {
    let response = emu
        .http
        .post(format!(
            "{}/adminapi/beta/{tenant}/InvokeCommand",
            emu.exosim.exchange_url()
        ))
        .bearer_auth(token)
        .json(&json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {}}}))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn exchange_faults(emu: &Fleet, update: Value) -> (u16, Value) {
    let response = emu
        .http
        .post(emu.ready["control"]["exchange_faults"].as_str().unwrap())
        .json(&update)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_fleet_ready_file_lists_every_tenant_and_the_app() {
    let emu = fleet().await;
    let tenants = emu.ready["tenants"].as_array().unwrap();
    assert_eq!(
        tenants.len(),
        TENANTS + 1,
        "the demo tenant, then the fleet"
    );
    assert_eq!(tenants[0]["domain"], exosim::DEMO_DOMAIN);
    for (index, t) in tenants.iter().enumerate().skip(1) {
        assert_eq!(t["tenant_id"], FleetConfig::tenant_id(index).as_str());
        assert_eq!(
            t["domain"],
            format!("tenant-{index:03}.onmicrosoft.com").as_str()
        );
        assert_eq!(t["display_name"], format!("Tenant {index:03}").as_str());
        let consented = t["consents"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["client_id"] == FLEET_CLIENT_ID));
        assert_eq!(consented, !UNCONSENTED.contains(&index), "tenant {index}");
    }
    let app = fleet_app(&emu);
    assert_eq!(app["home_tenant_id"], emu.tenant_id().as_str());
    assert!(app["client_secret"].is_string());
    assert!(std::path::Path::new(app["certificate_pfx"].as_str().unwrap()).exists());
    assert_eq!(
        app["consented_tenant_ids"].as_array().unwrap().len(),
        TENANTS + 1 - UNCONSENTED.len()
    );
    let unconsented: Vec<String> = UNCONSENTED
        .iter()
        .map(|i| FleetConfig::tenant_id(*i))
        .collect();
    assert_eq!(app["unconsented_tenant_ids"], json!(unconsented));
    // Existing readers are unchanged: the first app is still the demo app.
    assert_eq!(emu.app(0)["client_id"], exosim::DEMO_CLIENT_ID);
}

/// A multi-tenant app is one before any tenant consents: the ready file lists it, with only its
/// home consented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_fleet_app_is_listed_where_no_tenant_consents() {
    let emu = Emulator::start_with(|o| {
        o.tenants
            .add_fleet(&FleetConfig {
                tenants: 2,
                unconsented: vec![1, 2],
                mailboxes: 1,
            })
            .unwrap();
    })
    .await;
    let app = fleet_app(&emu);
    assert_eq!(app["consented_tenant_ids"], json!([emu.tenant_id()]));
    assert_eq!(
        app["unconsented_tenant_ids"],
        json!([FleetConfig::tenant_id(1), FleetConfig::tenant_id(2)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_fleet_tenants_serve_distinct_data() {
    let emu = fleet().await;
    let mut seen = std::collections::HashSet::new();
    for index in (1..=TENANTS).filter(|i| !UNCONSENTED.contains(i)) {
        let token = token(&emu, index).await;
        let claims = claims(&token);
        let tenant_id = FleetConfig::tenant_id(index);
        assert_eq!(claims["tid"], tenant_id.as_str());
        // The v1 issuer of Exchange tokens names the customer tenant, not the app's home.
        assert_eq!(
            claims["iss"],
            format!("https://sts.windows.net/{tenant_id}/").as_str()
        );
        assert_eq!(claims["appid"], FLEET_CLIENT_ID);
        let domain = FleetConfig::domain(index);
        let (status, body) = get_mailbox(&emu, &domain, &token).await;
        assert_eq!(status, 200, "tenant {index}: {body}");
        let rows = body["value"].as_array().unwrap();
        assert_eq!(rows.len(), 4, "tenant {index}: its own 4 mailboxes");
        for row in rows {
            let address = row["PrimarySmtpAddress"].as_str().unwrap();
            assert!(address.ends_with(&format!("@{domain}")), "{address}");
            assert!(seen.insert(address.to_owned()), "{address} twice");
        }
    }
    // Each InvokeCommand is logged with its tenant: the fleet's witness.
    let log = emu.exosim.exchange_log();
    assert_eq!(log.len(), TENANTS - UNCONSENTED.len());
    for (record, index) in log
        .iter()
        .zip((1..=TENANTS).filter(|i| !UNCONSENTED.contains(i)))
    {
        assert_eq!(record.tenant_id, Some(FleetConfig::tenant_id(index)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_fleet_token_is_accepted_by_its_own_tenant_only() {
    let emu = fleet().await;
    // A certificate this time, through warden's own provider (a client assertion).
    let app = fleet_app(&emu);
    let env = vec![
        ("AZURE_TENANT_ID".to_owned(), FleetConfig::tenant_id(7)),
        ("AZURE_CLIENT_ID".to_owned(), FLEET_CLIENT_ID.to_owned()),
        ("AZURE_AUTHORITY_HOST".to_owned(), emu.exosim.url()),
        ("WARDEN_CA_FILE".to_owned(), emu.ca()),
        (
            "AZURE_CLIENT_CERTIFICATE_PATH".to_owned(),
            app["certificate_pfx"].as_str().unwrap().to_owned(),
        ),
        (
            "AZURE_CLIENT_CERTIFICATE_PASSWORD".to_owned(),
            app["certificate_password"].as_str().unwrap().to_owned(),
        ),
    ];
    let provider = provider(&settings(&env, &Default::default()).unwrap()).unwrap();
    let seven = provider.get_token(EXCHANGE_SCOPE).await.unwrap();
    let seven = seven.expose();
    let claims = claims(seven);
    assert_eq!(claims["tid"], FleetConfig::tenant_id(7).as_str());
    assert_eq!(claims["appidacr"], "2", "a certificate");
    // The tenant's own service principal, not the home registration's.
    assert_eq!(claims["oid"], "f1ee75b0-0000-4000-8000-000000000007");
    let (status, body) = get_mailbox(&emu, &FleetConfig::domain(7), seven).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_mailbox(&emu, &FleetConfig::tenant_id(8), seven).await;
    assert_eq!(status, 401, "tenant 7's token at tenant 8: {body}");
    assert!(
        body.to_string().contains("issued for another tenant"),
        "{body}"
    );
    let last = emu.exosim.exchange_log().pop().unwrap();
    assert_eq!(last.tenant_id, Some(FleetConfig::tenant_id(8)));
    assert!(!last.applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_fleet_unconsented_tenant_gets_aadsts700016() {
    let emu = fleet().await;
    let (status, body) = token_request(&emu, 3).await;
    // Entra: unauthorized_client, HTTP 400, "Application with identifier '…' was not found in
    // the directory '…'" (docs/protocol/entra-auth.md §1.6).
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "unauthorized_client", "{body}");
    assert_eq!(body["error_codes"], json!([700016]), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!(
            "AADSTS700016: Application with identifier '{FLEET_CLIENT_ID}' was not found in the directory 'Tenant 003'"
        )),
        "{description}"
    );
    assert!(body.get("access_token").is_none());
    // Its neighbours, with the same credential, are served.
    assert_eq!(token_request(&emu, 2).await.0, 200);
    assert_eq!(token_request(&emu, 4).await.0, 200);
    let logged = emu
        .exosim
        .request_log()
        .into_iter()
        .find(|r| r.status == 400)
        .unwrap();
    assert_eq!(logged.tenant_id, Some(FleetConfig::tenant_id(3)));
    assert_eq!(logged.error.as_deref(), Some("AADSTS700016"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_fleet_throttling_one_tenant_leaves_the_others_alone() {
    let emu = fleet().await;
    let (status, body) = exchange_faults(
        &emu,
        json!({"tenant": FleetConfig::domain(5), "throttle": {"per_second": 0.01, "burst": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["tenants"][FleetConfig::tenant_id(5)]["throttle"].is_object(),
        "{body}"
    );
    let (five, six) = (token(&emu, 5).await, token(&emu, 6).await);
    assert_eq!(
        get_mailbox(&emu, &FleetConfig::domain(5), &five).await.0,
        200
    );
    let (status, body) = get_mailbox(&emu, &FleetConfig::domain(5), &five).await;
    assert_eq!(status, 429, "tenant 5 is throttled: {body}");
    for _ in 0..5 {
        let (status, body) = get_mailbox(&emu, &FleetConfig::domain(6), &six).await;
        assert_eq!(status, 200, "tenant 6 is not: {body}");
    }

    // A fault aimed at one tenant fires there only, whoever asks first.
    let (status, body) = exchange_faults(
        &emu,
        json!({"tenant": FleetConfig::tenant_id(6), "push": [{"kind": "service_unavailable"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let eight = token(&emu, 8).await;
    assert_eq!(
        get_mailbox(&emu, &FleetConfig::domain(8), &eight).await.0,
        200
    );
    assert_eq!(
        get_mailbox(&emu, &FleetConfig::domain(6), &six).await.0,
        503
    );
    assert_eq!(
        get_mailbox(&emu, &FleetConfig::domain(6), &six).await.0,
        200
    );

    // Clearing one tenant lifts its throttle.
    exchange_faults(
        &emu,
        json!({"tenant": FleetConfig::domain(5), "clear": true}),
    )
    .await;
    assert_eq!(
        get_mailbox(&emu, &FleetConfig::domain(5), &five).await.0,
        200
    );

    // A throttle that would refuse everything is refused, as `--throttle 0` is.
    let response = emu
        .http
        .post(emu.ready["control"]["exchange_faults"].as_str().unwrap())
        .json(&json!({"tenant": FleetConfig::domain(5), "throttle": {"per_second": 0, "burst": 0}}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("'0' is not a positive number of requests per second"),
        "{text}"
    );

    // A selector that names no tenant would never fire: refused, with the reason.
    let (status, body) = exchange_faults(
        &emu,
        json!({"tenant": "tenant-999.onmicrosoft.com", "latency_ms": 5}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("tenant-999"),
        "{body}"
    );
}

/// An independent client: msal-python's ConfidentialClientApplication, given the fleet app's
/// one secret, gets a token from a generated tenant's authority (that tenant's `tid`, its own
/// principal's `oid`) and reports Entra's AADSTS700016 from an unconsented one
/// (tests/peers/msal_python_peer.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_fleet_msal_python_gets_a_token_per_tenant() {
    let emu = fleet().await;
    let app = fleet_app(&emu);
    let script = repo_root().join("tests/peers/msal_python_peer.py");
    let run = |index: usize| {
        tokio::process::Command::new(peer_python())
            .arg(&script)
            .args([
                "--authority",
                &format!("{}/{}", emu.exosim.url(), FleetConfig::tenant_id(index)),
            ])
            .args(["--client-id", FLEET_CLIENT_ID, "--credential", "secret"])
            .args(["--ca-file", &emu.ca()])
            .env("PEER_CLIENT_SECRET", app["client_secret"].as_str().unwrap())
            .output()
    };
    let output = run(9).await.unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "msal failed: {stdout}{stderr}");
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["claims"]["tid"], FleetConfig::tenant_id(9).as_str());
    assert_eq!(
        result["claims"]["oid"],
        "f1ee75b0-0000-4000-8000-000000000009"
    );

    let output = run(UNCONSENTED[0]).await.unwrap();
    let (stdout, _) = text(&output);
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["error"], "unauthorized_client", "{result}");
    assert_eq!(result["error_codes"], json!([700016]), "{result}");
}
