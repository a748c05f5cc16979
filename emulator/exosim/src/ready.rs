//! The ready-file contract: one JSON object that tells a test or a demo everything it needs to
//! talk to a running emulator — URL, CA file, tenants with app credentials, managed-identity
//! endpoints — written atomically once the server listens.
//!
//! This is the one place where the emulator hands out secrets (client secrets, PFX passwords,
//! the App Service identity header): that is its purpose. `Debug` still redacts them, and the
//! file is written owner-read/write only. Keys are stable; new keys may be added.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::directory::{App, AppCertificate, Directory, ManagedIdentity, Tenant};
use crate::error::{Error, Result};

/// Everything about a running emulator, as `exosim serve --ready-file` writes it.
#[derive(Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReadyInfo {
    /// HTTPS base URL, `https://localhost:PORT` (no trailing slash).
    pub url: String,
    /// Base URL of the Exchange Online REST API (same server: `{url}`); InvokeCommand is
    /// `{exchange_url}/adminapi/beta/{tenant}/InvokeCommand`.
    #[serde(default)]
    pub exchange_url: String,
    /// PEM file of the generated test CA that issued the server certificate.
    pub ca_file: PathBuf,
    /// Where the CA and the app certificate files live.
    pub state_dir: PathBuf,
    /// Process id of the emulator.
    pub pid: u32,
    /// The tenants, the first being the ready demo tenant when no config was given.
    pub tenants: Vec<TenantInfo>,
    /// IMDS-style managed-identity endpoint (send `Metadata: true`).
    pub imds_endpoint: String,
    /// App Service-style managed-identity endpoint (`IDENTITY_ENDPOINT`).
    pub identity_endpoint: String,
    /// The App Service `IDENTITY_HEADER` value (send as `X-IDENTITY-HEADER`).
    pub identity_header: String,
    /// Managed identities (of the first tenant); the first is used when none is selected.
    pub managed_identities: Vec<ManagedIdentityInfo>,
    /// Issuer of the emulator's own external IdP, for workload identity federation.
    pub federation_issuer: String,
    /// Control-plane endpoints for tests.
    pub control: ControlInfo,
    /// The public key SecureString parameters are encrypted with over REST, in the module's
    /// `<RSAKeyValue>` form (give it to warden as `secure_string_public_key` or
    /// `WARDEN_EXCHANGE_SECURE_STRING_KEY`).
    #[serde(default)]
    pub secure_string_public_key: String,
    /// OIDC authority (issuer) of the first tenant, `{url}/{tenant_id}/v2.0`.
    #[serde(default)]
    pub authority: String,
    /// Apps registered in one tenant and consented to in others (`exosim serve --tenants N`'s
    /// `warden-fleet`), with their credentials and where they are consented.
    #[serde(default)]
    pub multi_tenant_apps: Vec<MultiTenantAppInfo>,
    /// The first tenant's people and sign-in apps, at the top level (`users`, `service_app`,
    /// `public_client`) so that a demo reads them without picking a tenant.
    #[serde(flatten)]
    pub sign_in: SignInInfo,
}

/// Who can sign in to a tenant and through which registrations; the same keys at the top level
/// of the ready file (the first tenant's) and in each tenant.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SignInInfo {
    /// People who can sign in, with their passwords.
    #[serde(default)]
    pub users: Vec<UserInfo>,
    /// The service app (people sign in to it; its API has app roles), if the tenant has one.
    #[serde(default)]
    pub service_app: Option<ServiceAppInfo>,
    /// The public client (the password grant is allowed to it), if the tenant has one.
    #[serde(default)]
    pub public_client: Option<PublicClientInfo>,
}

/// A user who can sign in.
#[derive(Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UserInfo {
    /// User principal name (`preferred_username`).
    pub upn: String,
    /// The password (the login form's `passwd`, the password grant's `password`).
    pub password: String,
    /// Object id (`oid`).
    pub object_id: String,
    /// Display name (`name`).
    pub display_name: String,
    /// The groups the user is a member of (the `groups` claim carries their object ids).
    pub groups: Vec<GroupInfo>,
    /// App roles the user holds on the service app (the `roles` claim of its tokens).
    pub roles: Vec<String>,
}

impl fmt::Debug for UserInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserInfo")
            .field("upn", &self.upn)
            .field("object_id", &self.object_id)
            .field("groups", &self.groups)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// A security group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupInfo {
    /// Display name.
    pub name: String,
    /// Object id (what the `groups` claim carries).
    pub object_id: String,
}

