//! The simulated directory as an operator writes it: tenants, app registrations with their
//! credentials, roles and federated credentials, and managed identities, read from TOML.
//!
//! This module only parses and checks the description; keys, certificates and files are made at
//! start by [`crate::directory`]. It refuses unknown fields (a typo must not silently drop a
//! credential), malformed GUIDs, duplicate ids and certificate files it cannot read, and it never
//! prints a secret value (see the hand-written `Debug` impls). The format is documented by the
//! commented example `emulator/exosim/tenants.example.toml`, which a test loads.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// The app role Exchange Online checks for app-only access ("Office 365 Exchange Online" API).
pub const EXCHANGE_MANAGE_AS_APP: &str = "Exchange.ManageAsApp";

/// Role template id of the Exchange Administrator directory role, as it appears in `wids`.
pub const EXCHANGE_ADMINISTRATOR_ROLE: &str = "29232cdf-9323-42fd-ade2-1d097af3e4de";

/// The audience Entra recommends for federated identity credentials.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Placeholder in a federated credential's `issuer` that is replaced by the emulator's base URL
/// once the port is known (e.g. `"{url}/_federation"`).
pub const URL_PLACEHOLDER: &str = "{url}";

/// Tenant id of the ready demo tenant.
pub const DEMO_TENANT_ID: &str = "8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d";
/// Primary domain of the ready demo tenant.
pub const DEMO_DOMAIN: &str = "contoso.onmicrosoft.com";
/// Client id of the demo app that holds both `Exchange.ManageAsApp` and Exchange Administrator.
pub const DEMO_CLIENT_ID: &str = "4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40";
/// Client id of the demo app that has the directory role but not the app role.
pub const DEMO_NO_ROLE_CLIENT_ID: &str = "5a0f3c8d-2e4b-4d6f-9a7c-0b1d2e3f4a51";
/// Client id of the demo app that has the app role but no directory role (`wids`).
pub const DEMO_NO_WIDS_CLIENT_ID: &str = "6b1a4d9e-3f5c-4e7a-8b8d-1c2e3f4a5b62";
/// Client id of the demo app that holds `Exchange.ManageAsApp` and Global Reader (read-only).
pub const DEMO_READER_CLIENT_ID: &str = "9e4d7a2b-6c8f-4b1e-a3d5-7f9012b3c4d5";
/// Role template id of the Global Reader directory role, as it appears in `wids`.
pub const GLOBAL_READER_ROLE: &str = "f2ef992c-3afb-46b9-b7cf-a126ee74c451";
/// Client id of the demo tenant's first ("system-assigned") managed identity.
pub const DEMO_MANAGED_IDENTITY_CLIENT_ID: &str = "7c2b5e0f-4a6d-4f8b-9c9e-2d3f4a5b6c73";
/// Subject of the demo app's federated credential (a Kubernetes service account).
pub const DEMO_FEDERATED_SUBJECT: &str = "system:serviceaccount:warden:demo";

/// Client id of the demo tenant's service app (`warden serve`'s registration).
pub const DEMO_SERVICE_CLIENT_ID: &str = "3c7a9e1f-5b2d-4e8a-9f6c-2d4e6f8a0b13";
/// Client id of the demo tenant's public client (ROPC allowed, for msal).
pub const DEMO_PUBLIC_CLIENT_ID: &str = "1e5b8d2a-7c4f-4a9e-8b3d-5f7a9c1e3b24";
/// The app role of the demo service app that marks operators.
pub const DEMO_OPERATOR_ROLE: &str = "Warden.Operator";
/// The localhost redirect URI registered for the demo service app: `http://127.0.0.1:PORT/
/// auth/callback` matches it on any port (Entra's localhost exceptions); `localhost` does not.
pub const DEMO_SERVICE_REDIRECT_URI: &str = "http://127.0.0.1/auth/callback";

/// All tenants the emulator serves. The first tenant is the one managed identities live in.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsConfig {
    /// `[[tenant]]` tables.
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// Directory that relative certificate paths are resolved against (the TOML file's folder).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// The file this came from, for error messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// One `[[tenant]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The directory (tenant) id, a GUID.
    pub tenant_id: String,
    /// The primary domain, e.g. `contoso.onmicrosoft.com`; accepted in place of the GUID.
    pub domain: String,
    /// Display name used in error messages; defaults to the domain.
    #[serde(default)]
    pub display_name: Option<String>,
    /// `[[tenant.app]]` tables: app registrations (with their service principals).
    #[serde(default, rename = "app")]
    pub apps: Vec<AppConfig>,
    /// `[[tenant.managed_identity]]` tables; only the first tenant's are served.
    #[serde(default, rename = "managed_identity")]
    pub managed_identities: Vec<ManagedIdentityConfig>,
    /// `[[tenant.management_scope]]`: named recipient scopes for role assignments.
    #[serde(default, rename = "management_scope")]
    pub management_scopes: Vec<ManagementScopeConfig>,
    /// `[[tenant.administrative_unit]]`: named member lists for role assignments.
    #[serde(default, rename = "administrative_unit")]
    pub administrative_units: Vec<AdministrativeUnitConfig>,
    /// `users = [...]` (or `[[tenant.user]]`): people who can sign in (delegated flows).
    #[serde(default, alias = "user")]
    pub users: Vec<UserConfig>,
    /// `groups = [...]` (or `[[tenant.group]]`): security groups users belong to.
    #[serde(default, alias = "group")]
    pub groups: Vec<GroupConfig>,
    /// The registration of a web service people sign in to (OIDC code flow, its own API).
    #[serde(default)]
    pub service_app: Option<ServiceAppConfig>,
    /// A public client (no secret), allowed the resource-owner password grant.
    #[serde(default)]
    pub public_client: Option<PublicClientConfig>,
    /// `[[tenant.consent]]`: service principals of multi-tenant apps registered in another
    /// tenant of this file (an administrator's consent created them here).
    #[serde(default, rename = "consent")]
    pub consents: Vec<ConsentConfig>,
    /// Mailboxes generated for this tenant; the emulator's `mailboxes` option when absent.
    #[serde(default)]
    pub mailboxes: Option<usize>,
}

