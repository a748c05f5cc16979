//! Where the settings come from: flags, a TOML profile, and the Azure SDK environment
//! variables, in that order of precedence, each value remembering its source so `warden
//! doctor` can say "client id 1234… from AZURE_CLIENT_ID".
//!
//! A config file names tenants (profiles: tenant, cloud, client, credential), picked with
//! `--tenant NAME` or `default_tenant`. Secrets are taken from the environment, a file, or a
//! prompt, never from a command-line value. This module refuses: an `http://` authority,
//! `common`/`organizations` as a tenant, a client id that is not a GUID, unknown keys in the
//! config file, and an unknown profile name (it lists the ones that exist).

use crate::assertion::AssertionAlgorithm;
use crate::certificate::CertificateKey;
use crate::cloud::Cloud;
use crate::credential::{Credential, CredentialKind, IMDS_ENDPOINT, ManagedIdentitySource};
use crate::endpoint::EndpointVersion;
use crate::error::AuthError;
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The environment variables this module reads.
pub const ENV_NAMES: &[&str] = &[
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "WARDEN_IMDS_ENDPOINT",
    "WARDEN_CA_FILE",
    "SSL_CERT_FILE",
    "WARDEN_CERT_STORE",
];

/// A snapshot of the process environment (injectable for tests).
#[derive(Clone, Default)]
pub struct Environment(HashMap<String, String>);

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: values include secrets.
        f.debug_tuple("Environment")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Environment {
    /// The variables in [`ENV_NAMES`] from this process, plus any `*_env` names a profile uses
    /// (looked up lazily through [`Environment::get`]).
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    /// An environment made of these pairs only.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// A variable's value; empty values count as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

/// How the credential is chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialChoice {
    /// A client secret.
    Secret,
    /// A certificate (PFX, PEM, or a store by thumbprint).
    Certificate,
    /// A federated token file.
    WorkloadIdentity,
    /// Azure managed identity.
    ManagedIdentity,
    /// A pre-acquired access token.
    AccessToken,
}

impl FromStr for CredentialChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "secret" | "client_secret" => Ok(Self::Secret),
            "certificate" | "cert" => Ok(Self::Certificate),
            "workload_identity" | "federated" => Ok(Self::WorkloadIdentity),
            "managed_identity" | "msi" => Ok(Self::ManagedIdentity),
            "access_token" | "token" => Ok(Self::AccessToken),
            _ => Err(format!(
                "unknown credential '{s}'; use secret, certificate, workload-identity, managed-identity or access-token"
            )),
        }
    }
}

/// Values given as flags; they win over the profile and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--tenant NAME`: the profile to use.
    pub profile: Option<String>,
    /// `--tenant-id`.
    pub tenant_id: Option<String>,
    /// `--client-id`.
    pub client_id: Option<String>,
    /// `--cloud`.
    pub cloud: Option<Cloud>,
    /// `--authority-host`.
    pub authority_host: Option<String>,
    /// `--credential`.
    pub credential: Option<CredentialChoice>,
    /// `--certificate PATH` (PFX or PEM).
    pub certificate: Option<PathBuf>,
    /// `--certificate-store DIR` with `--thumbprint`.
    pub certificate_store: Option<PathBuf>,
    /// `--thumbprint`.
    pub thumbprint: Option<String>,
    /// `--secret-file`.
    pub secret_file: Option<PathBuf>,
    /// A secret typed at a prompt.
    pub prompted_secret: Option<Secret>,
    /// `--federated-token-file`.
    pub federated_token_file: Option<PathBuf>,
    /// `--access-token-file`.
    pub access_token_file: Option<PathBuf>,
    /// `--assertion-alg`.
    pub assertion: Option<AssertionAlgorithm>,
    /// `--token-endpoint`.
    pub endpoint_version: Option<EndpointVersion>,
}

/// The config file: `default_tenant` and `[tenants.NAME]` profiles.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The profile used without `--tenant`.
    pub default_tenant: Option<String>,
    /// Profiles by name.
    #[serde(default)]
    pub tenants: BTreeMap<String, Profile>,
    #[serde(skip)]
    path: PathBuf,
}

