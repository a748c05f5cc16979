//! The live directory: tenants, app registrations with usable credentials, and managed
//! identities, built once at start from a [`TenantsConfig`](crate::TenantsConfig).
//!
//! Building it generates app certificates (with pre-made RSA keys, see [`crate::pki`]) and writes
//! their PFX, certificate and key files under the state directory. Lookups are read-only; the
//! directory never changes while the server runs, and it never hands out a secret except through
//! [`crate::ReadyInfo`], which exists to do exactly that for tests.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rand::RngExt as _;
use time::OffsetDateTime;

use crate::config::{TenantsConfig, URL_PLACEHOLDER, parse_guid};
use crate::error::{Error, Result};
use crate::pki::{self, RsaCredential, Thumbprints};

pub(crate) struct Directory {
    pub tenants: Vec<Tenant>,
    /// Tenant ids and domains (lower case) to their index in `tenants`: a fleet has a thousand.
    index: HashMap<String, usize>,
    /// Client ids of the apps some tenant consented to, to their home `(tenant, app)` indexes.
    registrations: HashMap<String, (usize, usize)>,
}

/// A service principal in a customer tenant for an app registered in another (its home).
#[derive(Debug, Clone)]
pub(crate) struct Consent {
    /// Lower-case hyphenated GUID.
    pub client_id: String,
    pub service_principal_id: String,
    pub roles: Vec<String>,
    pub wids: Vec<String>,
}

/// An app as one tenant knows it: the registration (name, credentials) and the tenant's own
/// service principal of it (object id, grants).
#[derive(Clone, Copy)]
pub(crate) struct AppInTenant<'a> {
    pub registration: &'a App,
    pub service_principal_id: &'a str,
    pub roles: &'a [String],
    pub wids: &'a [String],
}

pub(crate) struct Tenant {
    /// Lower-case hyphenated GUID.
    pub id: String,
    pub domain: String,
    pub display_name: String,
    pub apps: Vec<App>,
    pub managed_identities: Vec<ManagedIdentity>,
    /// Named recipient scopes and administrative units role assignments refer to.
    pub management_scopes: Vec<crate::config::ManagementScopeConfig>,
    pub administrative_units: Vec<crate::config::AdministrativeUnitConfig>,
    /// People who can sign in, and their groups.
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    /// The web service people sign in to, and the public client allowed the password grant.
    pub service_app: Option<ServiceApp>,
    pub public_client: Option<PublicClient>,
    /// Service principals of multi-tenant apps registered elsewhere.
    pub consents: Vec<Consent>,
    /// Mailboxes to generate for the tenant, when not the emulator's default.
    pub mailboxes: Option<usize>,
}

/// A user of the tenant.
pub(crate) struct User {
    /// As configured: Entra keeps the case a UPN was stored with in `upn` and
    /// `preferred_username`, and compares sign-in names without case ([`Tenant::user`]).
    pub upn: String,
    pub password: String,
    /// Lower-case hyphenated GUID.
    pub object_id: String,
    pub display_name: String,
    pub groups: Vec<Group>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("upn", &self.upn)
            .field("object_id", &self.object_id)
            .finish_non_exhaustive()
    }
}

/// A security group.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub name: String,
    /// Lower-case hyphenated GUID.
    pub object_id: String,
}

/// A web service's registration: confidential client and API (`app_id_uri`) with app roles.
pub(crate) struct ServiceApp {
    pub name: String,
    /// Lower-case hyphenated GUID.
    pub client_id: String,
    pub secret: Secret,
    pub app_id_uri: String,
    pub redirect_uris: Vec<String>,
    /// Delegated permissions its API exposes.
    pub scopes: Vec<String>,
    pub app_roles: Vec<crate::config::AppRoleConfig>,
    pub role_assignments: Vec<crate::config::AppRoleAssignmentConfig>,
    /// The version of access tokens for its API (1 or 2; the manifest's
    /// `requestedAccessTokenVersion`, null meaning 1).
    pub access_token_version: u8,
}

