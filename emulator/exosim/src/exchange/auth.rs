//! Who may call: bearer-token validation (docs/protocol/exo-protocol.md §3.3) and the RBAC table
//! that maps the directory roles in `wids` to the cmdlets they allow (§3.2, §3.4).
//!
//! Checks, in order: a `Bearer` token is present; it is an RS256 JWS signed by this emulator's
//! token key (`kid`/`x5t` match); `iss` is `https://sts.windows.net/{tid}/`; `aud` is an Exchange
//! Online resource of any cloud or its app id (trailing slash tolerated); `nbf`/`exp` hold with
//! [`CLOCK_SKEW_SECS`] of skew; `tid` is the URL's tenant. Any failure is a 401 with a
//! `WWW-Authenticate: Bearer ...` challenge. Then `roles` must hold `Exchange.ManageAsApp` (401),
//! `wids` must hold at least one supported role or the app must hold an Exchange role assignment
//! ([`super::rbac`], RBAC for Applications) (403), and the cmdlet must be allowed (401
//! "User is not allowed to call ...").

use serde_json::Value;

use crate::config::EXCHANGE_MANAGE_AS_APP;
use crate::jose;
use crate::state::Shared;

/// Clock skew tolerated on `nbf`/`exp` of Exchange bearer tokens. The service's value is
/// not known; a small one is the defensive choice (a client must refresh before expiry, not
/// after), and it lets expired-token tests run in seconds. The emulator and its clients share a
/// clock, so no real skew exists here.
pub(crate) const CLOCK_SKEW_SECS: i64 = 5;

/// What a directory role may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Every cmdlet.
    All,
    /// `Get-*` only.
    ReadOnly,
    /// `Get-*` plus the recipient cmdlets (mailboxes, permissions, groups).
    Recipient,
    /// `Get-*` plus `Set-Mailbox`.
    Helpdesk,
}

/// The RBAC table: Entra role template id (as in `wids`), role name, access.
///
/// Exchange Administrator and Global Administrator: all; Global Reader and Security Reader:
/// `Get-*`; Exchange Recipient Administrator: recipient cmdlets and `Get-*` but not
/// `Set-OrganizationConfig`; Helpdesk Administrator: `Get-*` plus `Set-Mailbox`. Compliance and
/// Security Administrator are supported for EXO (DOC-APPONLY) but their EXO cmdlet set is not in
/// our sources, so we assume least privilege: `Get-*` only. Any other `wids` value grants nothing.
pub(crate) const RBAC: &[(&str, &str, Access)] = &[
    (
        "62e90394-69f5-4237-9190-012177145e10",
        "Global Administrator",
        Access::All,
    ),
    (
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
        "Exchange Administrator",
        Access::All,
    ),
    (
        "31392ffb-586c-42d1-9346-e59415a2cc4e",
        "Exchange Recipient Administrator",
        Access::Recipient,
    ),
    (
        "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
        "Global Reader",
        Access::ReadOnly,
    ),
    (
        "5d6b6bb7-de71-4623-b4af-96380a352509",
        "Security Reader",
        Access::ReadOnly,
    ),
    (
        "17315797-102d-40b4-93e0-432062caca18",
        "Compliance Administrator",
        Access::ReadOnly,
    ),
    (
        "194ae4cb-b126-40b2-bd5b-6091b380977d",
        "Security Administrator",
        Access::ReadOnly,
    ),
    (
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",
        "Helpdesk Administrator",
        Access::Helpdesk,
    ),
];

/// Cmdlets an Exchange Recipient Administrator may run besides `Get-*`.
const RECIPIENT_CMDLETS: &[&str] = &[
    "Set-Mailbox",
    "New-Mailbox",
    "Remove-Mailbox",
    "Add-MailboxPermission",
    "Remove-MailboxPermission",
    "Add-RecipientPermission",
    "Remove-RecipientPermission",
    "Add-DistributionGroupMember",
    "Remove-DistributionGroupMember",
];

impl Access {
    pub(crate) fn allows(self, cmdlet: &str) -> bool {
        let read = super::cmdlets::is_read(cmdlet);
        match self {
            Access::All => true,
            Access::ReadOnly => read,
            Access::Recipient => {
                read || RECIPIENT_CMDLETS
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(cmdlet))
            }
            Access::Helpdesk => read || cmdlet.eq_ignore_ascii_case("Set-Mailbox"),
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub appid: String,
    pub has_role: bool,
    /// Access granted by the supported roles in `wids`.
    pub access: Vec<Access>,
    /// Exchange role assignments to the app (RBAC for Applications, [`super::rbac`]).
    pub grants: Vec<super::rbac::Grant>,
    /// The directory roles of the token (`wids`), for Security & Compliance's own table.
    pub wids: Vec<String>,
}

impl Caller {
    pub(crate) fn allows(&self, cmdlet: &str) -> bool {
        self.by_directory_role(cmdlet) || super::rbac::allows(&self.grants, cmdlet)
    }

