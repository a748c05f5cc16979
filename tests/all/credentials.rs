//! Every credential kind drives to a real token from exosim over HTTPS, and the certificate
//! loaders accept the PFX encryptions Windows, macOS and OpenSSL produce.

use crate::support::*;
use std::time::Duration;
use warden_auth::assertion::AssertionAlgorithm;
use warden_auth::config::{CredentialChoice, Overrides};
use warden_auth::endpoint::EndpointVersion;

struct Case {
    name: &'static str,
    env: Vec<(String, String)>,
    overrides: Overrides,
    /// `appidacr` of the issued token: "1" secret, "2" certificate or federated; None for MI.
    appidacr: Option<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_kind_gets_a_token_over_https() {
    let emu = Emulator::start().await;
    let app = 0;
    let pem = emu.key_and_cert_pem(app);
    let store = emu.dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(emu.app_str(app, "certificate_pfx"), store.join("demo.pfx")).unwrap();
    let federated = emu.dir.path().join("federated.jwt");
    std::fs::write(
        &federated,
        emu.exosim.mint_federated_token(
            "system:serviceaccount:warden:demo",
            "api://AzureADTokenExchange",
            Duration::from_secs(300),
        ),
    )
    .unwrap();
    let secret = emu.app_str(app, "client_secret");
    let password = emu.app_str(app, "certificate_password");
    let pfx = emu.app_str(app, "certificate_pfx");
    let thumbprint = emu.app_str(app, "thumbprint_sha1");

    let cases = vec![
        Case {
            name: "secret from AZURE_CLIENT_SECRET",
            env: with(emu.env_for(app), &[("AZURE_CLIENT_SECRET", &secret)]),
            overrides: Overrides::default(),
            appidacr: Some("1"),
        },
        Case {
            name: "secret, v1 endpoint",
            env: with(emu.env_for(app), &[("AZURE_CLIENT_SECRET", &secret)]),
            overrides: Overrides {
                endpoint_version: Some(EndpointVersion::V1),
                ..Default::default()
            },
            appidacr: Some("1"),
        },
        Case {
            name: "PFX from AZURE_CLIENT_CERTIFICATE_PATH",
            env: with(
                emu.env_for(app),
                &[
                    ("AZURE_CLIENT_CERTIFICATE_PATH", &pfx),
                    ("AZURE_CLIENT_CERTIFICATE_PASSWORD", &password),
                ],
            ),
            overrides: Overrides::default(),
            appidacr: Some("2"),
        },
        Case {
            name: "PEM key + certificate, RS256",
            env: emu.env_for(app),
            overrides: Overrides {
                certificate: Some(pem.clone()),
                assertion: Some(AssertionAlgorithm::Rs256),
                ..Default::default()
            },
            appidacr: Some("2"),
        },
        Case {
            name: "certificate store by thumbprint",
            env: with(
                emu.env_for(app),
                &[("AZURE_CLIENT_CERTIFICATE_PASSWORD", &password)],
            ),
            overrides: Overrides {
                certificate_store: Some(store.clone()),
                thumbprint: Some(thumbprint.to_lowercase()),
                ..Default::default()
            },
            appidacr: Some("2"),
        },
        Case {
            name: "workload identity federation",
            env: with(
                emu.env_for(app),
                &[("AZURE_FEDERATED_TOKEN_FILE", federated.to_str().unwrap())],
            ),
            overrides: Overrides::default(),
            appidacr: Some("2"),
        },
        Case {
            name: "managed identity, IMDS",
            env: vec![
                (
                    "WARDEN_IMDS_ENDPOINT".into(),
                    emu.ready["imds_endpoint"].as_str().unwrap().into(),
                ),
                ("WARDEN_CA_FILE".into(), emu.ca()),
            ],
            overrides: Overrides {
                credential: Some(CredentialChoice::ManagedIdentity),
                ..Default::default()
            },
            appidacr: None,
        },
        Case {
            name: "managed identity, App Service",
            env: vec![
                (
                    "IDENTITY_ENDPOINT".into(),
                    emu.ready["identity_endpoint"].as_str().unwrap().into(),
                ),
                (
                    "IDENTITY_HEADER".into(),
                    emu.ready["identity_header"].as_str().unwrap().into(),
                ),
                ("WARDEN_CA_FILE".into(), emu.ca()),
            ],
            overrides: Overrides {
                credential: Some(CredentialChoice::ManagedIdentity),
                ..Default::default()
            },
            appidacr: None,
        },
    ];
    for case in cases {
        let settings =
            settings(&case.env, &case.overrides).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let provider = provider(&settings).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let before = emu.exosim.counters().tokens_issued;
        let token = provider
            .get_token(EXCHANGE_SCOPE)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(
            emu.exosim.counters().tokens_issued,
            before + 1,
            "{}: one token issued",
            case.name
        );
        let claims = claims(token.expose());
        assert_eq!(claims["tid"], emu.tenant_id(), "{}", case.name);
        assert_eq!(
            claims["aud"], "https://outlook.office365.com",
            "{}",
            case.name
        );
        if let Some(acr) = case.appidacr {
            assert_eq!(
                claims["appid"],
                emu.app_str(app, "client_id"),
                "{}",
                case.name
            );
            assert_eq!(claims["appidacr"], acr, "{}", case.name);
        }
        assert!(
            claims["roles"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "Exchange.ManageAsApp"),
            "{}",
            case.name
        );
    }

    // The assertions exosim received were in the forms we claim to send.
    let assertions: Vec<_> = emu
        .exosim
        .request_log()
        .into_iter()
        .filter_map(|r| r.client_assertion)
        .collect();
    assert!(assertions.iter().any(|a| a.alg.as_deref() == Some("PS256")
        && a.thumbprint_param.as_deref() == Some("x5t#S256")
        && a.thumbprint_encoding.as_deref() == Some("base64url")));
    assert!(
        assertions
            .iter()
            .any(|a| a.alg.as_deref() == Some("RS256")
                && a.thumbprint_param.as_deref() == Some("x5t"))
    );
    for own in assertions.iter().filter(|a| {
        a.header.get("typ").is_some_and(|t| t == "JWT")
            && !a.has_x5c
            && a.thumbprint_param.is_some()
    }) {
        for claim in ["aud", "exp", "iat", "iss", "jti", "nbf", "sub"] {
            assert!(
                own.claim_names.iter().any(|c| c == claim),
                "assertion lacks {claim}: {own:?}"
            );
        }
        assert!(own.lifetime_secs.is_some_and(|l| l <= 600), "{own:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pfx_files_in_aes_3des_and_rc2_all_load_and_authenticate() {
    let emu = Emulator::start().await;
    let key = emu.app_str(0, "key_pem");
    let cert = emu.app_str(0, "certificate_pem");
    let password = "p@ss wörd";
    let variants: &[(&str, &[&str])] = &[
        ("aes256", &[]),
        (
            "3des",
            &[
                "-keypbe",
                "PBE-SHA1-3DES",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
            ],
        ),
        ("rc2-40", &["-legacy"]),
    ];
    for (name, extra) in variants {
        let out = emu.dir.path().join(format!("{name}.pfx"));
        let mut args = vec![
            "pkcs12",
            "-export",
            "-inkey",
            &key,
            "-in",
            &cert,
            "-out",
            out.to_str().unwrap(),
            "-passout",
        ];
        let pass_arg = format!("pass:{password}");
        args.push(&pass_arg);
        args.extend_from_slice(extra);
        openssl(&args);
        let env = with(
            emu.env_for(0),
            &[
                ("AZURE_CLIENT_CERTIFICATE_PATH", out.to_str().unwrap()),
                ("AZURE_CLIENT_CERTIFICATE_PASSWORD", password),
            ],
        );
        let settings = settings(&env, &Overrides::default()).unwrap();
        let token = provider(&settings)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .get_token(EXCHANGE_SCOPE)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(claims(token.expose())["appidacr"], "2", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_acquired_token_is_used_until_it_expires() {
    let emu = Emulator::start().await;
    let secret = emu.app_str(0, "client_secret");
    let settings_secret = settings(
        &with(emu.env_for(0), &[("AZURE_CLIENT_SECRET", &secret)]),
        &Overrides::default(),
    )
    .unwrap();
    let token = provider(&settings_secret)
        .unwrap()
        .get_token(EXCHANGE_SCOPE)
        .await
        .unwrap();
    let file = emu.dir.path().join("token");
    std::fs::write(&file, token.expose()).unwrap();
    let requests = emu.token_requests();
    let settings = settings(
        &[],
        &Overrides {
            access_token_file: Some(file),
            ..Default::default()
        },
    )
    .unwrap();
    let reused = provider(&settings)
        .unwrap()
        .get_token(EXCHANGE_SCOPE)
        .await
        .unwrap();
    assert!(reused.same_as(&token));
    assert_eq!(
        emu.token_requests(),
        requests,
        "no request for a pre-acquired token"
    );
}