/// The service app's registration.
#[derive(Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceAppInfo {
    /// Display name.
    pub name: String,
    /// Application (client) id: the `aud` of id tokens and of its API's access tokens.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: String,
    /// Application ID URI: ask for `{app_id_uri}/.default` to get a token for its API.
    pub app_id_uri: String,
    /// Registered redirect URIs (a localhost one matches any port).
    pub redirect_uris: Vec<String>,
    /// Delegated permissions its API exposes (`scp`).
    pub scopes: Vec<String>,
    /// App role values its API defines.
    pub app_roles: Vec<String>,
    /// The version of access tokens for its API: 1 (`iss` `https://sts.windows.net/{tid}/`,
    /// `aud` the app ID URI, `appid`, `upn`) or 2 (`iss` `{authority}`, `aud` the client id,
    /// `azp`, `preferred_username`).
    #[serde(default = "entra_default_token_version")]
    pub access_token_version: u8,
}

/// Entra's default for a manifest without `requestedAccessTokenVersion`.
fn entra_default_token_version() -> u8 {
    1
}

impl fmt::Debug for ServiceAppInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAppInfo")
            .field("client_id", &self.client_id)
            .field("app_id_uri", &self.app_id_uri)
            .field("redirect_uris", &self.redirect_uris)
            .field("access_token_version", &self.access_token_version)
            .finish_non_exhaustive()
    }
}

/// The public client's registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PublicClientInfo {
    /// Display name.
    pub name: String,
    /// Application (client) id.
    pub client_id: String,
}

impl fmt::Debug for ReadyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyInfo")
            .field("url", &self.url)
            .field("ca_file", &self.ca_file)
            .field("tenants", &self.tenants)
            .field("managed_identities", &self.managed_identities)
            .finish_non_exhaustive()
    }
}

/// A multi-tenant app: its registration (credentials as for any app) and its tenants.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MultiTenantAppInfo {
    /// The registration, as in its home tenant's `apps`: client id, secret, certificate files.
    #[serde(flatten)]
    pub app: AppInfo,
    /// The tenant it is registered in.
    pub home_tenant_id: String,
    /// Tenants where it has a service principal (its home and each tenant that consented), in
    /// the order of `tenants`: token requests to their authorities succeed.
    pub consented_tenant_ids: Vec<String>,
    /// The other tenants: a token request there gets AADSTS700016.
    pub unconsented_tenant_ids: Vec<String>,
}

/// A service principal of a multi-tenant app in a tenant (admin consent created it).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConsentInfo {
    /// The app's client id.
    pub client_id: String,
    /// The service principal's object id here (`oid` of tokens from this tenant).
    pub service_principal_id: String,
    /// App roles on Exchange Online.
    pub roles: Vec<String>,
    /// Directory roles (`wids`).
    pub wids: Vec<String>,
}

/// One tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TenantInfo {
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// Primary domain.
    pub domain: String,
    /// Display name.
    pub display_name: String,
    /// Authority to give MSAL: `{url}/{tenant_id}`.
    pub authority: String,
    /// v2.0 token endpoint.
    pub token_endpoint: String,
    /// v1 token endpoint.
    pub token_endpoint_v1: String,
    /// App registrations.
    pub apps: Vec<AppInfo>,
    /// OIDC authority (issuer): `{url}/{tenant_id}/v2.0`.
    #[serde(default)]
    pub oidc_authority: String,
    /// Security groups.
    #[serde(default)]
    pub groups: Vec<GroupInfo>,
    /// Service principals of multi-tenant apps registered in other tenants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consents: Vec<ConsentInfo>,
    /// Mailboxes generated for the tenant when it has its own count (generated fleet tenants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailboxes: Option<usize>,
    /// People who can sign in and the registrations they sign in through.
    #[serde(flatten)]
    pub sign_in: SignInInfo,
}

