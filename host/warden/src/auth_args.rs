//! The authentication flags every subcommand shares, and turning them into settings and a
//! token provider. Secrets have no flag: they come from the environment, a file, or a prompt.

use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use warden_auth::assertion::AssertionAlgorithm;
use warden_auth::config::{AuthSettings, ConfigFile, CredentialChoice, Environment, Overrides};
use warden_auth::credential::CredentialKind;
use warden_auth::endpoint::EndpointVersion;
use warden_auth::{AuthError, Cloud, Credential, ReqwestTransport, Secret, TokenProvider};
use warden_exchange::{CmdletRunner, ExchangeSettings};

/// Where the app's identity and credential come from.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Config file with tenant profiles [default: $WARDEN_CONFIG, else ~/.config/warden/config.toml if it exists].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The tenant profile from the config file to use.
    #[arg(long = "tenant", global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Tenant GUID or domain (overrides the profile and AZURE_TENANT_ID).
    #[arg(long, global = true, value_name = "ID")]
    pub tenant_id: Option<String>,
    /// Application (client) id (overrides the profile and AZURE_CLIENT_ID).
    #[arg(long, global = true, value_name = "GUID")]
    pub client_id: Option<String>,
    /// Cloud: public (also GCC), gcchigh, dod, china.
    #[arg(long, global = true, value_parser = parse_cloud)]
    pub cloud: Option<Cloud>,
    /// Authority host, https only (overrides AZURE_AUTHORITY_HOST).
    #[arg(long, global = true, value_name = "URL")]
    pub authority_host: Option<String>,
    /// Credential kind: secret, certificate, workload-identity, managed-identity, access-token.
    #[arg(long, global = true, value_parser = parse_credential)]
    pub credential: Option<CredentialChoice>,
    /// Certificate file: PFX/PKCS#12, or PEM with key and certificate. Password from AZURE_CLIENT_CERTIFICATE_PASSWORD.
    #[arg(long, global = true, value_name = "FILE")]
    pub certificate: Option<PathBuf>,
    /// Directory of certificates to pick from by --thumbprint.
    #[arg(long, global = true, value_name = "DIR")]
    pub certificate_store: Option<PathBuf>,
    /// SHA-1 thumbprint of the certificate in --certificate-store.
    #[arg(long, global = true, value_name = "HEX")]
    pub thumbprint: Option<String>,
    /// File holding the client secret (first line).
    #[arg(long, global = true, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Ask for the client secret on the terminal.
    #[arg(long, global = true)]
    pub prompt_secret: bool,
    /// Federated token file (overrides AZURE_FEDERATED_TOKEN_FILE).
    #[arg(long, global = true, value_name = "FILE")]
    pub federated_token_file: Option<PathBuf>,
    /// File holding a pre-acquired access token.
    #[arg(long, global = true, value_name = "FILE")]
    pub access_token_file: Option<PathBuf>,
    /// Client assertion form: ps256 (x5t#S256, default) or rs256 (x5t).
    #[arg(long, global = true, value_parser = parse_assertion)]
    pub assertion_alg: Option<AssertionAlgorithm>,
    /// Token endpoint: v2 (scope, default) or v1 (resource).
    #[arg(long, global = true, value_parser = parse_endpoint)]
    pub token_endpoint: Option<EndpointVersion>,
    /// How cmdlets reach Exchange: rest (InvokeCommand, default) or rps (WinRM Remote PowerShell,
    /// for on-premises Exchange and emulators). Overrides the profile and WARDEN_EXCHANGE_TRANSPORT.
    #[arg(long, global = true, value_parser = parse_transport)]
    pub transport: Option<Transport>,
}

pub use warden_exchange::Transport;

fn parse_transport(s: &str) -> Result<Transport, String> {
    s.parse()
}

fn parse_cloud(s: &str) -> Result<Cloud, String> {
    s.parse()
}
fn parse_credential(s: &str) -> Result<CredentialChoice, String> {
    s.parse()
}
fn parse_assertion(s: &str) -> Result<AssertionAlgorithm, String> {
    s.parse()
}
fn parse_endpoint(s: &str) -> Result<EndpointVersion, String> {
    s.parse()
}

/// Everything a subcommand needs to get tokens.
#[derive(Debug)]
pub struct Session {
    /// The resolved settings (with sources).
    pub settings: AuthSettings,
    /// The config file, when one was read.
    pub config_path: Option<PathBuf>,
    /// The HTTPS transport (system roots plus WARDEN_CA_FILE).
    pub transport: Arc<ReqwestTransport>,
}