impl ServiceApp {
    /// The app role values `user` holds, directly (by UPN) or through a group (by name).
    pub(crate) fn roles_of(&self, user: &User) -> Vec<String> {
        let mut roles: Vec<String> = Vec::new();
        for assignment in &self.role_assignments {
            let holds = assignment.principal.eq_ignore_ascii_case(&user.upn)
                || user
                    .groups
                    .iter()
                    .any(|g| g.name.eq_ignore_ascii_case(&assignment.principal));
            if holds && !roles.contains(&assignment.role) {
                roles.push(assignment.role.clone());
            }
        }
        roles
    }
}

/// A public client application (no secret).
#[derive(Debug)]
pub(crate) struct PublicClient {
    pub name: String,
    /// Lower-case hyphenated GUID.
    pub client_id: String,
    pub redirect_uris: Vec<String>,
}

pub(crate) struct App {
    pub name: String,
    /// Lower-case hyphenated GUID.
    pub client_id: String,
    pub service_principal_id: String,
    pub secrets: Vec<Secret>,
    pub certificates: Vec<AppCertificate>,
    pub roles: Vec<String>,
    pub wids: Vec<String>,
    pub federated: Vec<FederatedCredential>,
    /// Exchange role assignments to the service principal (RBAC for Applications).
    pub role_assignments: Vec<crate::config::RoleAssignmentConfig>,
    /// Registered as multi-tenant ([`crate::AppConfig::multi_tenant`]).
    pub multi_tenant: bool,
}