/// One tenant profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Tenant GUID or domain.
    pub tenant_id: Option<String>,
    /// Cloud name.
    pub cloud: Option<String>,
    /// Application (client) id.
    pub client_id: Option<String>,
    /// Authority host override (an emulator, a private endpoint).
    pub authority_host: Option<String>,
    /// `v2` (default) or `v1`.
    pub token_endpoint: Option<String>,
    /// The credential.
    pub credential: Option<ProfileCredential>,
    /// How Exchange is reached (`[tenants.NAME.exchange]`): kept as a table here; the Exchange
    /// crate reads and checks it (`warden_exchange::ExchangeProfile`), naming this table when a
    /// value is wrong.
    pub exchange: Option<toml::Table>,
    /// Labels a fleet run selects tenants by (`--tenants tag:eu`); no effect on one tenant's
    /// settings. A multi-tenant app consented in every customer tenant is one `client_id` and
    /// one credential repeated in each profile, with that profile's `tenant_id`: each tenant's
    /// token comes from its own authority.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A profile's credential; secrets are named by where they live, never written inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProfileCredential {
    /// A client secret from an environment variable or a file.
    Secret {
        /// Name of the variable holding the secret.
        secret_env: Option<String>,
        /// File holding the secret (first line).
        secret_file: Option<PathBuf>,
    },
    /// A certificate.
    Certificate {
        /// PFX or PEM (key + certificate) file.
        path: Option<PathBuf>,
        /// A separate PEM key file, when `path` holds only the certificate.
        key: Option<PathBuf>,
        /// A directory of certificates, with `thumbprint`.
        store: Option<PathBuf>,
        /// SHA-1 thumbprint to pick from `store`.
        thumbprint: Option<String>,
        /// Variable holding the PFX/key password.
        password_env: Option<String>,
        /// File holding the PFX/key password.
        password_file: Option<PathBuf>,
        /// `ps256` (default) or `rs256`.
        algorithm: Option<String>,
    },
    /// Workload-identity federation.
    WorkloadIdentity {
        /// The federated token file.
        token_file: Option<PathBuf>,
    },
    /// Managed identity.
    ManagedIdentity {
        /// A user-assigned identity's client id.
        client_id: Option<String>,
        /// The token endpoint (default: IMDS, or App Service's `IDENTITY_ENDPOINT`).
        endpoint: Option<String>,
    },
    /// A pre-acquired token.
    AccessToken {
        /// File holding the token.
        token_file: Option<PathBuf>,
        /// Variable holding the token.
        token_env: Option<String>,
    },
}

impl ConfigFile {
    /// Reads and parses a config file; errors name the file, the line and the reason.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::CredentialFile {
            path: path.to_owned(),
            reason: format!("the config file cannot be read: {e}"),
            fix: "check --config / WARDEN_CONFIG".into(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AuthError> {
        let mut file: ConfigFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            AuthError::CredentialFile {
                path: path.to_owned(),
                reason: format!(
                    "{}{}",
                    line.map(|l| format!("line {l}: ")).unwrap_or_default(),
                    e.message()
                ),
                fix: "see config.example.toml for the format".into(),
            }
        })?;
        file.path = path.to_owned();
        if let Some(default) = &file.default_tenant
            && !file.tenants.contains_key(default)
        {
            return Err(AuthError::CredentialFile {
                path: path.to_owned(),
                reason: format!("default_tenant = '{default}' but there is no [tenants.{default}]"),
                fix: format!("add the profile or pick one of: {}", file.profile_names()),
            });
        }
        // A tag is what a selector names (`tag:eu`), so it cannot hold the selector's own
        // punctuation (`,` `!` `:`) or spaces.
        for (name, profile) in &file.tenants {
            if let Some(tag) = profile.tags.iter().find(|tag| !is_tag(tag)) {
                return Err(AuthError::CredentialFile {
                    path: path.to_owned(),
                    reason: format!("[tenants.{name}] tags: `{tag}` is not a tag"),
                    fix: "use letters, digits, `-`, `_` and `.` only, say tags = [\"eu\", \"finance\"]"
                        .into(),
                });
            }
        }
        Ok(file)
    }

    fn profile_names(&self) -> String {
        if self.tenants.is_empty() {
            "(none)".into()
        } else {
            self.tenants.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether `text` may be a profile's tag: letters, digits, `-`, `_`, `.`, not empty.
pub fn is_tag(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// `flag --client-id`, `env AZURE_CLIENT_ID`, `profile contoso (FILE)`, `default`.
    pub source: String,
}

fn sourced<T>(value: T, source: impl Into<String>) -> Sourced<T> {
    Sourced {
        value,
        source: source.into(),
    }
}

/// Where the credential's material will come from, resolved but not yet read.
#[derive(Debug, Clone)]
pub enum CredentialPlan {
    /// Secret from a variable, a file or a prompt.
    Secret(SecretSource),
    /// A certificate file (PFX or PEM, optional separate key).
    CertificateFile {
        /// The file.
        path: PathBuf,
        /// A separate PEM key.
        key: Option<PathBuf>,
        /// Where the password is.
        password: Option<SecretSource>,
        /// Signature form.
        algorithm: AssertionAlgorithm,
    },
    /// A certificate in a directory, by thumbprint.
    CertificateStore {
        /// The directory.
        store: PathBuf,
        /// SHA-1 thumbprint.
        thumbprint: String,
        /// Where the password is.
        password: Option<SecretSource>,
        /// Signature form.
        algorithm: AssertionAlgorithm,
    },
    /// A federated token file.
    WorkloadIdentity(PathBuf),
    /// Managed identity.
    ManagedIdentity {
        /// IMDS or App Service.
        source: ManagedIdentitySource,
        /// User-assigned client id.
        client_id: Option<String>,
    },
    /// A pre-acquired token.
    AccessToken(SecretSource),
}

/// Where a secret value lives.
#[derive(Clone)]
pub enum SecretSource {
    /// An environment variable (its value captured now).
    Env(String, Secret),
    /// A file.
    File(PathBuf),
    /// Typed at a prompt.
    Prompt(Secret),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SecretSource {
    /// Where it comes from, in words (never the value).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(name, _) => format!("env {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Prompt(_) => "prompt".into(),
        }
    }

    fn read(&self) -> Result<Secret, AuthError> {
        match self {
            SecretSource::Env(_, secret) | SecretSource::Prompt(secret) => Ok(secret.clone()),
            SecretSource::File(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    AuthError::CredentialFile {
                        path: path.clone(),
                        reason: format!("cannot be read: {e}"),
                        fix: "check the path and its permissions".into(),
                    }
                })?);
                let value = text.lines().next().unwrap_or("").trim_end_matches('\r');
                Ok(Secret::new(value.to_owned()))
            }
        }
    }
}

