//! The tenants file: the commented example loads and serves, errors name file and reason.

use std::path::Path;

use exosim::{ExosimOptions, TenantsConfig};

use crate::support::{EXO_SCOPE, Env, run};

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tenants.example.toml")
}

#[test]
fn example_file_loads_and_serves() {
    let config = TenantsConfig::from_toml_file(example()).expect("tenants.example.toml is valid");
    assert_eq!(config.tenants.len(), 2);
    let app = &config.tenants[0].apps[0];
    assert_eq!(app.secrets.len(), 2);
    assert!(app.secrets[1].expires.is_some());
    assert_eq!(
        app.federated_credentials[0].audiences,
        ["api://AzureADTokenExchange"]
    );

    run(async {
        let env = Env::start(|dir| ExosimOptions {
            tenants: config,
            ..ExosimOptions::demo(dir)
        })
        .await;
        let warden = env.app().clone();
        assert_eq!(
            warden.client_secret.as_deref(),
            Some("Xy7Q~an.example-secret_value~0123456789ab")
        );
        assert!(warden.expired_client_secret.is_some());
        assert!(warden.certificate_pfx.as_ref().is_some_and(|p| p.is_file()));
        assert_eq!(
            warden.federated_credentials[0].issuer,
            format!("{}/_federation", env.url())
        );

        let resp = env
            .secret_token(
                &warden.client_id,
                warden.client_secret.as_deref().unwrap(),
                EXO_SCOPE,
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);

        // The second tenant answers by domain; the app there has a generated secret.
        let fabrikam = &env.ready.tenants[1];
        let app = &fabrikam.apps[0];
        let resp = env
            .post(
                "/fabrikam.onmicrosoft.com/oauth2/v2.0/token",
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &app.client_id),
                    ("client_secret", app.client_secret.as_deref().unwrap()),
                    ("scope", EXO_SCOPE),
                ],
            )
            .await;
        assert_eq!(resp.claims()["tid"], fabrikam.tenant_id.as_str());
        // An app of one tenant is unknown in another.
        let resp = env
            .secret_token(
                &app.client_id,
                app.client_secret.as_deref().unwrap(),
                EXO_SCOPE,
            )
            .await;
        resp.assert_aadsts(400, "unauthorized_client", 700016);
        env.exosim.shutdown().await;
    });
}

#[test]
fn config_errors_name_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");

    std::fs::write(&path, "[[tenant]\n").unwrap();
    let err = TenantsConfig::from_toml_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tenants.toml") && err.contains("line 1"),
        "{err}"
    );

    std::fs::write(
        &path,
        "[[tenant]]\ntenant_id = \"8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d\"\ndomain = \"a.example\"\n\
         [[tenant.app]]\nname = \"a\"\nclient_id = \"4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40\"\n\
         [[tenant.app]]\nname = \"b\"\nclient_id = \"4F9E2B7C-1D3A-4C5E-8F6B-9A0C1D2E3F40\"\n",
    )
    .unwrap();
    let err = TenantsConfig::from_toml_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tenants.toml") && err.contains("duplicate client_id"),
        "{err}"
    );

    std::fs::write(&path, "").unwrap();
    let err = TenantsConfig::from_toml_file(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no [[tenant]]"), "{err}");

    std::fs::write(
        &path,
        "[[tenant]]\ntenant_id = \"8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d\"\ndomain = \"a.example\"\n\
         [[tenant.app]]\nname = \"a\"\nclient_id = \"4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40\"\n\
         [[tenant.app.certificate]]\ncert_pem = \"missing.pem\"\n",
    )
    .unwrap();
    let config =
        TenantsConfig::from_toml_file(&path).expect("syntax is fine; the file is read at start");
    let err = run(async {
        exosim::Exosim::start(ExosimOptions {
            tenants: config,
            ..ExosimOptions::demo(dir.path().join("state"))
        })
        .await
        .unwrap_err()
        .to_string()
    });
    assert!(err.contains("missing.pem"), "{err}");

    let err = TenantsConfig::from_toml_file(dir.path().join("absent.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.toml"), "{err}");
}