pub(crate) struct Secret {
    pub value: String,
    pub expires: Option<OffsetDateTime>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Secret {
    pub(crate) fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

pub(crate) struct AppCertificate {
    /// The key credential's `keyId`, accepted as a JWS `kid`.
    pub key_id: String,
    pub der: Vec<u8>,
    pub public: rsa::PublicKey,
    pub thumbprints: Thumbprints,
    pub not_after: OffsetDateTime,
    pub cert_pem_path: PathBuf,
    /// Present for generated certificates, whose private key we know.
    pub files: Option<PrivateFiles>,
}

pub(crate) struct PrivateFiles {
    pub pfx: PathBuf,
    pub password: String,
    pub key_pem: PathBuf,
}

#[derive(Debug, Clone)]
pub(crate) struct FederatedCredential {
    pub name: Option<String>,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ManagedIdentity {
    pub name: Option<String>,
    pub client_id: String,
    pub object_id: String,
    pub resource_id: Option<String>,
    pub roles: Vec<String>,
    pub wids: Vec<String>,
}

/// What a `{tenant}` path segment names.
pub(crate) enum TenantLookup<'a> {
    Found(&'a Tenant),
    /// `common`, `organizations` or `consumers`: multi-tenant aliases.
    Alias(&'static str),
    /// A well-formed GUID or domain that no tenant has (AADSTS90002).
    NotFound,
    /// Neither a GUID nor a DNS name (AADSTS900023).
    Malformed,
}

impl Directory {
    /// How many RSA keys [`Directory::build`] will consume (one per generated certificate).
    pub(crate) fn keys_needed(config: &TenantsConfig) -> usize {
        config
            .tenants
            .iter()
            .flat_map(|t| &t.apps)
            .flat_map(|a| &a.certificates)
            .filter(|c| c.cert_pem.is_none())
            .count()
    }

    /// Builds the directory, writing certificate files under `state_dir/tenants/`.
    pub(crate) fn build(
        config: &TenantsConfig,
        state_dir: &Path,
        base_url: &str,
        keys: &mut dyn Iterator<Item = rsa::PrivateKey>,
    ) -> Result<Self> {
        let mut tenants = Vec::new();
        for tc in &config.tenants {
            let id = guid(&tc.tenant_id);
            let dir = state_dir.join("tenants").join(&id);
            if tc.apps.iter().any(|a| !a.certificates.is_empty()) {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::state("create directory", &dir, e))?;
            }
            let mut apps = Vec::new();
            for ac in &tc.apps {
                let client_id = guid(&ac.client_id);
                let stem = format!("{}-{}", file_stem(&ac.name), &client_id[..8]);
                let secrets = ac
                    .secrets
                    .iter()
                    .map(|s| Secret {
                        value: s.value.clone().unwrap_or_else(random_client_secret),
                        expires: s.expires,
                    })
                    .collect();
                let mut certificates = Vec::new();
                for (n, cc) in ac.certificates.iter().enumerate() {
                    let base = dir.join(format!("{stem}-cert{}", n + 1));
                    let cert_pem_path = base.with_extension("cert.pem");
                    let certificate = match &cc.cert_pem {
                        Some(given) => {
                            let given = config.resolve(given);
                            let (der, public, not_after) = pki::read_cert_pem(&given)?;
                            pki::write_file(
                                &cert_pem_path,
                                pki::pem("CERTIFICATE", &der).as_bytes(),
                                false,
                            )?;
                            AppCertificate {
                                key_id: uuid::Uuid::new_v4().to_string(),
                                thumbprints: Thumbprints::of(&der),
                                der,
                                public,
                                not_after,
                                cert_pem_path,
                                files: None,
                            }
                        }
                        None => {
                            let key = keys.next().ok_or_else(|| {
                                Error::crypto(
                                    "app certificate",
                                    "internal error: too few pre-generated keys",
                                )
                            })?;
                            let subject = cc.subject.clone().unwrap_or_else(|| ac.name.clone());
                            let cred = RsaCredential::self_signed(
                                key,
                                &subject,
                                cc.valid_days.unwrap_or(365),
                            )?;
                            let password = random_password();
                            let pfx_path = base.with_extension("pfx");
                            let key_pem_path = base.with_extension("key.pem");
                            pki::write_file(&pfx_path, &cred.pfx(&ac.name, &password)?, true)?;
                            pki::write_file(&key_pem_path, cred.key_pem()?.as_bytes(), true)?;
                            pki::write_file(
                                &cert_pem_path,
                                pki::pem("CERTIFICATE", &cred.cert_der).as_bytes(),
                                false,
                            )?;
                            AppCertificate {
                                key_id: uuid::Uuid::new_v4().to_string(),
                                thumbprints: cred.thumbprints,
                                der: cred.cert_der,
                                public: cred.public,
                                not_after: cred.not_after,
                                cert_pem_path,
                                files: Some(PrivateFiles {
                                    pfx: pfx_path,
                                    password,
                                    key_pem: key_pem_path,
                                }),
                            }
                        }
                    };
                    certificates.push(certificate);
                }
                apps.push(App {
                    name: ac.name.clone(),
                    service_principal_id: ac
                        .service_principal_id
                        .as_deref()
                        .map(guid)
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    client_id,
                    secrets,
                    certificates,
                    roles: ac.roles.clone(),
                    multi_tenant: ac.multi_tenant,
                    wids: ac.wids.iter().map(|w| guid(w)).collect(),
                    federated: ac
                        .federated_credentials
                        .iter()
                        .map(|f| FederatedCredential {
                            name: f.name.clone(),
                            issuer: f.issuer.replace(URL_PLACEHOLDER, base_url),
                            subject: f.subject.clone(),
                            audiences: f.audiences.clone(),
                        })
                        .collect(),
                    role_assignments: ac.role_assignments.clone(),
                });
            }
            let groups: Vec<Group> = tc
                .groups
                .iter()
                .map(|g| Group {
                    name: g.name.clone(),
                    object_id: guid(&g.object_id),
                })
                .collect();
            let users =
                tc.users
                    .iter()
                    .map(|u| User {
                        upn: u.upn.clone(),
                        password: u.password.clone().unwrap_or_else(random_password),
                        object_id: u
                            .object_id
                            .as_deref()
                            .map(guid)
                            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                        display_name: u.display_name.clone().unwrap_or_else(|| {
                            u.upn.split('@').next().unwrap_or(&u.upn).to_owned()
                        }),
                        groups: groups
                            .iter()
                            .filter(|g| u.groups.iter().any(|n| n.eq_ignore_ascii_case(&g.name)))
                            .cloned()
                            .collect(),
                    })
                    .collect();
            let service_app = tc.service_app.as_ref().map(|sa| {
                let client_id = guid(&sa.client_id);
                ServiceApp {
                    name: sa.name.clone().unwrap_or_else(|| "warden-serve".to_owned()),
                    secret: Secret {
                        value: sa
                            .client_secret
                            .clone()
                            .unwrap_or_else(random_client_secret),
                        expires: None,
                    },
                    app_id_uri: sa
                        .app_id_uri
                        .clone()
                        .unwrap_or_else(|| format!("api://{client_id}")),
                    client_id,
                    redirect_uris: sa.redirect_uris.clone(),
                    scopes: sa.scopes.clone(),
                    app_roles: sa.app_roles.clone(),
                    role_assignments: sa.role_assignments.clone(),
                    access_token_version: sa.access_token_version.unwrap_or(1),
                }
            });
            let public_client = tc.public_client.as_ref().map(|pc| PublicClient {
                name: pc.name.clone().unwrap_or_else(|| "warden-cli".to_owned()),
                client_id: guid(&pc.client_id),
                redirect_uris: pc.redirect_uris.clone(),
            });
            tenants.push(Tenant {
                consents: tc
                    .consents
                    .iter()
                    .map(|c| Consent {
                        client_id: guid(&c.client_id),
                        service_principal_id: c
                            .service_principal_id
                            .as_deref()
                            .map(guid)
                            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                        roles: c.roles.clone(),
                        wids: c.wids.iter().map(|w| guid(w)).collect(),
                    })
                    .collect(),
                mailboxes: tc.mailboxes,
                users,
                groups,
                service_app,
                public_client,
                management_scopes: tc.management_scopes.clone(),
                administrative_units: tc.administrative_units.clone(),
                display_name: tc.display_name.clone().unwrap_or_else(|| tc.domain.clone()),
                domain: tc.domain.to_ascii_lowercase(),
                id,
                apps,
                managed_identities: tc
                    .managed_identities
                    .iter()
                    .map(|m| ManagedIdentity {
                        name: m.name.clone(),
                        client_id: guid(&m.client_id),
                        object_id: guid(&m.object_id),
                        resource_id: m.resource_id.clone(),
                        roles: m.roles.clone(),
                        wids: m.wids.iter().map(|w| guid(w)).collect(),
                    })
                    .collect(),
            });
        }
        Ok(Directory::new(tenants))
    }

    /// Indexes `tenants` by id and domain, and the consented apps by client id.
    pub(crate) fn new(tenants: Vec<Tenant>) -> Self {
        let mut index = HashMap::new();
        let mut registrations = HashMap::new();
        for (ti, tenant) in tenants.iter().enumerate() {
            index.insert(tenant.id.clone(), ti);
            index.insert(tenant.domain.clone(), ti);
            for consent in &tenant.consents {
                if registrations.contains_key(&consent.client_id) {
                    continue;
                }
                let home = tenants.iter().enumerate().find_map(|(hi, home)| {
                    home.apps
                        .iter()
                        .position(|a| a.client_id == consent.client_id)
                        .map(|ai| (hi, ai))
                });
                if let Some(home) = home {
                    registrations.insert(consent.client_id.clone(), home);
                }
            }
        }
        Directory {
            tenants,
            index,
            registrations,
        }
    }

    /// App `client_id` as `tenant` knows it: registered there, or registered in another tenant
    /// and consented to here. `None` is Entra's AADSTS700016 for that tenant.
    pub(crate) fn app_in<'a>(
        &'a self,
        tenant: &'a Tenant,
        client_id: &str,
    ) -> Option<AppInTenant<'a>> {
        if let Some(app) = tenant.app(client_id) {
            return Some(AppInTenant {
                registration: app,
                service_principal_id: &app.service_principal_id,
                roles: &app.roles,
                wids: &app.wids,
            });
        }
        let consent = tenant
            .consents
            .iter()
            .find(|c| c.client_id.eq_ignore_ascii_case(client_id))?;
        let (hi, ai) = *self.registrations.get(&consent.client_id)?;
        Some(AppInTenant {
            registration: &self.tenants[hi].apps[ai],
            service_principal_id: &consent.service_principal_id,
            roles: &consent.roles,
            wids: &consent.wids,
        })
    }

    /// Resolves a `{tenant}` path segment: a GUID, a domain, or a multi-tenant alias.
    pub(crate) fn lookup(&self, segment: &str) -> TenantLookup<'_> {
        let lower = segment.to_ascii_lowercase();
        match lower.as_str() {
            "common" => return TenantLookup::Alias("common"),
            "organizations" => return TenantLookup::Alias("organizations"),
            "consumers" => return TenantLookup::Alias("consumers"),
            _ => {}
        }
        let key = match parse_guid(&lower) {
            Some(id) => id.to_string(),
            None if crate::config::is_dns_name(&lower) => lower,
            None => return TenantLookup::Malformed,
        };
        self.index.get(&key).map_or(TenantLookup::NotFound, |i| {
            TenantLookup::Found(&self.tenants[*i])
        })
    }