/// Fully resolved settings: identity, cloud, and the credential plan.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The profile used, if any.
    pub profile: Option<String>,
    /// Tenant GUID or domain (absent only for managed identity).
    pub tenant: Option<Sourced<String>>,
    /// Client id (absent only for system-assigned managed identity).
    pub client_id: Option<Sourced<String>>,
    /// Cloud.
    pub cloud: Sourced<Cloud>,
    /// Authority host, `https://…`.
    pub authority_host: Sourced<String>,
    /// Token endpoint version.
    pub endpoint_version: EndpointVersion,
    /// The credential plan and where it came from.
    pub credential: Sourced<CredentialPlan>,
    /// Extra CA to trust (`WARDEN_CA_FILE`, else `SSL_CERT_FILE`).
    pub ca_file: Option<PathBuf>,
    /// The profile's `exchange` table, with where it came from.
    pub exchange: Option<Sourced<toml::Table>>,
}

fn config_error(what: impl Into<String>, fix: impl Into<String>) -> AuthError {
    AuthError::Config {
        what: what.into(),
        fix: fix.into(),
    }
}

/// Checks a tenant identifier: a GUID or a DNS domain, never `common`/`organizations`.
pub fn validate_tenant(tenant: &str, source: &str) -> Result<(), AuthError> {
    let t = tenant.trim();
    if ["common", "organizations", "consumers"].contains(&t.to_ascii_lowercase().as_str()) {
        return Err(config_error(
            format!(
                "tenant '{t}' (from {source}) is a multi-tenant alias; app-only tokens need a specific tenant"
            ),
            "use the tenant's GUID or its domain, e.g. contoso.onmicrosoft.com",
        ));
    }
    if uuid::Uuid::parse_str(t).is_ok() && t.len() == 36 {
        return Ok(());
    }
    let labels: Vec<&str> = t.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        });
    if domain_ok {
        return Ok(());
    }
    Err(config_error(
        format!("tenant '{t}' (from {source}) is neither a tenant GUID nor a domain"),
        "use the tenant's GUID (Entra admin center > Overview > Tenant ID) or a verified domain such as contoso.onmicrosoft.com",
    ))
}

fn validate_client_id(client_id: &str, source: &str) -> Result<(), AuthError> {
    if uuid::Uuid::parse_str(client_id.trim()).is_ok() && client_id.trim().len() == 36 {
        return Ok(());
    }
    Err(config_error(
        format!("client id '{client_id}' (from {source}) is not a GUID"),
        "use the app registration's Application (client) ID, e.g. 00000000-0000-0000-0000-000000000000",
    ))
}

/// Normalises an authority host: a bare host gets `https://`; `http://` is refused.
pub fn normalize_authority(raw: &str, source: &str) -> Result<String, AuthError> {
    let raw = raw.trim().trim_end_matches('/');
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("https://{raw}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|e| {
        config_error(
            format!("authority host '{raw}' (from {source}) is not a URL: {e}"),
            "use e.g. https://login.microsoftonline.com",
        )
    })?;
    if url.scheme() != "https" {
        return Err(config_error(
            format!(
                "authority host '{raw}' (from {source}) is not https: a token request carries the client secret or assertion and must be encrypted"
            ),
            "use an https:// authority host (for a local emulator, trust its CA with WARDEN_CA_FILE)",
        ));
    }
    if url.host_str().is_none() || url.query().is_some() || url.path() != "/" {
        return Err(config_error(
            format!("authority host '{raw}' (from {source}) must be a scheme and host only"),
            "use e.g. https://login.microsoftonline.com",
        ));
    }
    Ok(with_scheme.trim_end_matches('/').to_owned())
}

