//! Shared test plumbing: one Tokio runtime for the whole binary, a demo emulator started once
//! and shared by the read-only tests, a real HTTPS client that trusts only the emulator's CA,
//! and a signer for hand-built client assertions. No mocks: every request crosses TLS.

use std::future::Future;
use std::path::Path;
use std::sync::{LazyLock, OnceLock};

use base64::Engine as _;
use exosim::{AppInfo, Exosim, ExosimOptions, ReadyInfo};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::sha2::Sha256;
use serde_json::{Value, json};
use sha1::Digest as _;

/// One multi-threaded runtime for all tests, so a shared emulator outlives any single test.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
});

/// Runs a test body on the shared runtime.
pub fn run<F: Future>(future: F) -> F::Output {
    RUNTIME.block_on(future)
}

/// A running emulator with a client that trusts its CA.
pub struct Env {
    pub exosim: Exosim,
    pub ready: ReadyInfo,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

static DEMO: OnceLock<Env> = OnceLock::new();

/// The shared demo emulator. Tests that use it must not change its faults or lifetimes.
pub fn demo() -> &'static Env {
    DEMO.get_or_init(|| run(Env::start(|dir| ExosimOptions::demo(dir))))
}

/// A client that trusts exactly the emulator's test CA (no system roots), with a timeout.
pub fn https_client(ca_file: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca_file).expect("read ca.pem");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("client")
}

impl Env {
    /// Starts a private emulator with options derived from a fresh state directory.
    pub async fn start(options: impl FnOnce(&Path) -> ExosimOptions) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let exosim = Exosim::start(options(dir.path()))
            .await
            .expect("exosim starts");
        let ready = exosim.ready_info();
        let client = https_client(exosim.ca_file());
        Env {
            exosim,
            ready,
            client,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        self.exosim.url()
    }

    pub fn tenant_id(&self) -> &str {
        &self.ready.tenant().tenant_id
    }

    /// The v2 token URL with the tenant GUID.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.url(), self.tenant_id())
    }

    pub fn app(&self) -> &AppInfo {
        self.ready.app()
    }

    pub fn app_by_id(&self, client_id: &str) -> &AppInfo {
        self.ready.find_app(client_id).expect("app in ready info")
    }

    /// POSTs a form to `path` (relative to the base URL, or absolute).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        let url = if path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.url())
        };
        Resp::from(self.client.post(url).form(form).send().await.expect("POST")).await
    }

    /// GETs `path` with extra headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let url = if path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.url())
        };
        let mut request = self.client.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Resp::from(request.send().await.expect("GET")).await
    }

    /// Client credentials with a secret against the v2 endpoint of the first tenant.
    pub async fn secret_token(&self, client_id: &str, secret: &str, scope: &str) -> Resp {
        self.post(
            &format!("/{}/oauth2/v2.0/token", self.tenant_id()),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ],
        )
        .await
    }

    /// Client credentials with an assertion against `path`.
    pub async fn assertion_token(&self, path: &str, client_id: &str, assertion: &str) -> Resp {
        self.post(
            path,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("scope", EXO_SCOPE),
            ],
        )
        .await
    }
}

pub const EXO_SCOPE: &str = "https://outlook.office365.com/.default";

/// A response with its JSON body (or `Null`).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
    /// The body, with any access token replaced by `[access token]`.
    pub text: String,
}

impl Resp {
    pub async fn from(response: reqwest::Response) -> Resp {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response.text().await.expect("body");
        let json: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
        // Failure messages quote `text`: keep issued tokens out of them.
        let text = match json.get("access_token") {
            Some(Value::String(token)) => raw.replace(token.as_str(), "[access token]"),
            _ => raw,
        };
        Resp {
            status,
            headers,
            json,
            text,
        }
    }