    /// The tenant that managed identities live in.
    pub(crate) fn home(&self) -> &Tenant {
        &self.tenants[0]
    }
}

impl Tenant {
    pub(crate) fn app(&self, client_id: &str) -> Option<&App> {
        self.apps
            .iter()
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }

    /// A user by UPN (case-insensitive, as Entra compares sign-in names).
    pub(crate) fn user(&self, upn: &str) -> Option<&User> {
        self.users.iter().find(|u| u.upn.eq_ignore_ascii_case(upn))
    }

    /// A user by object id.
    pub(crate) fn user_by_id(&self, object_id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.object_id == object_id)
    }
}

/// Normalises a validated GUID to lower-case hyphenated form.
fn guid(text: &str) -> String {
    parse_guid(text).map_or_else(|| text.to_ascii_lowercase(), |g| g.to_string())
}

fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if stem.is_empty() {
        "app".to_owned()
    } else {
        stem
    }
}

/// A client secret shaped like the ones the portal issues: 40 characters, a `Q~` marker, and
/// characters (`~`, `.`, `-`, `_`) that a client must URL-encode correctly.
pub(crate) fn random_client_secret() -> String {
    const HEAD: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const BODY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~._-";
    let mut rng = rand::rng();
    let mut secret = String::with_capacity(40);
    for _ in 0..3 {
        secret.push(char::from(HEAD[rng.random_range(0..HEAD.len())]));
    }
    secret.push(char::from(b'0' + rng.random_range(0..10u8)));
    secret.push_str("Q~");
    for _ in 0..34 {
        secret.push(char::from(BODY[rng.random_range(0..BODY.len())]));
    }
    secret
}