impl AuthSettings {
    /// Resolves settings from flags, an optional config file, and the environment.
    pub fn resolve(
        file: Option<&ConfigFile>,
        overrides: &Overrides,
        env: &Environment,
    ) -> Result<Self, AuthError> {
        let (profile_name, profile) = select_profile(file, overrides)?;
        let profile_src = |key: &str| match (&profile_name, file) {
            (Some(name), Some(f)) => format!("profile {name} ({}) {key}", f.path().display()),
            _ => "profile".into(),
        };

        let cloud = match (&overrides.cloud, profile.and_then(|p| p.cloud.as_deref())) {
            (Some(c), _) => sourced(*c, "flag --cloud"),
            (None, Some(text)) => sourced(
                Cloud::from_str(text).map_err(|e| {
                    config_error(
                        format!("{e} (from {})", profile_src("cloud")),
                        "fix the profile's cloud",
                    )
                })?,
                profile_src("cloud"),
            ),
            (None, None) => sourced(Cloud::Public, "default"),
        };
        let authority_host = match (
            &overrides.authority_host,
            profile.and_then(|p| p.authority_host.as_deref()),
            env.get("AZURE_AUTHORITY_HOST"),
        ) {
            (Some(a), _, _) => sourced(
                normalize_authority(a, "flag --authority-host")?,
                "flag --authority-host",
            ),
            (None, Some(a), _) => sourced(
                normalize_authority(a, &profile_src("authority_host"))?,
                profile_src("authority_host"),
            ),
            (None, None, Some(a)) => sourced(
                normalize_authority(a, "env AZURE_AUTHORITY_HOST")?,
                "env AZURE_AUTHORITY_HOST",
            ),
            (None, None, None) => sourced(
                cloud.value.authority_host().to_owned(),
                format!("cloud {}", cloud.value),
            ),
        };
        let endpoint_version = match (
            &overrides.endpoint_version,
            profile.and_then(|p| p.token_endpoint.as_deref()),
        ) {
            (Some(v), _) => *v,
            (None, Some(text)) => EndpointVersion::from_str(text).map_err(|e| {
                config_error(
                    format!("{e} (from {})", profile_src("token_endpoint")),
                    "use v2 or v1",
                )
            })?,
            (None, None) => EndpointVersion::V2,
        };

        let tenant = first_of([
            overrides
                .tenant_id
                .clone()
                .map(|v| sourced(v, "flag --tenant-id")),
            profile
                .and_then(|p| p.tenant_id.clone())
                .map(|v| sourced(v, profile_src("tenant_id"))),
            env.get("AZURE_TENANT_ID")
                .map(|v| sourced(v.to_owned(), "env AZURE_TENANT_ID")),
        ]);
        if let Some(t) = &tenant {
            validate_tenant(&t.value, &t.source)?;
        }
        let client_id = first_of([
            overrides
                .client_id
                .clone()
                .map(|v| sourced(v, "flag --client-id")),
            profile
                .and_then(|p| p.client_id.clone())
                .map(|v| sourced(v, profile_src("client_id"))),
            env.get("AZURE_CLIENT_ID")
                .map(|v| sourced(v.to_owned(), "env AZURE_CLIENT_ID")),
        ]);
        if let Some(c) = &client_id {
            validate_client_id(&c.value, &c.source)?;
        }

        let credential = plan_credential(overrides, profile, &profile_src("credential"), env)?;
        let needs_identity = !matches!(
            credential.value,
            CredentialPlan::ManagedIdentity { .. } | CredentialPlan::AccessToken(_)
        );
        if needs_identity {
            if tenant.is_none() {
                return Err(config_error(
                    "no tenant is configured",
                    "set AZURE_TENANT_ID, pass --tenant-id, or pick a profile with --tenant NAME",
                ));
            }
            if client_id.is_none() {
                return Err(config_error(
                    "no client (application) id is configured",
                    "set AZURE_CLIENT_ID, pass --client-id, or set client_id in the profile",
                ));
            }
        }
        let ca_file = env
            .get("WARDEN_CA_FILE")
            .or_else(|| env.get("SSL_CERT_FILE"))
            .map(PathBuf::from);
        let exchange = profile
            .and_then(|p| p.exchange.clone())
            .map(|e| sourced(e, profile_src("exchange")));
        Ok(Self {
            profile: profile_name,
            exchange,
            tenant,
            client_id,
            cloud,
            authority_host,
            endpoint_version,
            credential,
            ca_file,
        })
    }

    /// The scope for the Exchange resource of the configured cloud.
    pub fn exchange_scope(&self) -> String {
        self.cloud.value.exchange_scope()
    }