/// One `[[tenant.consent]]`: the service principal that admin consent to a multi-tenant app
/// creates in a customer tenant. The app's registration (and so its credentials) stays in its
/// home tenant; roles and directory roles are the customer's own grants to the principal
/// (<https://learn.microsoft.com/entra/identity-platform/app-objects-and-service-principals>).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentConfig {
    /// Client id of an `[[tenant.app]]` registered in another tenant of this file.
    pub client_id: String,
    /// Object id of the service principal here (`oid`/`sub`); random per start when absent.
    #[serde(default)]
    pub service_principal_id: Option<String>,
    /// App roles granted on the Exchange Online resource (e.g. `Exchange.ManageAsApp`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Directory role template ids assigned to the principal here (the `wids` claim).
    #[serde(default)]
    pub wids: Vec<String>,
}

/// Client id of the generated multi-tenant app of a fleet ([`TenantsConfig::add_fleet`]).
pub const FLEET_CLIENT_ID: &str = "f1ee7a99-0c1d-4e2f-8a3b-5c6d7e8f9a01";

/// Generated customer tenants for fleet tests: `tenant-001.onmicrosoft.com`… with ids that
/// depend only on the index, and one multi-tenant app consented in all but `unconsented`.
#[derive(Clone, Debug, Default)]
pub struct FleetConfig {
    /// How many tenants to generate.
    pub tenants: usize,
    /// 1-based indexes of generated tenants without a service principal for the fleet app.
    pub unconsented: Vec<usize>,
    /// Mailboxes per generated tenant.
    pub mailboxes: usize,
}

impl FleetConfig {
    /// Tenant id of generated tenant `index` (1-based): a fixed prefix and the index in hex.
    pub fn tenant_id(index: usize) -> String {
        format!("f1ee7000-0000-4000-8000-{index:012x}")
    }

    /// Domain of generated tenant `index`: `tenant-001.onmicrosoft.com` (at least 3 digits).
    pub fn domain(index: usize) -> String {
        format!("tenant-{index:03}.onmicrosoft.com")
    }

    /// Object id of the fleet app's service principal in generated tenant `index`.
    fn service_principal_id(index: usize) -> String {
        format!("f1ee75b0-0000-4000-8000-{index:012x}")
    }
}

/// One user of a tenant: who can sign in with the login form or the password grant.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user principal name, `name@domain` (the `preferred_username` claim).
    pub upn: String,
    /// The password; a random one is generated at start when absent (see the ready file).
    #[serde(default)]
    pub password: Option<String>,
    /// Object id (the `oid` claim), a GUID; random per start when absent.
    #[serde(default)]
    pub object_id: Option<String>,
    /// Display name (the `name` claim); defaults to the UPN's local part.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Names of the `groups` the user is a member of.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("upn", &self.upn)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("object_id", &self.object_id)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// One security group (its object id is what the `groups` claim carries).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Display name, as users' `groups` lists and role assignments refer to it.
    pub name: String,
    /// Object id, a GUID.
    pub object_id: String,
}

/// A web service's app registration: a confidential client that signs people in with the
/// authorization code flow and exposes its own API (`app_id_uri`) with app roles.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAppConfig {
    /// Display name; default `warden-serve`.
    #[serde(default)]
    pub name: Option<String>,
    /// Application (client) id, a GUID.
    pub client_id: String,
    /// The client secret; random per start when absent.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Application ID URI of its API; default `api://<client_id>`.
    #[serde(default)]
    pub app_id_uri: Option<String>,
    /// Registered redirect URIs: `https://…`, or `http://127.0.0.1/…` / `http://localhost/…`
    /// (matched on any port, Entra's localhost exceptions).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Delegated permissions its API exposes (`scp`); default `["Tasks.Run"]`, the scope warden serve asks for.
    #[serde(default = "default_exposed_scopes")]
    pub scopes: Vec<String>,
    /// App roles its API defines.
    #[serde(default)]
    pub app_roles: Vec<AppRoleConfig>,
    /// Who holds which app role: a user (by UPN) or a group (by name).
    #[serde(default)]
    pub role_assignments: Vec<AppRoleAssignmentConfig>,
    /// The version of the access tokens issued for its API: the manifest's
    /// `requestedAccessTokenVersion` (`accessTokenAcceptedVersion`), `1` or `2`. Absent (null)
    /// means 1, as at Entra: "If the value is null, this defaults to 1"
    /// (<https://learn.microsoft.com/entra/identity-platform/reference-app-manifest>).
    #[serde(default)]
    pub access_token_version: Option<u8>,
}

impl fmt::Debug for ServiceAppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAppConfig")
            .field("client_id", &self.client_id)
            .field("app_id_uri", &self.app_id_uri)
            .field("redirect_uris", &self.redirect_uris)
            .field("app_roles", &self.app_roles)
            .field("access_token_version", &self.access_token_version)
            .finish_non_exhaustive()
    }
}

/// One app role of the service app (`roles` claim value).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoleConfig {
    /// The value tokens carry, e.g. `Warden.Operator`.
    pub value: String,
    /// The role's id, a GUID.
    pub id: String,
}

/// One assignment of an app role to a user or a group.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoleAssignmentConfig {
    /// A user's UPN or a group's name.
    pub principal: String,
    /// An `app_roles` value.
    pub role: String,
}