/// One app registration with usable credentials.
#[derive(Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppInfo {
    /// Display name.
    pub name: String,
    /// Application (client) id.
    pub client_id: String,
    /// Service principal object id (`oid`/`sub` of its tokens).
    pub service_principal_id: String,
    /// The first secret that has not expired.
    pub client_secret: Option<String>,
    /// An expired secret, if one is registered (yields AADSTS7000222).
    pub expired_client_secret: Option<String>,
    /// PFX of the primary certificate (the first whose private key the emulator made; the
    /// `certificate_*`, `key_pem` and `thumbprint_*` fields all describe that one).
    pub certificate_pfx: Option<PathBuf>,
    /// Its password.
    pub certificate_password: Option<String>,
    /// PEM certificate of the first certificate.
    pub certificate_pem: Option<PathBuf>,
    /// PEM PKCS#8 private key of the first generated certificate.
    pub key_pem: Option<PathBuf>,
    /// Upper-case hex SHA-1 thumbprint of the first certificate (what the portal shows).
    pub thumbprint_sha1: Option<String>,
    /// Upper-case hex SHA-256 thumbprint of the first certificate.
    pub thumbprint_sha256: Option<String>,
    /// All registered certificates.
    pub certificates: Vec<CertificateInfo>,
    /// App roles on Exchange Online.
    pub roles: Vec<String>,
    /// Directory role template ids.
    pub wids: Vec<String>,
    /// Federated identity credentials.
    pub federated_credentials: Vec<FederatedCredentialInfo>,
}

impl fmt::Debug for AppInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppInfo")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("thumbprint_sha1", &self.thumbprint_sha1)
            .field("roles", &self.roles)
            .field("wids", &self.wids)
            .finish_non_exhaustive()
    }
}

/// One registered certificate.
#[derive(Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CertificateInfo {
    /// The key credential id (accepted as `kid`).
    pub key_id: String,
    /// PFX file, when the emulator made the key.
    pub pfx: Option<PathBuf>,
    /// PFX password.
    pub password: Option<String>,
    /// PEM certificate.
    pub cert_pem: PathBuf,
    /// PEM PKCS#8 private key, when the emulator made the key.
    pub key_pem: Option<PathBuf>,
    /// Upper-case hex SHA-1 thumbprint.
    pub thumbprint_sha1: String,
    /// Upper-case hex SHA-256 thumbprint.
    pub thumbprint_sha256: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

impl fmt::Debug for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateInfo")
            .field("thumbprint_sha1", &self.thumbprint_sha1)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// One federated identity credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FederatedCredentialInfo {
    /// Label.
    pub name: Option<String>,
    /// Issuer (with `{url}` replaced).
    pub issuer: String,
    /// Subject.
    pub subject: String,
    /// Audiences.
    pub audiences: Vec<String>,
}

/// One managed identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ManagedIdentityInfo {
    /// The tenant it lives in.
    pub tenant_id: String,
    /// Label.
    pub name: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Object (principal) id.
    pub object_id: String,
    /// ARM resource id.
    pub resource_id: Option<String>,
    /// App roles on Exchange Online.
    pub roles: Vec<String>,
    /// Directory role template ids.
    pub wids: Vec<String>,
}

/// Control-plane endpoints (`/_exosim/...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ControlInfo {
    /// `GET`: [`crate::Counters`].
    pub counters: String,
    /// `GET`/`POST` ([`crate::FaultsUpdate`])/`DELETE`.
    pub faults: String,
    /// `GET`/`DELETE`: the request log.
    pub requests: String,
    /// `POST {"subject","audience","lifetime_secs","issued_secs_ago"}` → `{"token"}`: a token
    /// from the emulator's own IdP (`issued_secs_ago` backdates it, to make expired ones).
    pub federated_token: String,
    /// `GET`/`POST` ([`crate::ExchangeFaultsUpdate`])/`DELETE`: Exchange fault injection.
    #[serde(default)]
    pub exchange_faults: String,
    /// `GET`/`DELETE`: the Exchange request log ([`crate::ExchangeRequestRecord`]s).
    #[serde(default)]
    pub exchange_requests: String,
}