    /// Reads the credential's material (files, secrets) and builds the credential.
    pub fn load_credential(&self) -> Result<Credential, AuthError> {
        let kind = match &self.credential.value {
            CredentialPlan::Secret(source) => {
                let secret = source.read()?;
                if secret.is_empty() {
                    return Err(config_error(
                        format!("the client secret from {} is empty", source.describe()),
                        "put the secret's Value there",
                    ));
                }
                CredentialKind::ClientSecret(secret)
            }
            CredentialPlan::CertificateFile {
                path,
                key,
                password,
                algorithm,
            } => {
                let password = password.as_ref().map(SecretSource::read).transpose()?;
                let cert = match key {
                    Some(key) => CertificateKey::from_pem_files(path, key, password.as_ref())?,
                    None => CertificateKey::from_file(path, password.as_ref())?,
                };
                CredentialKind::Certificate {
                    key: Arc::new(cert),
                    algorithm: *algorithm,
                }
            }
            CredentialPlan::CertificateStore {
                store,
                thumbprint,
                password,
                algorithm,
            } => {
                let password = password.as_ref().map(SecretSource::read).transpose()?;
                let cert =
                    CertificateKey::from_thumbprint_dir(store, thumbprint, password.as_ref())?;
                CredentialKind::Certificate {
                    key: Arc::new(cert),
                    algorithm: *algorithm,
                }
            }
            CredentialPlan::WorkloadIdentity(path) => CredentialKind::WorkloadIdentity {
                token_file: path.clone(),
            },
            CredentialPlan::ManagedIdentity { source, client_id } => {
                CredentialKind::ManagedIdentity {
                    source: source.clone(),
                    client_id: client_id.clone(),
                }
            }
            CredentialPlan::AccessToken(source) => {
                let token = source.read()?;
                let expires_on =
                    crate::credential::static_token_expiry(&token, std::time::SystemTime::now());
                CredentialKind::AccessToken { token, expires_on }
            }
        };
        Ok(Credential {
            authority_host: self.authority_host.value.clone(),
            tenant: self
                .tenant
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or_default(),
            client_id: self
                .client_id
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_default(),
            endpoint_version: self.endpoint_version,
            kind,
        })
    }
}

fn first_of<T, const N: usize>(candidates: [Option<T>; N]) -> Option<T> {
    candidates.into_iter().flatten().next()
}

fn select_profile<'f>(
    file: Option<&'f ConfigFile>,
    overrides: &Overrides,
) -> Result<(Option<String>, Option<&'f Profile>), AuthError> {
    let wanted = overrides
        .profile
        .clone()
        .or_else(|| file.and_then(|f| f.default_tenant.clone()));
    let Some(name) = wanted else {
        return Ok((None, None));
    };
    let Some(file) = file else {
        return Err(config_error(
            format!("--tenant {name} names a profile, but no config file was found"),
            "create ~/.config/warden/config.toml (see config.example.toml) or pass --config FILE; for a tenant GUID or domain use --tenant-id",
        ));
    };
    match file.tenants.get(&name) {
        Some(profile) => Ok((Some(name), Some(profile))),
        None => {
            let close = file
                .tenants
                .keys()
                .find(|k| k.eq_ignore_ascii_case(&name) || edit_distance(k, &name) <= 2);
            Err(config_error(
                format!(
                    "there is no tenant profile '{name}' in {}",
                    file.path().display()
                ),
                match close {
                    Some(k) => format!("did you mean '{k}'? profiles: {}", file.profile_names()),
                    None => format!("profiles: {}", file.profile_names()),
                },
            ))
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            prev = current;
        }
    }
    row[b.len()]
}

fn env_secret(env: &Environment, name: &str) -> Option<SecretSource> {
    env.get(name)
        .map(|v| SecretSource::Env(name.to_owned(), Secret::new(v.to_owned())))
}

fn named_env_secret(env: &Environment, name: &str, what: &str) -> Result<SecretSource, AuthError> {
    env_secret(env, name).ok_or_else(|| {
        config_error(
            format!("the profile reads the {what} from ${name}, which is not set"),
            format!("export {name}"),
        )
    })
}

