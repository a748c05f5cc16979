//! RBAC for Applications in Exchange Online: an app may get its Exchange permissions from an
//! Exchange management role assigned to its service principal (`New-ManagementRoleAssignment
//! -App …`, or membership of a role group), optionally scoped by a management scope or an
//! administrative unit, instead of an Entra role in `wids`. An empty `wids` is then fine.
//!
//! Sources: "App-only authentication … Assign Microsoft Entra roles / custom role groups to the
//! application" (<https://learn.microsoft.com/powershell/exchange/app-only-auth-powershell-v2>)
//! and "Role Based Access Control for Applications in Exchange Online"
//! (<https://learn.microsoft.com/exchange/permissions-exo/application-rbac>).
//!
//! Our choices, where the sources say nothing we could read offline: which of our cmdlets each
//! role holds (a subset of the real role entries, by the roles' documented purpose), and that a
//! scope limits *writes* to the objects it covers (a scope is a write scope; reads stay
//! organisation-wide). A write outside every scope fails as Exchange fails it: "The operation on
//! mailbox … failed because it's out of the current user's write scope", class
//! `System.InvalidOperationException` with no error id (seen in EXO output quoted at
//! <https://www.easy365manager.com/the-operation-on-mailbox-failed-because-its-out-of-the-current-users-write-scope/>).

use crate::config::{RoleAssignmentConfig, TenantConfig};
use crate::directory::Tenant;

use super::cmdlets::ExoError;
use super::filter::Filter;
use super::store::{Kinds, Org, Recipient};

/// Management roles and the cmdlets (of those exosim implements) each holds.
const ROLES: &[(&str, &[&str])] = &[
    (
        "Mail Recipients",
        &[
            "Get-Mailbox",
            "Set-Mailbox",
            "Get-Recipient",
            "Get-MailboxStatistics",
            "Get-MailboxPermission",
            "Add-MailboxPermission",
            "Remove-MailboxPermission",
            "Get-RecipientPermission",
            "Add-RecipientPermission",
            "Remove-RecipientPermission",
        ],
    ),
    (
        "Mail Recipient Creation",
        &[
            "New-Mailbox",
            "Remove-Mailbox",
            "Get-Mailbox",
            "Get-Recipient",
            "Get-AcceptedDomain",
        ],
    ),
    (
        "Distribution Groups",
        &[
            "Get-DistributionGroup",
            "Get-DistributionGroupMember",
            "Add-DistributionGroupMember",
            "Remove-DistributionGroupMember",
            "Get-Recipient",
        ],
    ),
    (
        "View-Only Recipients",
        &[
            "Get-Mailbox",
            "Get-Recipient",
            "Get-MailboxStatistics",
            "Get-MailboxPermission",
            "Get-RecipientPermission",
            "Get-DistributionGroup",
            "Get-DistributionGroupMember",
        ],
    ),
    (
        "View-Only Configuration",
        &["Get-OrganizationConfig", "Get-AcceptedDomain"],
    ),
    (
        "Organization Configuration",
        &["Get-OrganizationConfig", "Set-OrganizationConfig"],
    ),
];

/// Role groups and their roles.
const ROLE_GROUPS: &[(&str, &[&str])] = &[
    (
        "Organization Management",
        &[
            "Mail Recipients",
            "Mail Recipient Creation",
            "Distribution Groups",
            "View-Only Recipients",
            "View-Only Configuration",
            "Organization Configuration",
        ],
    ),
    (
        "Recipient Management",
        &[
            "Mail Recipients",
            "Mail Recipient Creation",
            "Distribution Groups",
        ],
    ),
    (
        "View-Only Organization Management",
        &["View-Only Recipients", "View-Only Configuration"],
    ),
];

/// The roles a role or role group name stands for.
fn roles_of(name: &str) -> Option<Vec<&'static str>> {
    if let Some((role, _)) = ROLES.iter().find(|(r, _)| r.eq_ignore_ascii_case(name)) {
        return Some(vec![*role]);
    }
    ROLE_GROUPS
        .iter()
        .find(|(g, _)| g.eq_ignore_ascii_case(name))
        .map(|(_, roles)| roles.to_vec())
}

/// Where a grant's writes may land.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// A management scope: recipients its filter matches.
    Filter { name: String, filter: String },
    /// An administrative unit: its members.
    Unit { name: String, members: Vec<String> },
}

/// One role of an assignment, with its scope.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    role: &'static str,
    scope: Option<Scope>,
}

impl Grant {
    fn allows(&self, cmdlet: &str) -> bool {
        ROLES
            .iter()
            .find(|(r, _)| *r == self.role)
            .is_some_and(|(_, cmdlets)| cmdlets.iter().any(|c| c.eq_ignore_ascii_case(cmdlet)))
    }

