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
    ///   second (user-assigned) with neither.
    ///
    /// Secrets and PFX passwords are random per start.
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
            }],
            base_dir: None,
            source: None,
        }
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
        let mut tenant_ids = Vec::new();
        let mut domains = Vec::new();
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
            if tenant_ids.contains(&tid) {
                return Err(fail(format!("{at}: duplicate tenant_id {tid}")));
            }
            tenant_ids.push(tid);
            let domain = tenant.domain.to_ascii_lowercase();
            if domains.contains(&domain) {
                return Err(fail(format!("{at}: duplicate domain {domain}")));
            }
            domains.push(domain);

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
    fn dns_names() {
        assert!(is_dns_name("contoso.onmicrosoft.com"));
        assert!(!is_dns_name("invalid_tenant"));
        assert!(!is_dns_name("contoso"));
        assert!(!is_dns_name("-a.b"));
    }
}
