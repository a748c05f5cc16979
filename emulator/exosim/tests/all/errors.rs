//! Every AADSTS error the token endpoint produces, table-driven: request → expected status,
//! `error`, code. Also checks each code is counted.

use serde_json::{Value, json};

use crate::support::{EXO_SCOPE, Env, Signer, b64url, claims, demo, now, run};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct Case {
    name: &'static str,
    path: String,
    form: Vec<(String, String)>,
    status: u16,
    error: &'static str,
    code: u64,
    /// A fragment the description must contain.
    mentions: Option<String>,
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn secret_form(client_id: &str, secret: &str) -> Vec<(String, String)> {
    form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("scope", EXO_SCOPE),
    ])
}

fn assertion_form(client_id: &str, assertion: &str) -> Vec<(String, String)> {
    form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
        ("scope", EXO_SCOPE),
    ])
}

fn with(mut base: Vec<(String, String)>, key: &str, value: Option<&str>) -> Vec<(String, String)> {
    base.retain(|(k, _)| k != key);
    if let Some(value) = value {
        base.push((key.to_owned(), value.to_owned()));
    }
    base
}

fn cases(env: &Env) -> Vec<Case> {
    let tid = env.tenant_id().to_owned();
    let v2 = format!("/{tid}/oauth2/v2.0/token");
    let v1 = format!("/{tid}/oauth2/token");
    let aud = env.token_url();
    let app = env.app();
    let cid = app.client_id.clone();
    let secret = app.client_secret.clone().unwrap();
    let signer = Signer::for_app(app);
    let other = Signer::for_app(env.app_by_id(exosim::DEMO_NO_ROLE_CLIENT_ID));
    let x5t = b64url(&signer.sha1());
    let rs256 = json!({"alg": "RS256", "typ": "JWT", "x5t": x5t});
    let good = secret_form(&cid, &secret);
    let signed = |header: &Value, claims: &Value| signer.sign(header, claims);
    let claims_with = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = claims(&cid, &aud);
        edit(c.as_object_mut().unwrap());
        c
    };
    let case = |name, path: &str, form, status, error, code| Case {
        name,
        path: path.to_owned(),
        form,
        status,
        error,
        code,
        mentions: None,
    };
    let federated = |subject: &str, audience: &str, lifetime: u64| {
        env.exosim
            .mint_federated_token(subject, audience, std::time::Duration::from_secs(lifetime))
    };
    // A token from an issuer the app does not trust, signed by someone else.
    let foreign = signed(
        &rs256,
        &json!({"iss": "https://token.actions.githubusercontent.com", "sub": "repo:contoso/warden:ref:refs/heads/main",
                "aud": "api://AzureADTokenExchange", "exp": now() + 300, "jti": "f1"}),
    );

    let mut table = vec![
        // --- secrets and client lookup ---------------------------------------------------
        Case {
            mentions: Some(cid.clone()),
            ..case(
                "wrong secret",
                &v2,
                secret_form(&cid, "not-the-secret"),
                401,
                "invalid_client",
                7000215,
            )
        },
        case(
            "expired secret",
            &v2,
            secret_form(&cid, app.expired_client_secret.as_deref().unwrap()),
            401,
            "invalid_client",
            7000222,
        ),
        case(
            "no credential",
            &v2,
            with(good.clone(), "client_secret", None),
            401,
            "invalid_client",
            7000218,
        ),
        case(
            "unknown client in tenant",
            &v2,
            secret_form("0f0f0f0f-0000-4000-8000-000000000000", &secret),
            400,
            "unauthorized_client",
            700016,
        ),
        case(
            "secret and assertion together",
            &v2,
            with(
                good.clone(),
                "client_assertion",
                Some(&signer.assertion(&cid, &aud)),
            ),
            400,
            "invalid_request",
            9002313,
        ),
        case(
            "repeated parameter",
            &v2,
            {
                let mut f = good.clone();
                f.push(("scope".into(), EXO_SCOPE.into()));
                f
            },
            400,
            "invalid_request",
            9002313,
        ),
        // --- tenants ------------------------------------------------------------------------
        case(
            "unknown tenant GUID",
            "/0f0f0f0f-1111-4222-8333-444444444444/oauth2/v2.0/token",
            good.clone(),
            400,
            "invalid_tenant",
            90002,
        ),
        case(
            "unknown tenant domain",
            "/fabrikam.onmicrosoft.com/oauth2/v2.0/token",
            good.clone(),
            400,
            "invalid_tenant",
            90002,
        ),
        case(
            "malformed tenant",
            "/invalid_tenant/oauth2/v2.0/token",
            good.clone(),
            400,
            "invalid_request",
            900023,
        ),
        case(
            "common authority",
            "/common/oauth2/v2.0/token",
            good.clone(),
            400,
            "invalid_request",
            9001023,
        ),
        // --- grant, scope, resource ----------------------------------------------------------
        case(
            "unsupported grant type",
            &v2,
            with(good.clone(), "grant_type", Some("password")),
            400,
            "unsupported_grant_type",
            70003,
        ),
        case(
            "missing grant type",
            &v2,
            with(good.clone(), "grant_type", None),
            400,
            "invalid_request",
            900144,
        ),
        case(
            "missing client_id",
            &v2,
            with(good.clone(), "client_id", None),
            400,
            "invalid_request",
            900144,
        ),
        case(
            "missing scope",
            &v2,
            with(good.clone(), "scope", None),
            400,
            "invalid_request",
            900144,
        ),
        case(
            "scope without /.default",
            &v2,
            with(
                good.clone(),
                "scope",
                Some("https://graph.microsoft.com/User.Read"),
            ),
            400,
            "invalid_scope",
            1002012,
        ),
        case(
            "double-encoded scope",
            &v2,
            with(
                good.clone(),
                "scope",
                Some("https%3A%2F%2Foutlook.office365.com%2F.default"),
            ),
            400,
            "invalid_scope",
            1002012,
        ),
        case(
            "two resources",
            &v2,
            with(
                good.clone(),
                "scope",
                Some("https://outlook.office365.com/.default https://graph.microsoft.com/.default"),
            ),
            400,
            "invalid_scope",
            700022,
        ),
        case(
            "unknown resource",
            &v2,
            with(
                good.clone(),
                "scope",
                Some("https://contoso.example/.default"),
            ),
            400,
            "invalid_resource",
            500011,
        ),
        case(
            "resource on v2",
            &v2,
            with(
                good.clone(),
                "resource",
                Some("https://outlook.office365.com"),
            ),
            400,
            "invalid_request",
            901002,
        ),
        case(
            "v1 without resource",
            &v1,
            good.clone(),
            400,
            "invalid_request",
            900144,
        ),
        case(
            "v1 unknown resource",
            &v1,
            with(
                with(good.clone(), "scope", None),
                "resource",
                Some("https://contoso.example"),
            ),
            400,
            "invalid_resource",
            500011,
        ),
        // --- certificate assertions ------------------------------------------------------------
        Case {
            mentions: Some(format!(
                "Thumbprint of key used by client: '{}'",
                hex(&other.sha1())
            )),
            ..case(
                "certificate not registered on this app",
                &v2,
                assertion_form(
                    &cid,
                    &other.sign(
                        &json!({"alg": "RS256", "typ": "JWT", "x5t": b64url(&other.sha1())}),
                        &claims(&cid, &aud),
                    ),
                ),
                401,
                "invalid_client",
                700027,
            )
        },
        Case {
            mentions: Some("signature".to_owned()),
            ..case(
                "bad signature (signed by another key)",
                &v2,
                assertion_form(&cid, &other.sign(&rs256, &claims(&cid, &aud))),
                401,
                "invalid_client",
                700027,
            )
        },
        case(
            "expired assertion",
            &v2,
            assertion_form(
                &cid,
                &signed(
                    &rs256,
                    &claims_with(&|c| {
                        c.insert("exp".into(), json!(now() - 3600));
                        c.insert("nbf".into(), json!(now() - 4200));
                        c.insert("iat".into(), json!(now() - 4200));
                    }),
                ),
            ),
            401,
            "invalid_client",
            700024,
        ),
        case(
            "assertion not yet valid",
            &v2,
            assertion_form(
                &cid,
                &signed(
                    &rs256,
                    &claims_with(&|c| {
                        c.insert("nbf".into(), json!(now() + 3600));
                        c.insert("exp".into(), json!(now() + 4200));
                    }),
                ),
            ),
            401,
            "invalid_client",
            700024,
        ),
        case(
            "iss is another client",
            &v2,
            assertion_form(
                &cid,
                &signed(
                    &rs256,
                    &claims_with(&|c| {
                        c.insert("iss".into(), json!(exosim::DEMO_NO_ROLE_CLIENT_ID));
                    }),
                ),
            ),
            401,
            "invalid_client",
            700021,
        ),
        case(
            "sub is another client",
            &v2,
            assertion_form(
                &cid,
                &signed(
                    &rs256,
                    &claims_with(&|c| {
                        c.insert("sub".into(), json!(exosim::DEMO_NO_ROLE_CLIENT_ID));
                    }),
                ),
            ),
            401,
            "invalid_client",
            700021,
        ),
        Case {
            mentions: Some("'exp'".to_owned()),
            ..case(
                "missing exp",
                &v2,
                assertion_form(
                    &cid,
                    &signed(
                        &rs256,
                        &claims_with(&|c| {
                            c.remove("exp");
                        }),
                    ),
                ),
                400,
                "invalid_request",
                90014,
            )
        },
        Case {
            mentions: Some("'iss'".to_owned()),
            ..case(
                "missing iss",
                &v2,
                assertion_form(
                    &cid,
                    &signed(
                        &rs256,
                        &claims_with(&|c| {
                            c.remove("iss");
                        }),
                    ),
                ),
                400,
                "invalid_request",
                90014,
            )
        },
        Case {
            mentions: Some("'aud'".to_owned()),
            ..case(
                "missing aud",
                &v2,
                assertion_form(
                    &cid,
                    &signed(
                        &rs256,
                        &claims_with(&|c| {
                            c.remove("aud");
                        }),
                    ),
                ),
                400,
                "invalid_request",
                90014,
            )
        },
        case(
            "no x5t, x5t#S256 or kid",
            &v2,
            assertion_form(
                &cid,
                &signed(&json!({"alg": "RS256", "typ": "JWT"}), &claims(&cid, &aud)),
            ),
            401,
            "invalid_client",
            5002723,
        ),
        case(
            "not a JWT",
            &v2,
            assertion_form(&cid, "not-a-jwt"),
            400,
            "invalid_request",
            50027,
        ),
        case(
            "HS256 is refused",
            &v2,
            assertion_form(
                &cid,
                &signed(
                    &json!({"alg": "HS256", "typ": "JWT", "x5t": x5t}),
                    &claims(&cid, &aud),
                ),
            ),
            400,
            "invalid_request",
            50027,
        ),
        case(
            "alg none is refused",
            &v2,
            assertion_form(
                &cid,
                &format!(
                    "{}.{}.",
                    b64url(br#"{"alg":"none","typ":"JWT"}"#),
                    b64url(&serde_json::to_vec(&claims(&cid, &aud)).unwrap())
                ),
            ),
            400,
            "invalid_request",
            50027,
        ),
        case(
            "aud is the public cloud, not this endpoint",
            &v2,
            assertion_form(
                &cid,
                &signer.assertion(
                    &cid,
                    &format!("https://login.microsoftonline.com/{tid}/oauth2/v2.0/token"),
                ),
            ),
            400,
            "invalid_request",
            50027,
        ),
        case(
            "aud is the v1 endpoint on v2",
            &v2,
            assertion_form(
                &cid,
                &signer.assertion(&cid, &format!("{}/{tid}/oauth2/token", env.url())),
            ),
            400,
            "invalid_request",
            50027,
        ),
        case(
            "missing client_assertion_type",
            &v2,
            with(
                assertion_form(&cid, &signer.assertion(&cid, &aud)),
                "client_assertion_type",
                None,
            ),
            400,
            "invalid_request",
            900144,
        ),
        // --- federated assertions -------------------------------------------------------------
        case(
            "federated: untrusted issuer",
            &v2,
            assertion_form(&cid, &foreign),
            401,
            "invalid_client",
            700211,
        ),
        Case {
            mentions: Some("system:serviceaccount:warden:intruder".to_owned()),
            ..case(
                "federated: wrong subject",
                &v2,
                assertion_form(
                    &cid,
                    &federated(
                        "system:serviceaccount:warden:intruder",
                        "api://AzureADTokenExchange",
                        300,
                    ),
                ),
                401,
                "invalid_client",
                700213,
            )
        },
        case(
            "federated: wrong audience",
            &v2,
            assertion_form(
                &cid,
                &federated(exosim::DEMO_FEDERATED_SUBJECT, "api://SomethingElse", 300),
            ),
            401,
            "invalid_client",
            700212,
        ),
    ];
    // A federated token for another app's credential is simply untrusted by this one.
    table.push(case(
        "federated: app without that credential",
        &v2,
        assertion_form(
            exosim::DEMO_NO_ROLE_CLIENT_ID,
            &federated(
                exosim::DEMO_FEDERATED_SUBJECT,
                "api://AzureADTokenExchange",
                300,
            ),
        ),
        401,
        "invalid_client",
        700211,
    ));
    table
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[test]
fn every_documented_error_has_its_status_error_and_code() {
    let env = demo();
    let table = cases(env);
    run(async {
        let mut failures = Vec::new();
        for case in &table {
            let pairs: Vec<(&str, &str)> = case
                .form
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let resp = env.post(&case.path, &pairs).await;
            let got = (resp.status, resp.error().to_owned(), resp.code());
            let want = (case.status, case.error.to_owned(), Some(case.code));
            let description = resp.description();
            let shape_ok = description.starts_with(&format!("AADSTS{}: ", case.code))
                && description.contains("\r\nTrace ID: ")
                && description.contains("\r\nCorrelation ID: ")
                && description.contains("\r\nTimestamp: ")
                && resp.json["trace_id"].is_string()
                && resp.json["correlation_id"].is_string()
                && resp.json["timestamp"].is_string()
                && resp.json["error_uri"]
                    .as_str()
                    .is_some_and(|u| u.ends_with(&format!("code={}", case.code)));
            let mentions_ok = case
                .mentions
                .as_ref()
                .is_none_or(|m| description.contains(m.as_str()));
            if got != want || !shape_ok || !mentions_ok {
                failures.push(format!(
                    "{}: want {want:?}, got {got:?}: {}",
                    case.name, resp.text
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            table.len(),
            failures.join("\n")
        );

        let counters = env.exosim.counters();
        for case in &table {
            assert!(
                counters.aadsts(case.code as u32) >= 1,
                "AADSTS{} was not counted: {counters:?}",
                case.code
            );
        }
    });
}

#[test]
fn correlation_id_echoes_client_request_id() {
    let env = demo();
    run(async {
        let id = "3b8b8a2e-7c7f-4a51-9d3c-0e5b2f7a9c11";
        let url = format!("{}?client-request-id={id}", env.token_url());
        let resp = env
            .post(
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &env.app().client_id),
                    ("scope", EXO_SCOPE),
                ],
            )
            .await;
        resp.assert_aadsts(401, "invalid_client", 7000218);
        assert_eq!(resp.json["correlation_id"], id);
        assert!(
            resp.description()
                .contains(&format!("Correlation ID: {id}"))
        );
    });
}

#[test]
fn get_on_the_token_endpoint_is_refused() {
    let env = demo();
    run(async {
        let resp = env.get(&env.token_url(), &[]).await;
        resp.assert_aadsts(400, "invalid_request", 900561);
    });
}

#[test]
fn error_uri_page_explains_the_code() {
    let env = demo();
    run(async {
        let resp = env.get("/error?code=7000215", &[]).await;
        assert_eq!(resp.status, 200);
        assert!(resp.text.starts_with("AADSTS7000215: "), "{}", resp.text);
    });
}

/// A federated token that expired beyond the five minutes of skew is refused with 700024; one
/// that expired just now is still inside the skew.
#[test]
fn expired_federated_token_is_refused() {
    let env = demo();
    run(async {
        let path = format!("/{}/oauth2/v2.0/token", env.tenant_id());
        let client_id = &env.app().client_id;
        let just_expired = env.exosim.mint_federated_token(
            exosim::DEMO_FEDERATED_SUBJECT,
            "api://AzureADTokenExchange",
            std::time::Duration::ZERO,
        );
        let resp = env.assertion_token(&path, client_id, &just_expired).await;
        assert_eq!(resp.status, 200, "inside the skew: {}", resp.text);

        let minted = env
            .client
            .post(&env.ready.control.federated_token)
            .json(&json!({"subject": exosim::DEMO_FEDERATED_SUBJECT, "lifetime_secs": 60, "issued_secs_ago": 3600}))
            .send()
            .await
            .unwrap();
        assert_eq!(minted.status(), 200);
        let minted: Value = minted.json().await.unwrap();
        let old = minted["token"].as_str().unwrap();
        let resp = env.assertion_token(&path, client_id, old).await;
        resp.assert_aadsts(401, "invalid_client", 700024);
    });
}