    /// Whether `recipient` of `org` is inside this grant's scope.
    fn covers(&self, org: &Org, recipient: Recipient) -> bool {
        let (obj, addresses) = match recipient {
            Recipient::Mailbox(i) => {
                let m = &org.mailboxes[i];
                (
                    super::obj::mailbox(org, m),
                    vec![m.primary_smtp.as_str(), m.upn.as_str()],
                )
            }
            Recipient::Group(i) => {
                let g = &org.groups[i];
                (super::obj::group(org, g), vec![g.primary_smtp.as_str()])
            }
        };
        match &self.scope {
            None => true,
            Some(Scope::Unit { members, .. }) => members
                .iter()
                .any(|m| addresses.iter().any(|a| m.eq_ignore_ascii_case(a))),
            Some(Scope::Filter { filter, .. }) => {
                let properties: Vec<&str> = obj.iter().map(|(name, _)| *name).collect();
                // A filter that does not parse covers nothing (refused at config load).
                Filter::parse(filter, &properties).is_ok_and(|f| f.matches(&obj))
            }
        }
    }
}

/// What a write cmdlet acts on, so its scope is checked against that object: `None` for the
/// cmdlets that act on no existing recipient (`New-Mailbox` creates one,
/// `Set-OrganizationConfig` changes the organisation).
fn write_target(cmdlet: &str) -> Option<Kinds> {
    const GROUP: &[&str] = &[
        "Add-DistributionGroupMember",
        "Remove-DistributionGroupMember",
    ];
    const NONE: &[&str] = &["New-Mailbox", "Set-OrganizationConfig"];
    if GROUP.iter().any(|c| c.eq_ignore_ascii_case(cmdlet)) {
        Some(Kinds::Groups)
    } else if NONE.iter().any(|c| c.eq_ignore_ascii_case(cmdlet)) {
        None
    } else {
        // Set-/Remove-Mailbox and the permission cmdlets act on a mailbox.
        Some(Kinds::Mailboxes)
    }
}

/// The properties a management scope's filter may name: those of a mailbox or a group, read
/// from a one-mailbox organisation so the list is the objects' own, never a copy.
fn scope_filter_properties() -> &'static [&'static str] {
    static PROPERTIES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        let org = Org::generate(
            "00000000-0000-4000-8000-000000000000",
            "scope.example",
            0,
            1,
        );
        let mut names: Vec<&'static str> = super::obj::mailbox(&org, &org.mailboxes[0])
            .iter()
            .chain(
                org.groups
                    .first()
                    .map(|g| super::obj::group(&org, g))
                    .unwrap_or_default()
                    .iter(),
            )
            .map(|(name, _)| *name)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    });
    &PROPERTIES
}

/// Checks a `[[tenant.management_scope]]`'s filter as `New-ManagementScope` would: it parses,
/// and names only recipient properties. A filter that fails here would cover nothing at run
/// time, silently; so it is refused when the configuration loads.
pub(crate) fn check_scope_filter(filter: &str) -> Result<(), String> {
    Filter::parse(filter, scope_filter_properties())
        .map(|_| ())
        .map_err(|e| {
            format!(
                "recipient_restriction_filter is not a usable OPATH filter: {}",
                e.0
            )
        })
}

/// Checks an assignment against its tenant: a known role or role group, and at most one scope
/// that the tenant defines.
pub(crate) fn check_assignment(
    tenant: &TenantConfig,
    assignment: &RoleAssignmentConfig,
) -> Result<(), String> {
    if roles_of(&assignment.role).is_none() {
        let known: Vec<&str> = ROLES
            .iter()
            .map(|(r, _)| *r)
            .chain(ROLE_GROUPS.iter().map(|(g, _)| *g))
            .collect();
        return Err(format!(
            "role_assignment role '{}' is not a role or role group exosim knows ({})",
            assignment.role,
            known.join(", ")
        ));
    }
    match (
        &assignment.management_scope,
        &assignment.administrative_unit,
    ) {
        (Some(_), Some(_)) => {
            Err("a role_assignment takes management_scope or administrative_unit, not both".into())
        }
        (Some(scope), None)
            if !tenant
                .management_scopes
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(scope)) =>
        {
            Err(format!(
                "management_scope '{scope}' is not a [[tenant.management_scope]]"
            ))
        }
        (None, Some(unit))
            if !tenant
                .administrative_units
                .iter()
                .any(|u| u.name.eq_ignore_ascii_case(unit)) =>
        {
            Err(format!(
                "administrative_unit '{unit}' is not a [[tenant.administrative_unit]]"
            ))
        }
        _ => Ok(()),
    }
}