fn plan_credential(
    overrides: &Overrides,
    profile: Option<&Profile>,
    profile_src: &str,
    env: &Environment,
) -> Result<Sourced<CredentialPlan>, AuthError> {
    let cert_password_env = || env_secret(env, "AZURE_CLIENT_CERTIFICATE_PASSWORD");
    let algorithm = |profile_alg: Option<&str>| -> Result<AssertionAlgorithm, AuthError> {
        match (overrides.assertion, profile_alg) {
            (Some(a), _) => Ok(a),
            (None, Some(text)) => AssertionAlgorithm::from_str(text)
                .map_err(|e| config_error(e, "use ps256 or rs256")),
            (None, None) => Ok(AssertionAlgorithm::Ps256),
        }
    };
    let managed_identity =
        |client_id: Option<String>, endpoint: Option<String>| -> CredentialPlan {
            let source = match (
                endpoint,
                env.get("IDENTITY_ENDPOINT"),
                env.get("IDENTITY_HEADER"),
            ) {
                (Some(endpoint), _, _) => ManagedIdentitySource::Imds { endpoint },
                (None, Some(endpoint), Some(header)) => ManagedIdentitySource::AppService {
                    endpoint: endpoint.to_owned(),
                    header: Secret::new(header.to_owned()),
                },
                _ => ManagedIdentitySource::Imds {
                    endpoint: env
                        .get("WARDEN_IMDS_ENDPOINT")
                        .unwrap_or(IMDS_ENDPOINT)
                        .to_owned(),
                },
            };
            CredentialPlan::ManagedIdentity { source, client_id }
        };

    // 1. Flags.
    let flag_kind = overrides.credential.or_else(|| {
        if overrides.certificate.is_some() || overrides.certificate_store.is_some() {
            Some(CredentialChoice::Certificate)
        } else if overrides.secret_file.is_some() || overrides.prompted_secret.is_some() {
            Some(CredentialChoice::Secret)
        } else if overrides.federated_token_file.is_some() {
            Some(CredentialChoice::WorkloadIdentity)
        } else if overrides.access_token_file.is_some() {
            Some(CredentialChoice::AccessToken)
        } else {
            None
        }
    });
    if let Some(kind) = flag_kind {
        let source = "flags";
        let plan = match kind {
            CredentialChoice::Secret => CredentialPlan::Secret(
                overrides
                    .prompted_secret
                    .clone()
                    .map(SecretSource::Prompt)
                    .or_else(|| overrides.secret_file.clone().map(SecretSource::File))
                    .or_else(|| env_secret(env, "AZURE_CLIENT_SECRET"))
                    .ok_or_else(|| {
                        config_error(
                            "--credential secret, but no secret is available",
                            "set AZURE_CLIENT_SECRET, pass --secret-file FILE, or --prompt-secret",
                        )
                    })?,
            ),
            CredentialChoice::Certificate => match (
                &overrides.certificate_store,
                &overrides.thumbprint,
                &overrides.certificate,
            ) {
                (Some(store), Some(thumbprint), _) => CredentialPlan::CertificateStore {
                    store: store.clone(),
                    thumbprint: thumbprint.clone(),
                    password: cert_password_env(),
                    algorithm: algorithm(None)?,
                },
                (Some(_), None, _) => {
                    return Err(config_error(
                        "--certificate-store needs --thumbprint",
                        "pass the SHA-1 thumbprint of the certificate to use",
                    ));
                }
                (None, _, Some(path)) => CredentialPlan::CertificateFile {
                    path: path.clone(),
                    key: None,
                    password: cert_password_env(),
                    algorithm: algorithm(None)?,
                },
                (None, _, None) => match env.get("AZURE_CLIENT_CERTIFICATE_PATH") {
                    Some(path) => CredentialPlan::CertificateFile {
                        path: path.into(),
                        key: None,
                        password: cert_password_env(),
                        algorithm: algorithm(None)?,
                    },
                    None => {
                        return Err(config_error(
                            "--credential certificate, but no certificate is named",
                            "pass --certificate FILE, or --certificate-store DIR --thumbprint HEX, or set AZURE_CLIENT_CERTIFICATE_PATH",
                        ));
                    }
                },
            },
            CredentialChoice::WorkloadIdentity => CredentialPlan::WorkloadIdentity(
                overrides
                    .federated_token_file
                    .clone()
                    .or_else(|| env.get("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from))
                    .ok_or_else(|| {
                        config_error(
                            "--credential workload-identity, but no token file is named",
                            "set AZURE_FEDERATED_TOKEN_FILE or pass --federated-token-file",
                        )
                    })?,
            ),
            CredentialChoice::ManagedIdentity => managed_identity(None, None),
            CredentialChoice::AccessToken => CredentialPlan::AccessToken(SecretSource::File(
                overrides.access_token_file.clone().ok_or_else(|| {
                    config_error(
                        "--credential access-token needs --access-token-file FILE",
                        "write the token to a file readable only by you",
                    )
                })?,
            )),
        };
        return Ok(sourced(plan, source));
    }

    // 2. The profile.
    if let Some(credential) = profile.and_then(|p| p.credential.as_ref()) {
        let plan = match credential {
            ProfileCredential::Secret { secret_env, secret_file } => CredentialPlan::Secret(match (secret_env, secret_file) {
                (Some(name), _) => named_env_secret(env, name, "client secret")?,
                (None, Some(file)) => SecretSource::File(file.clone()),
                (None, None) => env_secret(env, "AZURE_CLIENT_SECRET").ok_or_else(|| config_error(format!("{profile_src}: kind = \"secret\" names no secret_env or secret_file, and AZURE_CLIENT_SECRET is not set"), "add secret_env = \"VAR\" or secret_file = \"PATH\""))?,
            }),
            ProfileCredential::Certificate { path, key, store, thumbprint, password_env, password_file, algorithm: alg } => {
                let password = match (password_env, password_file) {
                    (Some(name), _) => Some(named_env_secret(env, name, "certificate password")?),
                    (None, Some(file)) => Some(SecretSource::File(file.clone())),
                    (None, None) => cert_password_env(),
                };
                match (path, store, thumbprint) {
                    (Some(path), _, _) => CredentialPlan::CertificateFile { path: path.clone(), key: key.clone(), password, algorithm: algorithm(alg.as_deref())? },
                    (None, Some(store), Some(thumbprint)) => CredentialPlan::CertificateStore { store: store.clone(), thumbprint: thumbprint.clone(), password, algorithm: algorithm(alg.as_deref())? },
                    (None, None, Some(thumbprint)) => match env.get("WARDEN_CERT_STORE") {
                        Some(store) => CredentialPlan::CertificateStore { store: store.into(), thumbprint: thumbprint.clone(), password, algorithm: algorithm(alg.as_deref())? },
                        None => return Err(config_error(format!("{profile_src}: a thumbprint needs a store directory"), "add store = \"DIR\" or set WARDEN_CERT_STORE")),
                    },
                    _ => return Err(config_error(format!("{profile_src}: kind = \"certificate\" needs path, or store + thumbprint"), "add path = \"cert.pfx\"")),
                }
            }
            ProfileCredential::WorkloadIdentity { token_file } => CredentialPlan::WorkloadIdentity(
                token_file.clone().or_else(|| env.get("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from))
                    .ok_or_else(|| config_error(format!("{profile_src}: kind = \"workload_identity\" without token_file, and AZURE_FEDERATED_TOKEN_FILE is not set"), "add token_file = \"PATH\""))?,
            ),
            ProfileCredential::ManagedIdentity { client_id, endpoint } => managed_identity(client_id.clone(), endpoint.clone()),
            ProfileCredential::AccessToken { token_file, token_env } => CredentialPlan::AccessToken(match (token_env, token_file) {
                (Some(name), _) => named_env_secret(env, name, "access token")?,
                (None, Some(file)) => SecretSource::File(file.clone()),
                (None, None) => return Err(config_error(format!("{profile_src}: kind = \"access_token\" needs token_file or token_env"), "add token_file = \"PATH\"")),
            }),
        };
        return Ok(sourced(plan, profile_src.to_owned()));
    }

    // 3. The Azure SDK variables, in EnvironmentCredential's order: secret, certificate,
    // then a federated token file.
    if let Some(secret) = env_secret(env, "AZURE_CLIENT_SECRET") {
        return Ok(sourced(
            CredentialPlan::Secret(secret),
            "env AZURE_CLIENT_SECRET",
        ));
    }
    if let Some(path) = env.get("AZURE_CLIENT_CERTIFICATE_PATH") {
        return Ok(sourced(
            CredentialPlan::CertificateFile {
                path: path.into(),
                key: None,
                password: cert_password_env(),
                algorithm: algorithm(None)?,
            },
            "env AZURE_CLIENT_CERTIFICATE_PATH",
        ));
    }
    if let Some(path) = env.get("AZURE_FEDERATED_TOKEN_FILE") {
        return Ok(sourced(
            CredentialPlan::WorkloadIdentity(path.into()),
            "env AZURE_FEDERATED_TOKEN_FILE",
        ));
    }
    Err(config_error(
        "no credential is configured",
        "set AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH (with AZURE_TENANT_ID and AZURE_CLIENT_ID), or AZURE_FEDERATED_TOKEN_FILE, or pass --credential managed-identity, or use a profile from the config file",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "11111111-1111-1111-1111-111111111111";
    const CLIENT: &str = "22222222-2222-2222-2222-222222222222";

    fn resolve(
        env: &[(&str, &str)],
        file: Option<&str>,
        overrides: Overrides,
    ) -> Result<AuthSettings, AuthError> {
        let file = file.map(|t| ConfigFile::parse(t, Path::new("warden.toml")).unwrap());
        AuthSettings::resolve(
            file.as_ref(),
            &overrides,
            &Environment::from_pairs(env.iter().copied()),
        )
    }

    #[test]
    fn env_secret_wins_over_env_certificate() {
        let s = resolve(
            &[
                ("AZURE_TENANT_ID", TENANT),
                ("AZURE_CLIENT_ID", CLIENT),
                ("AZURE_CLIENT_SECRET", "x"),
                ("AZURE_CLIENT_CERTIFICATE_PATH", "/c.pfx"),
            ],
            None,
            Overrides::default(),
        )
        .unwrap();
        assert!(matches!(s.credential.value, CredentialPlan::Secret(_)));
        assert_eq!(s.credential.source, "env AZURE_CLIENT_SECRET");
        assert_eq!(s.authority_host.value, "https://login.microsoftonline.com");
    }

    #[test]
    fn flags_override_profile_which_overrides_env() {
        let file = format!(
            "default_tenant = \"contoso\"\n[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"{CLIENT}\"\ncloud = \"gcchigh\"\n[tenants.contoso.credential]\nkind = \"secret\"\nsecret_env = \"CONTOSO_SECRET\"\n"
        );
        let env = [
            ("AZURE_TENANT_ID", TENANT),
            ("CONTOSO_SECRET", "s"),
            ("AZURE_CLIENT_ID", "33333333-3333-3333-3333-333333333333"),
        ];
        let s = resolve(&env, Some(&file), Overrides::default()).unwrap();
        assert_eq!(s.tenant.as_ref().unwrap().value, "contoso.onmicrosoft.com");
        assert_eq!(s.client_id.as_ref().unwrap().value, CLIENT);
        assert_eq!(s.cloud.value, Cloud::GccHigh);
        assert_eq!(s.authority_host.value, "https://login.microsoftonline.us");
        assert_eq!(s.exchange_scope(), "https://outlook.office365.us/.default");
        let flagged = resolve(
            &env,
            Some(&file),
            Overrides {
                tenant_id: Some(TENANT.into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(flagged.tenant.as_ref().unwrap().source, "flag --tenant-id");
    }

    #[test]
    fn bad_input_is_refused_with_a_fix() {
        let base = [
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT),
            ("AZURE_CLIENT_SECRET", "x"),
        ];
        let with = |k: &'static str, v: &'static str| {
            let mut env: Vec<(&str, &str)> =
                base.iter().copied().filter(|(n, _)| *n != k).collect();
            if !v.is_empty() {
                env.push((k, v));
            }
            env
        };
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                with("AZURE_AUTHORITY_HOST", "http://127.0.0.1:8443"),
                "not https",
            ),
            (with("AZURE_TENANT_ID", "common"), "multi-tenant alias"),
            (
                with("AZURE_TENANT_ID", "contoso"),
                "neither a tenant GUID nor a domain",
            ),
            (with("AZURE_CLIENT_ID", "my-app"), "not a GUID"),
            (with("AZURE_TENANT_ID", ""), "no tenant"),
            (with("AZURE_CLIENT_ID", ""), "no client"),
            (with("AZURE_CLIENT_SECRET", ""), "no credential"),
        ];
        for (env, needle) in cases {
            let error = resolve(&env, None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{needle}: {error}");
            assert!(error.contains("fix:"), "{error}");
            assert!(!error.contains("AZURE_CLIENT_SECRET=x"), "{error}");
        }
    }

    #[test]
    fn profile_tags_are_read_and_a_bad_tag_is_named() {
        let path = Path::new("config.toml");
        let file = ConfigFile::parse(
            "[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\ntags = [\"eu\", \"finance\"]\n\
             [tenants.fabrikam]\ntenant_id = \"fabrikam.onmicrosoft.com\"\n",
            path,
        )
        .unwrap();
        assert_eq!(file.tenants["contoso"].tags, ["eu", "finance"]);
        assert!(file.tenants["fabrikam"].tags.is_empty());
        for bad in ["", "e u", "a,b", "!eu", "tag:eu"] {
            let text = format!(
                "[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\ntags = [\"{bad}\"]\n"
            );
            let error = ConfigFile::parse(&text, path).unwrap_err().to_string();
            assert!(
                error.contains("[tenants.contoso] tags") && error.contains("fix:"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn profile_typos_are_named_with_a_suggestion() {
        let file = "[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\n[tenants.fabrikam]\ntenant_id = \"fabrikam.onmicrosoft.com\"\n";
        let error = resolve(
            &[],
            Some(file),
            Overrides {
                profile: Some("contso".into()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("no tenant profile 'contso'")
                && error.contains("did you mean 'contoso'"),
            "{error}"
        );
    }

    #[test]
    fn config_file_errors_name_the_line() {
        let error = ConfigFile::parse(
            "[tenants.a]\ntenant_id = \"x.com\"\nsecret = \"inline\"\n",
            Path::new("w.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("w.toml") && error.contains("line 3"),
            "{error}"
        );
        assert!(error.contains("unknown field"), "{error}");
    }

    #[test]
    fn secrets_never_print_through_settings_debug() {
        let s = resolve(
            &[
                ("AZURE_TENANT_ID", TENANT),
                ("AZURE_CLIENT_ID", CLIENT),
                ("AZURE_CLIENT_SECRET", "canary-7f3a"),
            ],
            None,
            Overrides::default(),
        )
        .unwrap();
        let printed = format!("{s:?} {:?}", s.load_credential().unwrap());
        assert!(!printed.contains("canary-7f3a"), "{printed}");
    }

    #[test]
    fn the_example_config_parses_and_every_profile_resolves() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config.example.toml"
        ));
        let file = ConfigFile::load(path).unwrap();
        assert_eq!(file.tenants.len(), 6);
        let env = Environment::from_pairs([
            ("CONTOSO_PFX_PASSWORD", "p"),
            ("NORTHWIND_CLIENT_SECRET", "s"),
            ("HYBRID_CLIENT_SECRET", "s"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
        ]);
        for name in file.tenants.keys() {
            let overrides = Overrides {
                profile: Some(name.clone()),
                ..Default::default()
            };
            let settings = AuthSettings::resolve(Some(&file), &overrides, &env)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                settings.credential.source.contains(name),
                "{name}: {}",
                settings.credential.source
            );
            // hybrid (rps) and northwind (rest) have an `[exchange]` table, its source naming it.
            let exchange = settings.exchange.as_ref();
            let transport = match name.as_str() {
                "hybrid" => Some("rps"),
                "northwind" => Some("rest"),
                _ => None,
            };
            assert_eq!(exchange.is_some(), transport.is_some(), "{name}");
            if let Some(exchange) = exchange {
                assert_eq!(exchange.value["transport"].as_str(), transport);
                assert!(
                    exchange.source.contains(name.as_str()),
                    "{}",
                    exchange.source
                );
            }
        }
    }
}
