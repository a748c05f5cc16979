//! Certificate client assertions built by hand, signed in the test with the app's key: every
//! thumbprint encoding shipping SDKs use, RS256 and PS256, `kid`, `x5c` with line breaks, the
//! audience forms, the replay rule, HTTP Basic secrets, and what the request log records.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{EXO_SCOPE, Signer, b64url, claims, demo, now, run};

/// The four encodings of a thumbprint that clients send: base64url or standard alphabet,
/// with or without padding.
fn encodings(bytes: &[u8]) -> [(&'static str, String); 4] {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [
        ("base64url", URL_SAFE_NO_PAD.encode(bytes)),
        ("base64url padded", URL_SAFE.encode(bytes)),
        ("standard", STANDARD_NO_PAD.encode(bytes)),
        ("standard padded", STANDARD.encode(bytes)),
    ]
}

#[test]
fn rs256_and_ps256_accepted_in_every_thumbprint_encoding() {
    let env = demo();
    let signer = Signer::for_app(env.app());
    let cid = env.app().client_id.clone();
    let path = format!("/{}/oauth2/v2.0/token", env.tenant_id());
    run(async {
        for (alg, param, thumb) in [
            ("RS256", "x5t", signer.sha1()),
            ("PS256", "x5t#S256", signer.sha256()),
        ] {
            for (encoding, value) in encodings(&thumb) {
                let header = json!({"alg": alg, "typ": "JWT", param: value});
                let assertion = signer.sign(&header, &claims(&cid, &env.token_url()));
                let resp = env.assertion_token(&path, &cid, &assertion).await;
                assert_eq!(
                    resp.status, 200,
                    "{alg} with {param} {encoding}: {}",
                    resp.text
                );
                let claims = resp.claims();
                assert_eq!(claims["appidacr"], "2", "certificate ⇒ appidacr 2");
                assert_eq!(claims["appid"], cid.as_str());
            }
        }
    });
}

#[test]
fn kid_and_x5c_with_line_breaks_are_accepted() {
    let env = demo();
    let app = env.app();
    let signer = Signer::for_app(app);
    let cid = app.client_id.clone();
    let path = format!("/{}/oauth2/v2.0/token", env.tenant_id());
    run(async {
        // msal-python's form: PS256, padded x5t#S256, x5c = the PEM body with its line breaks.
        let pem_body: String = signer
            .cert_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(pem_body.contains('\n'));
        let header = json!({"alg": "PS256", "typ": "JWT",
            "x5t#S256": base64::engine::general_purpose::URL_SAFE.encode(signer.sha256()), "x5c": [pem_body]});
        let resp = env
            .assertion_token(
                &path,
                &cid,
                &signer.sign(&header, &claims(&cid, &env.token_url())),
            )
            .await;
        assert_eq!(resp.status, 200, "x5c with line breaks: {}", resp.text);

        // kid = the key credential id.
        let key_id = &app.certificates[0].key_id;
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": key_id});
        let resp = env
            .assertion_token(
                &path,
                &cid,
                &signer.sign(&header, &claims(&cid, &env.token_url())),
            )
            .await;
        assert_eq!(resp.status, 200, "kid: {}", resp.text);

        // An x5c whose leaf is another certificate than the thumbprint names: refused.
        let other = Signer::for_app(env.app_by_id(exosim::DEMO_NO_ROLE_CLIENT_ID));
        let header = json!({"alg": "RS256", "typ": "JWT", "x5t": b64url(&signer.sha1()),
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&other.cert_der)]});
        let resp = env
            .assertion_token(
                &path,
                &cid,
                &signer.sign(&header, &claims(&cid, &env.token_url())),
            )
            .await;
        resp.assert_aadsts(401, "invalid_client", 700027);
    });
}

#[test]
fn nbf_and_iat_are_optional_and_skew_is_five_minutes() {
    let env = demo();
    let signer = Signer::for_app(env.app());
    let cid = env.app().client_id.clone();
    let path = format!("/{}/oauth2/v2.0/token", env.tenant_id());
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t": b64url(&signer.sha1())});
    run(async {
        // Azure SDK for Rust sends no iat; msal-python no nbf; exp a minute ago is inside the skew.
        let lean = json!({"aud": env.token_url(), "iss": cid, "sub": cid, "jti": uuid::Uuid::new_v4().to_string(),
            "exp": now() - 60});
        let resp = env
            .assertion_token(&path, &cid, &signer.sign(&header, &lean))
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        // nbf four minutes ahead: inside the skew too.
        let mut early = claims(&cid, &env.token_url());
        early["nbf"] = json!(now() + 240);
        let resp = env
            .assertion_token(&path, &cid, &signer.sign(&header, &early))
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        // exp six minutes ago: outside.
        let mut late = claims(&cid, &env.token_url());
        late["exp"] = json!(now() - 360);
        let resp = env
            .assertion_token(&path, &cid, &signer.sign(&header, &late))
            .await;
        resp.assert_aadsts(401, "invalid_client", 700024);
    });
}