/// The grants of app `appid`'s role assignments in `tenant`.
pub(crate) fn grants_of(tenant: &Tenant, appid: &str) -> Vec<Grant> {
    let Some(app) = tenant.app(appid) else {
        return Vec::new();
    };
    let mut grants = Vec::new();
    for assignment in &app.role_assignments {
        let scope = if let Some(name) = &assignment.management_scope {
            tenant
                .management_scopes
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(name))
                .map(|s| Scope::Filter {
                    name: s.name.clone(),
                    filter: s.recipient_restriction_filter.clone(),
                })
        } else if let Some(name) = &assignment.administrative_unit {
            tenant
                .administrative_units
                .iter()
                .find(|u| u.name.eq_ignore_ascii_case(name))
                .map(|u| Scope::Unit {
                    name: u.name.clone(),
                    members: u.members.clone(),
                })
        } else {
            None
        };
        for role in roles_of(&assignment.role).unwrap_or_default() {
            grants.push(Grant {
                role,
                scope: scope.clone(),
            });
        }
    }
    grants
}

/// Whether any grant allows `cmdlet`.
pub(crate) fn allows(grants: &[Grant], cmdlet: &str) -> bool {
    grants.iter().any(|g| g.allows(cmdlet))
}

/// The write-scope refusal for `cmdlet` on the bound `identity` when the caller may run it
/// only through scoped grants. The target is resolved as what the cmdlet acts on
/// ([`write_target`]); a target outside every scope is refused, and so is one that cannot be
/// resolved at all (fail closed: a scoped caller never writes to what the scope check could
/// not see). `None` when the cmdlet is a read, an unscoped grant or a directory role allows
/// it, or the cmdlet acts on no existing recipient.
pub(crate) fn write_scope_refusal(
    grants: &[Grant],
    by_directory_role: bool,
    cmdlet: &str,
    write: bool,
    identity: Option<&str>,
    org: &Org,
) -> Option<ExoError> {
    if !write || by_directory_role {
        return None;
    }
    let allowing: Vec<&Grant> = grants.iter().filter(|g| g.allows(cmdlet)).collect();
    if allowing.is_empty() || allowing.iter().any(|g| g.scope.is_none()) {
        return None;
    }
    let kinds = write_target(cmdlet)?;
    let identity = identity.unwrap_or_default();
    let resolved = match org.resolve(identity, kinds, false).as_deref() {
        Ok([one]) => Some(*one),
        _ => None,
    };
    if resolved.is_some_and(|r| allowing.iter().any(|g| g.covers(org, r))) {
        return None;
    }
    let (noun, name) = match resolved {
        Some(Recipient::Mailbox(i)) => ("mailbox", org.mailboxes[i].name.as_str()),
        Some(Recipient::Group(i)) => ("object", org.groups[i].name.as_str()),
        None => ("object", identity.trim()),
    };
    let scopes: Vec<String> = allowing
        .iter()
        .filter_map(|g| match &g.scope {
            Some(Scope::Filter { name, .. }) => Some(format!("management scope '{name}'")),
            Some(Scope::Unit { name, .. }) => Some(format!("administrative unit '{name}'")),
            None => None,
        })
        .collect();
    tracing::debug!(
        cmdlet,
        ?scopes,
        resolved = resolved.is_some(),
        "write outside the app's scopes"
    );
    Some(ExoError::task(
        "",
        "System.InvalidOperationException",
        format!(
            "The operation on {noun} \"{name}\" failed because it's out of the current user's write scope. The action '{cmdlet}' can't be performed on the object '{name}' because the object is outside of the current user's write scope."
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_groups_expand_and_roles_hold_their_cmdlets() {
        let grant = |role| Grant { role, scope: None };
        assert!(grant("Mail Recipients").allows("set-mailbox"));
        assert!(!grant("Mail Recipients").allows("New-Mailbox"));
        assert!(!grant("View-Only Recipients").allows("Set-Mailbox"));
        let all = roles_of("organization management").unwrap();
        for spec in super::super::cmdlets::CMDLETS {
            assert!(
                all.iter().any(|r| grant(r).allows(spec.name)),
                "Organization Management lacks {}",
                spec.name
            );
        }
        assert!(roles_of("Nope").is_none());
    }

    #[test]
    fn a_management_scope_filter_that_cannot_work_is_refused_at_load() {
        assert!(check_scope_filter("RecipientTypeDetails -eq 'SharedMailbox'").is_ok());
        assert!(
            check_scope_filter("DisplayName -like 'Sales*' -or PrimarySmtpAddress -like 'a*'")
                .is_ok()
        );
        for (filter, says) in [
            (
                "Departmnet -eq 'Sales'",
                "not a recognized filterable property",
            ),
            ("RecipientTypeDetails -eq", "recipient_restriction_filter"),
            ("", "recipient_restriction_filter"),
        ] {
            let error = check_scope_filter(filter).unwrap_err();
            assert!(error.contains(says), "{filter}: {error}");
        }
        // Through the configuration's own load: the tenant and the scope are named.
        let mut config = crate::config::TenantsConfig::demo();
        config.tenants[0].management_scopes = vec![crate::config::ManagementScopeConfig {
            name: "Broken".into(),
            recipient_restriction_filter: "Departmnet -eq 'Sales'".into(),
        }];
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("management_scope 'Broken'") && error.contains("Departmnet"),
            "{error}"
        );
    }
}