/// A random alphanumeric password (PFX files).
pub(crate) fn random_password() -> String {
    const SET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(SET[rng.random_range(0..SET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_look_like_entra_secrets() {
        let secret = random_client_secret();
        assert_eq!(secret.len(), 40);
        assert_eq!(&secret[4..6], "Q~");
        assert_ne!(secret, random_client_secret());
    }

    #[test]
    fn lookup_distinguishes_alias_malformed_unknown() {
        let dir = Directory::new(vec![Tenant {
            id: "8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d".into(),
            domain: "contoso.onmicrosoft.com".into(),
            display_name: "Contoso".into(),
            apps: vec![],
            managed_identities: vec![],
            management_scopes: vec![],
            administrative_units: vec![],
            users: vec![],
            groups: vec![],
            service_app: None,
            public_client: None,
            consents: vec![],
            mailboxes: None,
        }]);
        assert!(matches!(
            dir.lookup("8D3F5C1A-2B4E-4F6A-9C7D-1E2F3A4B5C6D"),
            TenantLookup::Found(_)
        ));
        assert!(matches!(
            dir.lookup("Contoso.onmicrosoft.com"),
            TenantLookup::Found(_)
        ));
        assert!(matches!(
            dir.lookup("common"),
            TenantLookup::Alias("common")
        ));
        assert!(matches!(dir.lookup("fabrikam.com"), TenantLookup::NotFound));
        assert!(matches!(
            dir.lookup("00000000-0000-0000-0000-000000000001"),
            TenantLookup::NotFound
        ));
        assert!(matches!(
            dir.lookup("invalid_tenant"),
            TenantLookup::Malformed
        ));
    }
}