impl AuthArgs {
    /// Finds the config file: --config, then $WARDEN_CONFIG, then the default path if present.
    pub fn config_path(&self, env: &Environment) -> Option<PathBuf> {
        if let Some(path) = &self.config {
            return Some(path.clone());
        }
        if let Some(path) = env.get("WARDEN_CONFIG") {
            return Some(PathBuf::from(path));
        }
        let base = env
            .get("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| env.get("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        let default = base.join("warden").join("config.toml");
        default.is_file().then_some(default)
    }

    /// Resolves settings from these flags, the config file and the environment.
    pub fn resolve(&self, env: &Environment) -> anyhow::Result<Session> {
        self.resolve_with(env, |ca_file| Ok(Arc::new(ReqwestTransport::new(ca_file)?)))
    }

    /// [`AuthArgs::resolve`] taking its HTTPS transport from `transport`, given the CA file
    /// the settings name: a fleet worker shares one per CA file across its tenants' sessions,
    /// instead of loading the system roots for each.
    pub fn resolve_with(
        &self,
        env: &Environment,
        transport: impl FnOnce(Option<&Path>) -> anyhow::Result<Arc<ReqwestTransport>>,
    ) -> anyhow::Result<Session> {
        let config_path = self.config_path(env);
        let file = config_path.as_deref().map(ConfigFile::load).transpose()?;
        let prompted_secret = if self.prompt_secret {
            let value = rpassword::prompt_password("client secret: ")
                .context("reading the client secret from the terminal")?;
            Some(Secret::new(value))
        } else {
            None
        };
        let overrides = Overrides {
            profile: self.profile.clone(),
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            cloud: self.cloud,
            authority_host: self.authority_host.clone(),
            credential: self.credential,
            certificate: self.certificate.clone(),
            certificate_store: self.certificate_store.clone(),
            thumbprint: self.thumbprint.clone(),
            secret_file: self.secret_file.clone(),
            prompted_secret,
            federated_token_file: self.federated_token_file.clone(),
            access_token_file: self.access_token_file.clone(),
            assertion: self.assertion_alg,
            endpoint_version: self.token_endpoint,
        };
        let settings = AuthSettings::resolve(file.as_ref(), &overrides, env)?;
        let transport = transport(settings.ca_file.as_deref())?;
        Ok(Session {
            settings,
            config_path,
            transport,
        })
    }
}

impl Session {
    /// Loads the credential and builds a provider around it.
    pub fn provider(&self) -> anyhow::Result<TokenProvider> {
        let credential = self.settings.load_credential()?;
        usable_now(&credential)?;
        Ok(TokenProvider::new(credential, self.transport.clone()))
    }
}

impl Session {
    /// The cmdlet runner for these settings through [`warden_exchange::connect()`]: the transport
    /// (`--transport`, the profile's `exchange.transport`, `WARDEN_EXCHANGE_TRANSPORT`, else
    /// rest), the URL (the profile's `exchange.url`, `WARDEN_EXCHANGE_URL`, or the cloud's
    /// host). Nothing is sent until the first call.
    pub fn exchange(
        &self,
        env: &Environment,
        transport: Option<Transport>,
        page_size: Option<u32>,
    ) -> anyhow::Result<Arc<dyn CmdletRunner>> {
        let mut settings = ExchangeSettings::resolve(&self.settings, transport, env)?;
        settings.page_size = page_size;
        Ok(warden_exchange::connect(&settings, self.provider()?)?)
    }
}

/// Refuses, before anything is sent, a credential that cannot work now: a certificate outside
/// its validity (Entra would answer AADSTS700027 after warden had already signed and sent an
/// assertion) or a pre-acquired token past its expiry.
fn usable_now(credential: &Credential) -> Result<(), AuthError> {
    match &credential.kind {
        CredentialKind::Certificate { key, .. } => {
            let now = time::OffsetDateTime::now_utc();
            if key.is_valid_at(now) {
                return Ok(());
            }
            let when = if now < key.not_before {
                format!("is not valid before {}", key.not_before.date())
            } else {
                format!("expired on {}", key.not_after.date())
            };
            Err(AuthError::CredentialFile {
                path: key.source.clone(),
                reason: format!("the certificate {} {when}", key.subject),
                fix: "create a new certificate, upload its public part to the app registration \
                      (Certificates & secrets), and point warden at it"
                    .into(),
            })
        }
        CredentialKind::AccessToken { .. } => match credential.static_token(SystemTime::now()) {
            Some(Err(error)) => Err(error),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}