impl ReadyInfo {
    pub(crate) fn build(
        url: &str,
        ca_file: &Path,
        state_dir: &Path,
        directory: &Directory,
        identity_header: &str,
        federation_issuer: &str,
    ) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let home = directory.home();
        let tenants: Vec<TenantInfo> = directory
            .tenants
            .iter()
            .map(|t| tenant_info(url, t, now))
            .collect();
        let first = &tenants[0];
        let multi_tenant_apps = directory
            .tenants
            .iter()
            .flat_map(|home| home.apps.iter().map(move |app| (home, app)))
            .filter(|(_, app)| {
                app.multi_tenant
                    || directory
                        .tenants
                        .iter()
                        .any(|t| t.consents.iter().any(|c| c.client_id == app.client_id))
            })
            .map(|(home, app)| {
                let (consented, unconsented): (Vec<&Tenant>, Vec<&Tenant>) =
                    directory.tenants.iter().partition(|t| {
                        t.id == home.id || t.consents.iter().any(|c| c.client_id == app.client_id)
                    });
                let ids = |ts: Vec<&Tenant>| ts.iter().map(|t| t.id.clone()).collect();
                MultiTenantAppInfo {
                    app: app_info(app, now),
                    home_tenant_id: home.id.clone(),
                    consented_tenant_ids: ids(consented),
                    unconsented_tenant_ids: ids(unconsented),
                }
            })
            .collect();
        ReadyInfo {
            multi_tenant_apps,
            authority: first.oidc_authority.clone(),
            sign_in: first.sign_in.clone(),
            url: url.to_owned(),
            exchange_url: url.to_owned(),
            ca_file: ca_file.to_owned(),
            state_dir: state_dir.to_owned(),
            pid: std::process::id(),
            tenants,
            imds_endpoint: format!("{url}/metadata/identity/oauth2/token"),
            identity_endpoint: format!("{url}/msi/token"),
            identity_header: identity_header.to_owned(),
            managed_identities: home
                .managed_identities
                .iter()
                .map(|m| mi_info(&home.id, m))
                .collect(),
            federation_issuer: federation_issuer.to_owned(),
            control: ControlInfo {
                counters: format!("{url}/_exosim/counters"),
                faults: format!("{url}/_exosim/faults"),
                requests: format!("{url}/_exosim/requests"),
                federated_token: format!("{url}/_exosim/federated-token"),
                exchange_faults: format!("{url}/_exosim/exchange-faults"),
                exchange_requests: format!("{url}/_exosim/exchange-requests"),
            },
            secure_string_public_key: String::new(),
        }
    }

    /// The first tenant (the demo tenant when no config was given).
    pub fn tenant(&self) -> &TenantInfo {
        &self.tenants[0]
    }

    /// The user `upn` of the first tenant (case-insensitive).
    pub fn user(&self, upn: &str) -> Option<&UserInfo> {
        self.sign_in
            .users
            .iter()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
    }

    /// The first app of the first tenant (the fully privileged demo app).
    pub fn app(&self) -> &AppInfo {
        &self.tenants[0].apps[0]
    }

    /// A multi-tenant app by client id (e.g. [`crate::FLEET_CLIENT_ID`]).
    pub fn multi_tenant_app(&self, client_id: &str) -> Option<&MultiTenantAppInfo> {
        self.multi_tenant_apps
            .iter()
            .find(|a| a.app.client_id.eq_ignore_ascii_case(client_id))
    }

    /// A tenant by id or domain (case-insensitive).
    pub fn find_tenant(&self, id_or_domain: &str) -> Option<&TenantInfo> {
        self.tenants.iter().find(|t| {
            t.tenant_id.eq_ignore_ascii_case(id_or_domain)
                || t.domain.eq_ignore_ascii_case(id_or_domain)
        })
    }

    /// Finds an app by client id in any tenant.
    pub fn find_app(&self, client_id: &str) -> Option<&AppInfo> {
        self.tenants
            .iter()
            .flat_map(|t| &t.apps)
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }

    /// Writes the JSON atomically: to a temporary file in the same directory, then renamed, so
    /// a reader never sees half a file. Owner-read/write only (it holds secrets).
    pub fn write_to(&self, path: &Path) -> Result<()> {
        let fail = |source: std::io::Error| Error::ReadyFile {
            path: path.to_owned(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| fail(std::io::Error::other(e)))?;
        let file_name = path.file_name().ok_or_else(|| {
            fail(std::io::Error::other(
                "the ready file path has no file name",
            ))
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = path.with_file_name(temp_name);
        crate::pki::write_file(&temp, &json, true).map_err(|e| match e {
            Error::StateFile { source, .. } => fail(source),
            other => fail(std::io::Error::other(other.to_string())),
        })?;
        std::fs::rename(&temp, path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            fail(e)
        })
    }
}

fn tenant_info(url: &str, t: &Tenant, now: time::OffsetDateTime) -> TenantInfo {
    let group_info = |g: &crate::directory::Group| GroupInfo {
        name: g.name.clone(),
        object_id: g.object_id.clone(),
    };
    TenantInfo {
        tenant_id: t.id.clone(),
        domain: t.domain.clone(),
        display_name: t.display_name.clone(),
        authority: format!("{url}/{}", t.id),
        token_endpoint: format!("{url}/{}/oauth2/v2.0/token", t.id),
        token_endpoint_v1: format!("{url}/{}/oauth2/token", t.id),
        apps: t.apps.iter().map(|a| app_info(a, now)).collect(),
        oidc_authority: format!("{url}/{}/v2.0", t.id),
        groups: t.groups.iter().map(group_info).collect(),
        consents: t
            .consents
            .iter()
            .map(|c| ConsentInfo {
                client_id: c.client_id.clone(),
                service_principal_id: c.service_principal_id.clone(),
                roles: c.roles.clone(),
                wids: c.wids.clone(),
            })
            .collect(),
        mailboxes: t.mailboxes,
        sign_in: SignInInfo {
            users: t
                .users
                .iter()
                .map(|u| UserInfo {
                    upn: u.upn.clone(),
                    password: u.password.clone(),
                    object_id: u.object_id.clone(),
                    display_name: u.display_name.clone(),
                    groups: u.groups.iter().map(group_info).collect(),
                    roles: t
                        .service_app
                        .as_ref()
                        .map(|a| a.roles_of(u))
                        .unwrap_or_default(),
                })
                .collect(),
            service_app: t.service_app.as_ref().map(|a| ServiceAppInfo {
                name: a.name.clone(),
                client_id: a.client_id.clone(),
                client_secret: a.secret.value.clone(),
                app_id_uri: a.app_id_uri.clone(),
                redirect_uris: a.redirect_uris.clone(),
                scopes: a.scopes.clone(),
                app_roles: a.app_roles.iter().map(|r| r.value.clone()).collect(),
                access_token_version: a.access_token_version,
            }),
            public_client: t.public_client.as_ref().map(|c| PublicClientInfo {
                name: c.name.clone(),
                client_id: c.client_id.clone(),
            }),
        },
    }
}

fn app_info(app: &App, now: time::OffsetDateTime) -> AppInfo {
    let certificates: Vec<CertificateInfo> = app.certificates.iter().map(cert_info).collect();
    // The "primary" certificate: the first one we hold the key of, else the first registered.
    let primary = app
        .certificates
        .iter()
        .position(|c| c.files.is_some())
        .or((!app.certificates.is_empty()).then_some(0));
    let first = primary.map(|i| &certificates[i]);
    let first_private = first.filter(|c| c.pfx.is_some());
    AppInfo {
        name: app.name.clone(),
        client_id: app.client_id.clone(),
        service_principal_id: app.service_principal_id.clone(),
        client_secret: app
            .secrets
            .iter()
            .find(|s| !s.is_expired(now))
            .map(|s| s.value.clone()),
        expired_client_secret: app
            .secrets
            .iter()
            .find(|s| s.is_expired(now))
            .map(|s| s.value.clone()),
        certificate_pfx: first_private.and_then(|c| c.pfx.clone()),
        certificate_password: first_private.and_then(|c| c.password.clone()),
        certificate_pem: first.map(|c| c.cert_pem.clone()),
        key_pem: first_private.and_then(|c| c.key_pem.clone()),
        thumbprint_sha1: first.map(|c| c.thumbprint_sha1.clone()),
        thumbprint_sha256: first.map(|c| c.thumbprint_sha256.clone()),
        roles: app.roles.clone(),
        wids: app.wids.clone(),
        federated_credentials: app
            .federated
            .iter()
            .map(|f| FederatedCredentialInfo {
                name: f.name.clone(),
                issuer: f.issuer.clone(),
                subject: f.subject.clone(),
                audiences: f.audiences.clone(),
            })
            .collect(),
        certificates,
    }
}

fn cert_info(cert: &AppCertificate) -> CertificateInfo {
    CertificateInfo {
        key_id: cert.key_id.clone(),
        pfx: cert.files.as_ref().map(|f| f.pfx.clone()),
        password: cert.files.as_ref().map(|f| f.password.clone()),
        cert_pem: cert.cert_pem_path.clone(),
        key_pem: cert.files.as_ref().map(|f| f.key_pem.clone()),
        thumbprint_sha1: cert.thumbprints.sha1_hex(),
        thumbprint_sha256: cert.thumbprints.sha256_hex(),
        not_after: cert.not_after.unix_timestamp(),
    }
}

fn mi_info(tenant_id: &str, mi: &ManagedIdentity) -> ManagedIdentityInfo {
    ManagedIdentityInfo {
        tenant_id: tenant_id.to_owned(),
        name: mi.name.clone(),
        client_id: mi.client_id.clone(),
        object_id: mi.object_id.clone(),
        resource_id: mi.resource_id.clone(),
        roles: mi.roles.clone(),
        wids: mi.wids.clone(),
    }
}