/// A public client application (no secret): a native or command-line app.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicClientConfig {
    /// Display name; default `warden-cli`.
    #[serde(default)]
    pub name: Option<String>,
    /// Application (client) id, a GUID.
    pub client_id: String,
    /// Registered redirect URIs (loopback for the code flow); may be empty.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

fn demo_user(name: &str, display_name: &str, object_id: &str, groups: &[&str]) -> UserConfig {
    UserConfig {
        upn: format!("{name}@{DEMO_DOMAIN}"),
        password: None,
        object_id: Some(object_id.to_owned()),
        display_name: Some(display_name.to_owned()),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn default_exposed_scopes() -> Vec<String> {
    vec!["Tasks.Run".to_owned()]
}

/// One `[[tenant.management_scope]]` (`New-ManagementScope -RecipientRestrictionFilter`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementScopeConfig {
    /// The scope's name, as role assignments refer to it.
    pub name: String,
    /// An OPATH filter on mailbox properties, e.g. `"Department -eq 'Sales'"`.
    pub recipient_restriction_filter: String,
}

/// One `[[tenant.administrative_unit]]`: an Entra administrative unit and its members.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdministrativeUnitConfig {
    /// The unit's name, as role assignments refer to it.
    pub name: String,
    /// Members by primary SMTP address or UPN.
    #[serde(default)]
    pub members: Vec<String>,
}

/// One `[[tenant.app.role_assignment]]`: RBAC for Applications, an Exchange management role
/// (or a role group's roles) assigned to the app's service principal
/// (`New-ManagementRoleAssignment -App …` / `Add-RoleGroupMember`), optionally scoped.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignmentConfig {
    /// A management role (`Mail Recipients`, …) or role group (`Organization Management`, …).
    pub role: String,
    /// Limits writes to the recipients of this `[[tenant.management_scope]]`.
    #[serde(default)]
    pub management_scope: Option<String>,
    /// Limits writes to the members of this `[[tenant.administrative_unit]]`.
    #[serde(default)]
    pub administrative_unit: Option<String>,
}

/// One `[[tenant.app]]`: an app registration and its service principal in the tenant.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Display name (`app_displayname` claim, file names).
    pub name: String,
    /// Application (client) id, a GUID.
    pub client_id: String,
    /// Object id of the service principal (`oid`/`sub` claims); random per start when absent.
    #[serde(default)]
    pub service_principal_id: Option<String>,
    /// `[[tenant.app.secret]]`: client secrets.
    #[serde(default, rename = "secret", alias = "secrets")]
    pub secrets: Vec<SecretConfig>,
    /// `[[tenant.app.certificate]]`: certificate credentials.
    #[serde(default, rename = "certificate", alias = "certificates")]
    pub certificates: Vec<CertificateConfig>,
    /// App roles granted on the Exchange Online resource (e.g. `Exchange.ManageAsApp`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Directory role template ids assigned to the service principal (the `wids` claim).
    #[serde(default)]
    pub wids: Vec<String>,
    /// `[[tenant.app.federated_credential]]`: trusted external identity providers.
    #[serde(default, rename = "federated_credential")]
    pub federated_credentials: Vec<FederatedCredentialConfig>,
    /// `[[tenant.app.role_assignment]]`: Exchange RBAC for the app, besides `wids`.
    #[serde(default, rename = "role_assignment")]
    pub role_assignments: Vec<RoleAssignmentConfig>,
    /// A multi-tenant registration (sign-in audience "accounts in any organizational
    /// directory"): listed in the ready file's `multi_tenant_apps` even before any tenant
    /// consents to it. An app that some `[[tenant.consent]]` names is multi-tenant anyway.
    #[serde(default)]
    pub multi_tenant: bool,
}

/// One `[[tenant.app.secret]]`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// The secret value; a random Entra-looking value is generated at start when absent.
    #[serde(default)]
    pub value: Option<String>,
    /// When the secret stops working (RFC 3339, or a TOML datetime). A request with an expired
    /// secret gets AADSTS7000222.
    #[serde(default, deserialize_with = "deserialize_datetime")]
    pub expires: Option<OffsetDateTime>,
}

impl fmt::Debug for SecretConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretConfig")
            .field("value", &self.value.as_ref().map(|_| "[redacted]"))
            .field("expires", &self.expires)
            .finish()
    }
}

/// One `[[tenant.app.certificate]]`: generated at start unless `cert_pem` names an existing one.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// Subject common name of a generated certificate; defaults to the app's name.
    #[serde(default)]
    pub subject: Option<String>,
    /// Validity of a generated certificate in days (default 365).
    #[serde(default)]
    pub valid_days: Option<u32>,
    /// Register an existing RSA certificate (PEM) instead of generating one; the private key stays
    /// with the client, so the ready file has no PFX for it. Relative to the TOML file.
    #[serde(default)]
    pub cert_pem: Option<PathBuf>,
}

/// One `[[tenant.app.federated_credential]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredentialConfig {
    /// A label.
    #[serde(default)]
    pub name: Option<String>,
    /// The external issuer (`iss`), compared exactly; `{url}` is replaced by the emulator's URL.
    /// Only the emulator's own issuer (`{url}/_federation`) can have its signatures checked.
    pub issuer: String,
    /// The subject (`sub`), compared exactly (case-sensitively, as Entra does).
    pub subject: String,
    /// Accepted audiences; default `["api://AzureADTokenExchange"]`.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

/// One `[[tenant.managed_identity]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentityConfig {
    /// A label (`app_displayname`).
    #[serde(default)]
    pub name: Option<String>,
    /// Client id (selects it with `client_id=`), a GUID.
    pub client_id: String,
    /// Object (principal) id (`object_id=` / `principal_id=`, and the `oid` claim), a GUID.
    pub object_id: String,
    /// ARM resource id (`msi_res_id=` / `mi_res_id=`); optional.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// App roles on the Exchange resource.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Directory role template ids.
    #[serde(default)]
    pub wids: Vec<String>,
}