    /// `error_codes[0]`.
    pub fn code(&self) -> Option<u64> {
        self.json["error_codes"][0].as_u64()
    }

    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }

    pub fn description(&self) -> &str {
        self.json["error_description"].as_str().unwrap_or("")
    }

    /// Asserts a successful token response and returns the decoded access-token claims.
    #[track_caller]
    pub fn claims(&self) -> Value {
        assert_eq!(self.status, 200, "expected a token, got {}", self.text);
        decode_jwt(self.json["access_token"].as_str().expect("access_token")).1
    }

    /// Asserts an Entra error with this status, `error` and AADSTS code.
    #[track_caller]
    pub fn assert_aadsts(&self, status: u16, error: &str, code: u64) {
        assert_eq!(
            (self.status, self.error(), self.code()),
            (status, error, Some(code)),
            "body: {}",
            self.text
        );
        assert!(
            self.description().starts_with(&format!("AADSTS{code}: ")),
            "{}",
            self.text
        );
    }
}

/// Decodes a JWT's header and payload without verifying anything.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || {
        let part = parts.next().expect("JWT part");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    let header = next();
    let claims = next();
    (header, claims)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs client assertions with an app's key, as a client would.
pub struct Signer {
    pub key: rsa::PrivateKey,
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
}

impl Signer {
    /// The app's primary certificate and key, from the files the emulator wrote.
    pub fn for_app(app: &AppInfo) -> Signer {
        let key_pem = std::fs::read_to_string(app.key_pem.as_ref().expect("key_pem")).unwrap();
        let cert_pem =
            std::fs::read_to_string(app.certificate_pem.as_ref().expect("certificate_pem"))
                .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
        Signer {
            key: rsa::PrivateKey::from_pkcs8_pem(&key_pem).expect("PKCS#8 key"),
            cert_der: pem.contents,
            cert_pem,
        }
    }

    pub fn sha1(&self) -> Vec<u8> {
        sha1::Sha1::digest(&self.cert_der).to_vec()
    }

    pub fn sha256(&self) -> Vec<u8> {
        sha2::Sha256::digest(&self.cert_der).to_vec()
    }

    /// Signs `header` + `claims` with `alg` (RS256 or PS256; anything else gets an RS256
    /// signature under the given alg name, to test refusal).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(&serde_json::to_vec(header).unwrap()),
            b64url(&serde_json::to_vec(claims).unwrap())
        );
        let signature = match header["alg"].as_str() {
            Some("PS256") => self.key.pss_sign::<Sha256>(input.as_bytes()).unwrap(),
            _ => self.key.pkcs1v15_sign::<Sha256>(input.as_bytes()).unwrap(),
        };
        format!("{input}.{}", b64url(&signature))
    }

    /// An RS256 assertion with `x5t`, all seven claims, for `client_id` and `aud`.
    pub fn assertion(&self, client_id: &str, aud: &str) -> String {
        self.sign(
            &json!({"alg": "RS256", "typ": "JWT", "x5t": b64url(&self.sha1())}),
            &claims(client_id, aud),
        )
    }
}

/// The seven claims Microsoft documents, valid now for ten minutes, with a fresh `jti`.
pub fn claims(client_id: &str, aud: &str) -> Value {
    let now = now();
    json!({
        "aud": aud,
        "iss": client_id,
        "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    })
}

/// Verifies an issued access token's RS256 signature against the tenant's JWKS.
pub async fn verify_with_jwks(env: &Env, token: &str) {
    let (header, _) = decode_jwt(token);
    let jwks = env
        .get(&format!("/{}/discovery/v2.0/keys", env.tenant_id()), &[])
        .await;
    assert_eq!(jwks.status, 200);
    let kid = header["kid"].as_str().expect("kid");
    assert_eq!(header["x5t"].as_str(), Some(kid));
    let key = jwks.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("kid in JWKS");
    let b = |name: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key[name].as_str().unwrap())
            .unwrap()
    };
    let public = rsa::PublicKey::new(
        rsa::BoxedUint::from_be_slice_vartime(&b("n")),
        rsa::BoxedUint::from_be_slice_vartime(&b("e")),
    )
    .expect("RSA public key from JWK");
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    public
        .pkcs1v15_verify::<Sha256>(input.as_bytes(), &signature)
        .expect("token signature verifies against the JWKS key");
    // And a tampered token must not verify.
    let mut tampered = input.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(
        public
            .pkcs1v15_verify::<Sha256>(&tampered, &signature)
            .is_err()
    );
}