    /// Whether a supported role in `wids` allows `cmdlet` (organisation-wide).
    pub(crate) fn by_directory_role(&self, cmdlet: &str) -> bool {
        self.access.iter().any(|a| a.allows(cmdlet))
    }

    /// Whether the app has any Exchange permission at all: a supported directory role or a
    /// role assignment.
    pub(crate) fn has_exchange_rbac(&self) -> bool {
        !self.access.is_empty() || !self.grants.is_empty()
    }
}

/// Why a bearer token was refused (the 401 `WWW-Authenticate` kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub String);

/// Validates the `Authorization` header for `tenant_id`.
pub(crate) fn verify(
    shared: &Shared,
    authorization: Option<&str>,
    tenant_id: &str,
    now: i64,
) -> Result<Caller, Refused> {
    verify_for(shared, authorization, tenant_id, now, false)
}

/// [`verify`] for Exchange Online (`compliance` false) or Security & Compliance (true): each
/// accepts only tokens for its own resource, so a token for one is refused by the other.
pub(crate) fn verify_for(
    shared: &Shared,
    authorization: Option<&str>,
    tenant_id: &str,
    now: i64,
    compliance: bool,
) -> Result<Caller, Refused> {
    let Some(header) = authorization else {
        return Err(Refused(
            "The request has no Authorization header.".to_owned(),
        ));
    };
    let token = match header.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("Bearer") && !token.trim().is_empty() =>
        {
            token.trim()
        }
        _ => {
            return Err(Refused(
                "The Authorization header is not a Bearer token.".to_owned(),
            ));
        }
    };
    let jws =
        jose::parse(token).map_err(|e| Refused(format!("The access token is malformed: {e}.")))?;
    let x5t = shared.signing.thumbprints.x5t();
    let alg_ok = jws.header.get("alg").and_then(Value::as_str) == Some("RS256");
    let kid_ok = jws
        .header
        .get("kid")
        .and_then(Value::as_str)
        .is_none_or(|k| k == x5t)
        && jws
            .header
            .get("x5t")
            .and_then(Value::as_str)
            .is_none_or(|k| k == x5t);
    if !alg_ok || !kid_ok || !jws.verify(jose::Alg::Rs256, &shared.signing.public) {
        return Err(Refused("The access token signature is invalid.".to_owned()));
    }
    let claims = &jws.claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    let tid = text("tid").unwrap_or_default();
    if text("iss") != Some(format!("https://sts.windows.net/{tid}/").as_str()) {
        return Err(Refused("The access token issuer is not valid.".to_owned()));
    }
    let aud = text("aud").unwrap_or_default();
    if !crate::identity::find_resource(aud)
        .is_some_and(|(r, _)| r.exchange && r.compliance == compliance)
    {
        let service = if compliance {
            "Security & Compliance"
        } else {
            "Exchange Online"
        };
        return Err(Refused(format!(
            "The access token audience '{aud}' is not valid for {service}."
        )));
    }
    // A token of an older generation was expired early by fault injection.
    let expired_early = text("uti")
        .and_then(crate::identity::issue::token_generation)
        .is_some_and(|g| g != shared.faults.token_generation());
    match number("exp") {
        Some(exp) if exp + CLOCK_SKEW_SECS > now && !expired_early => {}
        _ => return Err(Refused("The access token has expired.".to_owned())),
    }
    if number("nbf").is_some_and(|nbf| nbf > now + CLOCK_SKEW_SECS) {
        return Err(Refused("The access token is not yet valid.".to_owned()));
    }
    if !tid.eq_ignore_ascii_case(tenant_id) {
        return Err(Refused(
            "The access token was issued for another tenant.".to_owned(),
        ));
    }
    let list = |name: &str| -> Vec<String> {
        claims
            .get(name)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let roles = list("roles");
    let wids = list("wids");
    let access = wids
        .iter()
        .filter_map(|w| {
            RBAC.iter()
                .find(|(id, _, _)| id.eq_ignore_ascii_case(w))
                .map(|r| r.2)
        })
        .collect();
    let appid = text("appid").unwrap_or_default().to_owned();
    let grants = match shared.directory.lookup(tid) {
        crate::directory::TenantLookup::Found(tenant) => super::rbac::grants_of(tenant, &appid),
        _ => Vec::new(),
    };
    Ok(Caller {
        appid,
        has_role: roles.iter().any(|r| r == EXCHANGE_MANAGE_AS_APP),
        access,
        grants,
        wids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbac_table() {
        assert!(Access::All.allows("Remove-Mailbox"));
        assert!(Access::ReadOnly.allows("get-mailbox") && !Access::ReadOnly.allows("Set-Mailbox"));
        assert!(Access::Helpdesk.allows("Set-Mailbox") && !Access::Helpdesk.allows("New-Mailbox"));
        assert!(Access::Recipient.allows("Add-DistributionGroupMember"));
        assert!(Access::Recipient.allows("Get-OrganizationConfig"));
        assert!(!Access::Recipient.allows("Set-OrganizationConfig"));
    }
}