#[test]
fn identical_resend_is_accepted_but_a_different_assertion_reusing_a_jti_is_refused() {
    let env = demo();
    let signer = Signer::for_app(env.app());
    let cid = env.app().client_id.clone();
    let path = format!("/{}/oauth2/v2.0/token", env.tenant_id());
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t": b64url(&signer.sha1())});
    run(async {
        let first_claims = claims(&cid, &env.token_url());
        let first = signer.sign(&header, &first_claims);
        for attempt in 1..=2 {
            let resp = env.assertion_token(&path, &cid, &first).await;
            assert_eq!(
                resp.status, 200,
                "attempt {attempt} of the same assertion: {}",
                resp.text
            );
        }
        let mut second_claims = first_claims.clone();
        second_claims["exp"] = json!(first_claims["exp"].as_i64().unwrap() + 1);
        let second = signer.sign(&header, &second_claims);
        let resp = env.assertion_token(&path, &cid, &second).await;
        resp.assert_aadsts(400, "invalid_request", 50027);
        assert!(resp.description().contains("replay"), "{}", resp.text);
        assert!(
            resp.description()
                .contains(first_claims["jti"].as_str().unwrap())
        );
    });
}

#[test]
fn aud_is_the_url_as_addressed_with_tenant_guid_or_domain_and_v1() {
    let env = demo();
    let signer = Signer::for_app(env.app());
    let cid = env.app().client_id.clone();
    let tid = env.tenant_id().to_owned();
    let url = env.url();
    let port = env.exosim.addr().port();
    run(async {
        let by_domain = format!("{url}/contoso.onmicrosoft.com/oauth2/v2.0/token");
        let by_guid = format!("{url}/{tid}/oauth2/v2.0/token");
        let v1 = format!("{url}/{tid}/oauth2/token");
        let by_ip = format!("https://127.0.0.1:{port}/{tid}/oauth2/v2.0/token");
        for (post_to, aud) in [
            (&by_domain, &by_domain),
            (&by_domain, &by_guid),
            (&by_guid, &by_guid),
            (&v1, &v1),
            (&v1, &by_guid),
            (&by_ip, &by_ip),
            (&by_ip, &by_guid),
        ] {
            let mut form = vec![
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", cid.clone()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ),
                ("client_assertion", signer.assertion(&cid, aud)),
            ];
            if post_to == &v1 {
                form.push(("resource", "https://outlook.office365.com".to_owned()));
            } else {
                form.push(("scope", EXO_SCOPE.to_owned()));
            }
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let resp = env.post(post_to, &pairs).await;
            assert_eq!(
                resp.status, 200,
                "POST {post_to} with aud {aud}: {}",
                resp.text
            );
        }
    });
}

#[test]
fn client_secret_in_http_basic_is_accepted() {
    let env = demo();
    let app = env.app_by_id(exosim::DEMO_NO_WIDS_CLIENT_ID);
    run(async {
        let resp = env
            .client
            .post(env.token_url())
            .basic_auth(&app.client_id, app.client_secret.as_deref())
            .form(&[("grant_type", "client_credentials"), ("scope", EXO_SCOPE)])
            .send()
            .await
            .unwrap();
        let resp = crate::support::Resp::from(resp).await;
        let claims = resp.claims();
        assert_eq!(claims["appid"], app.client_id.as_str());
        assert_eq!(claims["appidacr"], "1");
        let logged = env
            .exosim
            .request_log()
            .into_iter()
            .rev()
            .find(|r| {
                r.header("authorization")
                    .is_some_and(|v| v.starts_with("Basic"))
            })
            .expect("a Basic request in the log");
        assert_eq!(logged.header("authorization"), Some("Basic [redacted]"));
    });
}

#[test]
fn request_log_records_assertion_shape_but_no_secrets() {
    let env = demo();
    let app = env.app();
    let signer = Signer::for_app(app);
    let cid = app.client_id.clone();
    run(async {
        let header = json!({"alg": "PS256", "typ": "JWT",
            "x5t#S256": base64::engine::general_purpose::URL_SAFE.encode(signer.sha256())});
        let marker = uuid::Uuid::new_v4().to_string();
        let mut c = claims(&cid, &env.token_url());
        c["jti"] = json!(marker);
        let assertion = signer.sign(&header, &c);
        let url = format!("{}?client-request-id={marker}", env.token_url());
        let resp = env
            .post(
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &cid),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                    ("scope", EXO_SCOPE),
                    ("x-client-SKU", "test"),
                ],
            )
            .await;
        let token = resp.json["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let secret_resp = env
            .secret_token(&cid, app.client_secret.as_deref().unwrap(), EXO_SCOPE)
            .await;
        assert_eq!(secret_resp.status, 200);

        let log = env.exosim.request_log();
        let entry = log
            .iter()
            .find(|r| r.query.as_deref().is_some_and(|q| q.contains(&marker)))
            .expect("logged");
        assert_eq!(entry.method, "POST");
        assert_eq!(entry.status, 200);
        assert!(entry.has_form_field("client_assertion") && entry.has_form_field("x-client-SKU"));
        let summary = entry.client_assertion.as_ref().expect("assertion summary");
        assert_eq!(summary.alg.as_deref(), Some("PS256"));
        assert_eq!(summary.thumbprint_param.as_deref(), Some("x5t#S256"));
        assert_eq!(
            summary.thumbprint_encoding.as_deref(),
            Some("base64url-padded")
        );
        assert_eq!(summary.lifetime_secs, Some(600));
        assert!(summary.claim_names.contains(&"jti".to_owned()));

        // Nothing that authenticates is kept: no secret, no signature, no issued token.
        let dump = serde_json::to_string(&log).unwrap();
        let signature = assertion.rsplit('.').next().unwrap();
        assert!(
            !dump.contains(app.client_secret.as_deref().unwrap()),
            "client secret in the request log"
        );
        assert!(
            !dump.contains(signature),
            "assertion signature in the request log"
        );
        assert!(!dump.contains(&token), "access token in the request log");
        let _: Value = serde_json::from_str(&dump).unwrap();
    });
}