fn default_audiences() -> Vec<String> {
    vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()]
}

/// Accepts a TOML datetime (`expires = 2020-01-01T00:00:00Z`) or an RFC 3339 string.
fn deserialize_datetime<'de, D>(deserializer: D) -> Result<Option<OffsetDateTime>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Native(toml::value::Datetime),
        Text(String),
    }
    let text = match Option::<Raw>::deserialize(deserializer)? {
        None => return Ok(None),
        Some(Raw::Native(dt)) => dt.to_string(),
        Some(Raw::Text(text)) => text,
    };
    OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .map(Some)
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "expires must be an RFC 3339 date-time with an offset, e.g. 2030-01-01T00:00:00Z ('{text}': {e})"
            ))
        })
}

impl fmt::Debug for TenantsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantsConfig")
            .field("tenants", &self.tenants)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl TenantsConfig {
    /// Reads and checks a tenants file. Errors name the file and the reason (with line and column
    /// for TOML syntax errors).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.base_dir = path.parent().map(Path::to_owned);
        config.source = Some(path.to_owned());
        config.validate()?;
        Ok(config)
    }

    /// Parses and checks a tenants description given as TOML text; relative certificate paths are
    /// resolved against the current directory.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config = Self::parse(text, Path::new("<inline>"))?;
        config.validate()?;
        Ok(config)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::ParseConfig {
            path: path.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })
    }

    /// The ready demo tenant `contoso.onmicrosoft.com`:
    ///
    /// - `warden-demo` ([`DEMO_CLIENT_ID`]): `Exchange.ManageAsApp` + Exchange Administrator; a
    ///   valid secret, an expired secret (for AADSTS7000222), a generated certificate, and a
    ///   federated credential for `system:serviceaccount:warden:demo` from `{url}/_federation`;
    /// - `warden-demo-no-role` ([`DEMO_NO_ROLE_CLIENT_ID`]): Exchange Administrator only;
    /// - `warden-demo-no-wids` ([`DEMO_NO_WIDS_CLIENT_ID`]): `Exchange.ManageAsApp` only;
    /// - `warden-demo-reader` ([`DEMO_READER_CLIENT_ID`]): `Exchange.ManageAsApp` + Global Reader
    ///   (Exchange allows it `Get-*` cmdlets only);
    /// - two managed identities: the first (the default, "system-assigned") with both roles, the
    ///   second (user-assigned) with neither;
    /// - people: `helpdesk@` (group `Helpdesk`), `lead@` (group `Leads`, which holds the service
    ///   app's [`DEMO_OPERATOR_ROLE`]) and `outsider@` (no group);
    /// - the service app ([`DEMO_SERVICE_CLIENT_ID`], `api://<client id>`, redirect URI
    ///   [`DEMO_SERVICE_REDIRECT_URI`], v2.0 access tokens) and a public client
    ///   ([`DEMO_PUBLIC_CLIENT_ID`]).
    ///
    /// Secrets, passwords and PFX passwords are random per start.
    pub fn demo() -> Self {
        let expired = OffsetDateTime::UNIX_EPOCH + time::Duration::days(18_262); // 2020-01-01
        let app =
            |name: &str, client_id: &str, sp: &str, roles: &[&str], wids: &[&str]| AppConfig {
                name: name.to_owned(),
                client_id: client_id.to_owned(),
                service_principal_id: Some(sp.to_owned()),
                secrets: vec![SecretConfig::default()],
                certificates: vec![CertificateConfig::default()],
                roles: roles.iter().map(|s| (*s).to_owned()).collect(),
                wids: wids.iter().map(|s| (*s).to_owned()).collect(),
                federated_credentials: Vec::new(),
                role_assignments: Vec::new(),
                multi_tenant: false,
            };
        let mut full = app(
            "warden-demo",
            DEMO_CLIENT_ID,
            "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e",
            &[EXCHANGE_MANAGE_AS_APP],
            &[EXCHANGE_ADMINISTRATOR_ROLE],
        );
        full.secrets.push(SecretConfig {
            value: None,
            expires: Some(expired),
        });
        full.federated_credentials.push(FederatedCredentialConfig {
            name: Some("kubernetes-warden-demo".to_owned()),
            issuer: format!("{URL_PLACEHOLDER}/_federation"),
            subject: DEMO_FEDERATED_SUBJECT.to_owned(),
            audiences: default_audiences(),
        });
        TenantsConfig {
            tenants: vec![TenantConfig {
                tenant_id: DEMO_TENANT_ID.to_owned(),
                domain: DEMO_DOMAIN.to_owned(),
                display_name: Some("Contoso".to_owned()),
                apps: vec![
                    full,
                    app(
                        "warden-demo-no-role",
                        DEMO_NO_ROLE_CLIENT_ID,
                        "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f",
                        &[],
                        &[EXCHANGE_ADMINISTRATOR_ROLE],
                    ),
                    app(
                        "warden-demo-no-wids",
                        DEMO_NO_WIDS_CLIENT_ID,
                        "d3e4f5a6-b7c8-4d9e-8f1a-2b3c4d5e6f70",
                        &[EXCHANGE_MANAGE_AS_APP],
                        &[],
                    ),
                    app(
                        "warden-demo-reader",
                        DEMO_READER_CLIENT_ID,
                        "a4b5c6d7-e8f9-4a0b-9c1d-2e3f4a5b6c7d",
                        &[EXCHANGE_MANAGE_AS_APP],
                        &[GLOBAL_READER_ROLE],
                    ),
                ],
                managed_identities: vec![
                    ManagedIdentityConfig {
                        name: Some("warden-vm".to_owned()),
                        client_id: DEMO_MANAGED_IDENTITY_CLIENT_ID.to_owned(),
                        object_id: "e4f5a6b7-c8d9-4e0f-9a2b-3c4d5e6f7a81".to_owned(),
                        resource_id: Some(
                            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/warden/providers/Microsoft.Compute/virtualMachines/warden-vm".to_owned(),
                        ),
                        roles: vec![EXCHANGE_MANAGE_AS_APP.to_owned()],
                        wids: vec![EXCHANGE_ADMINISTRATOR_ROLE.to_owned()],
                    },
                    ManagedIdentityConfig {
                        name: Some("warden-user-assigned".to_owned()),
                        client_id: "8d3c6f1a-5b7e-4a9c-8dad-3e4f5a6b7c84".to_owned(),
                        object_id: "f5a6b7c8-d9e0-4f1a-8b3c-4d5e6f7a8b92".to_owned(),
                        resource_id: Some(
                            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/warden/providers/Microsoft.ManagedIdentity/userAssignedIdentities/warden-user-assigned".to_owned(),
                        ),
                        roles: Vec::new(),
                        wids: Vec::new(),
                    },
                ],
                management_scopes: Vec::new(),
                administrative_units: Vec::new(),
                users: vec![
                    demo_user("helpdesk", "Helpdesk Agent", "2b6d8f0a-1c3e-4a5b-8d7f-9e0a1b2c3d41", &["Helpdesk"]),
                    demo_user("lead", "Team Lead", "3c7e9a1b-2d4f-4b6c-9e8a-0f1b2c3d4e52", &["Leads"]),
                    demo_user("outsider", "Out Sider", "4d8f0b2c-3e5a-4c7d-8f9b-1a2c3d4e5f63", &[]),
                ],
                groups: vec![
                    GroupConfig {
                        name: "Helpdesk".to_owned(),
                        object_id: "5e9a1c3d-4f6b-4d8e-9a0c-2b3d4e5f6a74".to_owned(),
                    },
                    GroupConfig {
                        name: "Leads".to_owned(),
                        object_id: "6f0b2d4e-5a7c-4e9f-8b1d-3c4e5f6a7b85".to_owned(),
                    },
                ],
                service_app: Some(ServiceAppConfig {
                    name: Some("warden-serve".to_owned()),
                    client_id: DEMO_SERVICE_CLIENT_ID.to_owned(),
                    client_secret: None,
                    app_id_uri: None,
                    redirect_uris: vec![DEMO_SERVICE_REDIRECT_URI.to_owned()],
                    scopes: default_exposed_scopes(),
                    app_roles: vec![AppRoleConfig {
                        value: DEMO_OPERATOR_ROLE.to_owned(),
                        id: "7a1c3e5f-6b8d-4f0a-9c2e-4d5f6a7b8c96".to_owned(),
                    }],
                    role_assignments: vec![AppRoleAssignmentConfig {
                        principal: "Leads".to_owned(),
                        role: DEMO_OPERATOR_ROLE.to_owned(),
                    }],
                    // Stated, not left to Entra's default (v1): warden serve checks a v2.0
                    // token's `aud` (its client id) and `azp`; it accepts v1.0 too.
                    access_token_version: Some(2),
                }),
                public_client: Some(PublicClientConfig {
                    name: Some("warden-cli".to_owned()),
                    client_id: DEMO_PUBLIC_CLIENT_ID.to_owned(),
                    redirect_uris: vec!["http://127.0.0.1/".to_owned()],
                }),
                consents: Vec::new(),
                mailboxes: None,
            }],
            base_dir: None,
            source: None,
        }
    }

    /// Registers the fleet's multi-tenant app (`warden-fleet`, [`FLEET_CLIENT_ID`]: one client
    /// secret and one generated certificate, `Exchange.ManageAsApp` + Exchange Administrator) in
    /// the first tenant, its home, and appends `fleet.tenants` generated tenants after the
    /// existing ones, each consenting to it (the same grants) unless listed in
    /// `fleet.unconsented`. Errors name an index out of range.
    pub fn add_fleet(&mut self, fleet: &FleetConfig) -> Result<()> {
        if let Some(bad) = fleet
            .unconsented
            .iter()
            .find(|i| **i == 0 || **i > fleet.tenants)
        {
            return Err(Error::InvalidConfig {
                path: self.source.clone(),
                reason: format!(
                    "unconsented tenant {bad} is not between 1 and the {} generated tenants",
                    fleet.tenants
                ),
            });
        }
        let home = self
            .tenants
            .first_mut()
            .ok_or_else(|| Error::InvalidConfig {
                path: self.source.clone(),
                reason: "a fleet needs a first tenant to register its app in".to_owned(),
            })?;
        home.apps.push(AppConfig {
            name: "warden-fleet".to_owned(),
            client_id: FLEET_CLIENT_ID.to_owned(),
            service_principal_id: Some(FleetConfig::service_principal_id(0)),
            secrets: vec![SecretConfig::default()],
            certificates: vec![CertificateConfig::default()],
            roles: vec![EXCHANGE_MANAGE_AS_APP.to_owned()],
            wids: vec![EXCHANGE_ADMINISTRATOR_ROLE.to_owned()],
            federated_credentials: Vec::new(),
            role_assignments: Vec::new(),
            multi_tenant: true,
        });
        for index in 1..=fleet.tenants {
            let consents = if fleet.unconsented.contains(&index) {
                Vec::new()
            } else {
                vec![ConsentConfig {
                    client_id: FLEET_CLIENT_ID.to_owned(),
                    service_principal_id: Some(FleetConfig::service_principal_id(index)),
                    roles: vec![EXCHANGE_MANAGE_AS_APP.to_owned()],
                    wids: vec![EXCHANGE_ADMINISTRATOR_ROLE.to_owned()],
                }]
            };
            self.tenants.push(TenantConfig {
                tenant_id: FleetConfig::tenant_id(index),
                domain: FleetConfig::domain(index),
                display_name: Some(format!("Tenant {index:03}")),
                apps: Vec::new(),
                managed_identities: Vec::new(),
                management_scopes: Vec::new(),
                administrative_units: Vec::new(),
                users: Vec::new(),
                groups: Vec::new(),
                service_app: None,
                public_client: None,
                consents,
                mailboxes: Some(fleet.mailboxes),
            });
        }
        Ok(())
    }

    /// Checks what TOML cannot: GUID syntax, domain syntax, uniqueness, non-empty names.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: String| Error::InvalidConfig {
            path: self.source.clone(),
            reason,
        };
        if self.tenants.is_empty() {
            return Err(fail("no [[tenant]] is defined".to_owned()));
        }
        // Apps that consents may name: every registration of every tenant, with how many
        // tenants register it (a consented app needs exactly one home).
        let mut registered: std::collections::HashMap<uuid::Uuid, usize> =
            std::collections::HashMap::new();
        for app in self.tenants.iter().flat_map(|t| &t.apps) {
            if let Some(cid) = parse_guid(&app.client_id) {
                *registered.entry(cid).or_default() += 1;
            }
        }
        // Sets: a fleet has a thousand tenants.
        let mut tenant_ids = std::collections::HashSet::new();
        let mut domains = std::collections::HashSet::new();
        let mut mi_ids = Vec::new();
        for (ti, tenant) in self.tenants.iter().enumerate() {
            let at = format!("tenant #{} ({})", ti + 1, tenant.domain);
            let tid = parse_guid(&tenant.tenant_id).ok_or_else(|| {
                fail(format!(
                    "{at}: tenant_id '{}' is not a GUID",
                    tenant.tenant_id
                ))
            })?;
            if !is_dns_name(&tenant.domain) {
                return Err(fail(format!(
                    "{at}: domain '{}' is not a DNS name",
                    tenant.domain
                )));
            }
            if !tenant_ids.insert(tid) {
                return Err(fail(format!("{at}: duplicate tenant_id {tid}")));
            }
            let domain = tenant.domain.to_ascii_lowercase();
            if !domains.insert(domain.clone()) {
                return Err(fail(format!("{at}: duplicate domain {domain}")));
            }

            for scope in &tenant.management_scopes {
                crate::exchange::rbac::check_scope_filter(&scope.recipient_restriction_filter)
                    .map_err(|why| {
                        fail(format!("{at}, management_scope '{}': {why}", scope.name))
                    })?;
            }
            let mut client_ids = Vec::new();
            for app in &tenant.apps {
                let at = format!("{at}, app '{}'", app.name);
                if app.name.trim().is_empty() {
                    return Err(fail(format!("{at}: name is empty")));
                }
                let cid = parse_guid(&app.client_id).ok_or_else(|| {
                    fail(format!("{at}: client_id '{}' is not a GUID", app.client_id))
                })?;
                if client_ids.contains(&cid) {
                    return Err(fail(format!("{at}: duplicate client_id {cid}")));
                }
                client_ids.push(cid);
                if let Some(sp) = &app.service_principal_id
                    && parse_guid(sp).is_none()
                {
                    return Err(fail(format!(
                        "{at}: service_principal_id '{sp}' is not a GUID"
                    )));
                }
                for wid in &app.wids {
                    if parse_guid(wid).is_none() {
                        return Err(fail(format!(
                            "{at}: wids entry '{wid}' is not a role template GUID"
                        )));
                    }
                }
                for assignment in &app.role_assignments {
                    crate::exchange::rbac::check_assignment(tenant, assignment)
                        .map_err(|why| fail(format!("{at}: {why}")))?;
                }
                for secret in &app.secrets {
                    if secret.value.as_deref().is_some_and(str::is_empty) {
                        return Err(fail(format!("{at}: a secret value is empty")));
                    }
                }
                for fic in &app.federated_credentials {
                    if fic.issuer.is_empty() || fic.subject.is_empty() || fic.audiences.is_empty() {
                        return Err(fail(format!(
                            "{at}: a federated_credential needs issuer, subject and at least one audience"
                        )));
                    }
                }
                for cert in &app.certificates {
                    if cert.cert_pem.is_some()
                        && (cert.subject.is_some() || cert.valid_days.is_some())
                    {
                        return Err(fail(format!(
                            "{at}: a certificate is either generated (subject, valid_days) or given (cert_pem), not both"
                        )));
                    }
                    if cert.valid_days == Some(0) {
                        return Err(fail(format!("{at}: valid_days must be at least 1")));
                    }
                }
            }
            for mi in &tenant.managed_identities {
                let at = format!("{at}, managed identity {}", mi.client_id);
                let cid = parse_guid(&mi.client_id)
                    .ok_or_else(|| fail(format!("{at}: client_id is not a GUID")))?;
                if parse_guid(&mi.object_id).is_none() {
                    return Err(fail(format!(
                        "{at}: object_id '{}' is not a GUID",
                        mi.object_id
                    )));
                }
                if mi_ids.contains(&cid) || client_ids.contains(&cid) {
                    return Err(fail(format!("{at}: duplicate client_id {cid}")));
                }
                mi_ids.push(cid);
            }
            client_ids.extend(mi_ids.iter().copied());
            check_people(tenant, &mut client_ids).map_err(|why| fail(format!("{at}: {why}")))?;
            for consent in &tenant.consents {
                let at = format!("{at}, consent to {}", consent.client_id);
                let cid = parse_guid(&consent.client_id)
                    .ok_or_else(|| fail(format!("{at}: client_id is not a GUID")))?;
                if client_ids.contains(&cid) {
                    return Err(fail(format!(
                        "{at}: the app is registered in this tenant (or consented twice); a consent is for an app of another tenant"
                    )));
                }
                client_ids.push(cid);
                match registered.get(&cid) {
                    None => {
                        return Err(fail(format!(
                            "{at}: no [[tenant.app]] in this file has that client_id"
                        )));
                    }
                    Some(homes) if *homes > 1 => {
                        return Err(fail(format!(
                            "{at}: {homes} tenants register that client_id; an app id is unique across Entra, so register the app in its home tenant only"
                        )));
                    }
                    Some(_) => {}
                }
                for id in consent.service_principal_id.iter().chain(&consent.wids) {
                    if parse_guid(id).is_none() {
                        return Err(fail(format!("{at}: '{id}' is not a GUID")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Resolves a configured path against the TOML file's folder.
    pub(crate) fn resolve(&self, path: &Path) -> PathBuf {
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_owned(),
        }
    }
}

/// Checks a tenant's users, groups, service app and public client; `client_ids` are the ids
/// already taken (apps, managed identities) and receive the new ones.
fn check_people(tenant: &TenantConfig, client_ids: &mut Vec<uuid::Uuid>) -> Result<(), String> {
    let mut group_ids = Vec::new();
    for group in &tenant.groups {
        if group.name.trim().is_empty() {
            return Err("a group's name is empty".to_owned());
        }
        let id = parse_guid(&group.object_id).ok_or_else(|| {
            format!(
                "group '{}': object_id '{}' is not a GUID",
                group.name, group.object_id
            )
        })?;
        let same_name = tenant
            .groups
            .iter()
            .filter(|g| g.name.eq_ignore_ascii_case(&group.name))
            .count();
        if group_ids.contains(&id) || same_name > 1 {
            return Err(format!("group '{}' is defined twice", group.name));
        }
        group_ids.push(id);
    }
    let mut user_ids = Vec::new();
    for user in &tenant.users {
        let at = format!("user '{}'", user.upn);
        let domain_ok = user
            .upn
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && is_dns_name(domain));
        if !domain_ok {
            return Err(format!("{at}: upn must be name@domain"));
        }
        if tenant
            .users
            .iter()
            .filter(|u| u.upn.eq_ignore_ascii_case(&user.upn))
            .count()
            > 1
        {
            return Err(format!("{at} is defined twice"));
        }
        if user.password.as_deref().is_some_and(str::is_empty) {
            return Err(format!(
                "{at}: password is empty (leave it out for a random one)"
            ));
        }
        if let Some(oid) = &user.object_id {
            let id =
                parse_guid(oid).ok_or_else(|| format!("{at}: object_id '{oid}' is not a GUID"))?;
            if user_ids.contains(&id) || group_ids.contains(&id) {
                return Err(format!("{at}: duplicate object_id {id}"));
            }
            user_ids.push(id);
        }
        for name in &user.groups {
            if !tenant
                .groups
                .iter()
                .any(|g| g.name.eq_ignore_ascii_case(name))
            {
                return Err(format!(
                    "{at}: group '{name}' is not defined in this tenant's groups"
                ));
            }
        }
    }
    let mut new_client = |what: &str, client_id: &str| -> Result<(), String> {
        let id = parse_guid(client_id)
            .ok_or_else(|| format!("{what}: client_id '{client_id}' is not a GUID"))?;
        if client_ids.contains(&id) {
            return Err(format!("{what}: duplicate client_id {id}"));
        }
        client_ids.push(id);
        Ok(())
    };
    if let Some(app) = &tenant.service_app {
        new_client("service_app", &app.client_id)?;
        if app.client_secret.as_deref().is_some_and(str::is_empty) {
            return Err(
                "service_app: client_secret is empty (leave it out for a random one)".to_owned(),
            );
        }
        if app
            .app_id_uri
            .as_deref()
            .is_some_and(|u| u.trim().is_empty() || u.ends_with('/'))
        {
            return Err(
                "service_app: app_id_uri must be non-empty without a trailing '/'".to_owned(),
            );
        }
        for uri in &app.redirect_uris {
            crate::identity::redirect::check_registered(uri)
                .map_err(|why| format!("service_app: redirect URI '{uri}': {why}"))?;
        }
        if let Some(version) = app.access_token_version
            && !matches!(version, 1 | 2)
        {
            return Err(format!(
                "service_app: access_token_version {version} is neither 1 nor 2 (leave it out for Entra's default, 1)"
            ));
        }
        for scope in &app.scopes {
            if scope.is_empty() || scope == ".default" || scope.contains([' ', '/']) {
                return Err(format!(
                    "service_app: scope '{scope}' must be a name without spaces or '/'"
                ));
            }
        }
        for role in &app.app_roles {
            if role.value.trim().is_empty() || role.value.contains(' ') {
                return Err(format!(
                    "service_app: app role value '{}' is empty or has a space",
                    role.value
                ));
            }
            if parse_guid(&role.id).is_none() {
                return Err(format!(
                    "service_app: app role '{}': id '{}' is not a GUID",
                    role.value, role.id
                ));
            }
        }
        for assignment in &app.role_assignments {
            if !app.app_roles.iter().any(|r| r.value == assignment.role) {
                return Err(format!(
                    "service_app: role assignment names role '{}', which app_roles does not define",
                    assignment.role
                ));
            }
            let known = tenant
                .users
                .iter()
                .any(|u| u.upn.eq_ignore_ascii_case(&assignment.principal))
                || tenant
                    .groups
                    .iter()
                    .any(|g| g.name.eq_ignore_ascii_case(&assignment.principal));
            if !known {
                return Err(format!(
                    "service_app: role assignment principal '{}' is neither a user's upn nor a group's name",
                    assignment.principal
                ));
            }
        }
    }
    if let Some(client) = &tenant.public_client {
        new_client("public_client", &client.client_id)?;
        for uri in &client.redirect_uris {
            crate::identity::redirect::check_registered(uri)
                .map_err(|why| format!("public_client: redirect URI '{uri}': {why}"))?;
        }
    }
    Ok(())
}

/// Parses a hyphenated GUID (`8-4-4-4-12` hex), case-insensitively.
pub(crate) fn parse_guid(text: &str) -> Option<uuid::Uuid> {
    if text.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(text).ok()
}

/// A DNS name as Entra accepts for a tenant: at least two labels of letters, digits and hyphens.
pub(crate) fn is_dns_name(text: &str) -> bool {
    if text.len() > 253 || !text.contains('.') {
        return false;
    }
    text.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_valid() {
        TenantsConfig::demo().validate().unwrap();
    }

    #[test]
    fn unknown_field_is_refused_with_location() {
        let err = TenantsConfig::from_toml_str(
            "[[tenant]]\ntenant_id = \"8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d\"\ndomain = \"a.example\"\nsecrett = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("<inline>") && err.contains("secrett"), "{err}");
    }

    #[test]
    fn bad_guid_names_app() {
        let err = TenantsConfig::from_toml_str(
            "[[tenant]]\ntenant_id = \"8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d\"\ndomain = \"a.example\"\n\
             [[tenant.app]]\nname = \"x\"\nclient_id = \"nope\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("app 'x'") && err.contains("not a GUID"),
            "{err}"
        );
    }

    #[test]
    fn expiry_accepts_native_and_text() {
        let config = TenantsConfig::from_toml_str(
            "[[tenant]]\ntenant_id = \"8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d\"\ndomain = \"a.example\"\n\
             [[tenant.app]]\nname = \"x\"\nclient_id = \"4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40\"\n\
             [[tenant.app.secret]]\nvalue = \"a\"\nexpires = 2020-01-01T00:00:00Z\n\
             [[tenant.app.secret]]\nvalue = \"b\"\nexpires = \"2031-01-01T00:00:00+01:00\"\n",
        )
        .unwrap();
        let secrets = &config.tenants[0].apps[0].secrets;
        assert_eq!(secrets[0].expires.unwrap().year(), 2020);
        assert_eq!(
            secrets[1]
                .expires
                .unwrap()
                .to_offset(time::UtcOffset::UTC)
                .year(),
            2030
        );
        assert!(!format!("{config:?}").contains("\"a\""));
    }

    #[test]
    fn fleet_tenants_are_deterministic_and_consented_unless_listed() {
        let mut config = TenantsConfig::demo();
        config
            .add_fleet(&FleetConfig {
                tenants: 12,
                unconsented: vec![3, 7],
                mailboxes: 2,
            })
            .unwrap();
        config.validate().unwrap();
        assert_eq!(config.tenants.len(), 13);
        assert_eq!(
            config.tenants[0].tenant_id, DEMO_TENANT_ID,
            "the demo tenant stays first"
        );
        assert!(
            config.tenants[0]
                .apps
                .iter()
                .any(|a| a.client_id == FLEET_CLIENT_ID)
        );
        let t7 = &config.tenants[7];
        assert_eq!(t7.domain, "tenant-007.onmicrosoft.com");
        assert_eq!(t7.tenant_id, "f1ee7000-0000-4000-8000-000000000007");
        assert!(t7.consents.is_empty());
        assert_eq!(config.tenants[12].consents[0].client_id, FLEET_CLIENT_ID);
        assert_eq!(config.tenants[12].mailboxes, Some(2));
        let err = TenantsConfig::demo()
            .add_fleet(&FleetConfig {
                tenants: 2,
                unconsented: vec![3],
                mailboxes: 1,
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("unconsented tenant 3"), "{err}");
    }

    #[test]
    fn consent_must_name_an_app_of_another_tenant() {
        let two = |consent: &str| {
            format!(
                "[[tenant]]\ntenant_id = \"8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d\"\ndomain = \"a.example\"\n\
                 [[tenant.app]]\nname = \"x\"\nclient_id = \"4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40\"\n\
                 [[tenant]]\ntenant_id = \"0b5e3c2a-9d8f-4e7a-8c6b-5a4d3e2f1a09\"\ndomain = \"b.example\"\n\
                 [[tenant.consent]]\nclient_id = \"{consent}\"\n"
            )
        };
        TenantsConfig::from_toml_str(&two("4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40")).unwrap();
        let err = TenantsConfig::from_toml_str(&two("5a0f3c8d-2e4b-4d6f-9a7c-0b1d2e3f4a51"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no [[tenant.app]]"), "{err}");
        let own = "[[tenant]]\ntenant_id = \"8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d\"\ndomain = \"a.example\"\n\
             [[tenant.app]]\nname = \"x\"\nclient_id = \"4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40\"\n\
             [[tenant.consent]]\nclient_id = \"4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40\"\n";
        let err = TenantsConfig::from_toml_str(own).unwrap_err().to_string();
        assert!(err.contains("registered in this tenant"), "{err}");
        // Two homes for one app id: which registration's credentials would a consent trust?
        let twice = format!(
            "{}[[tenant]]\ntenant_id = \"1c6f4d3b-0e9a-4f8b-9d7c-6b5e4f3a2b10\"\ndomain = \"c.example\"\n\
             [[tenant.app]]\nname = \"x\"\nclient_id = \"4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40\"\n",
            two("4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40")
        );
        let err = TenantsConfig::from_toml_str(&twice)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 tenants register that client_id"), "{err}");
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("contoso.onmicrosoft.com"));
        assert!(!is_dns_name("invalid_tenant"));
        assert!(!is_dns_name("contoso"));
        assert!(!is_dns_name("-a.b"));
    }
}
