//! Token diagnosis: decode an access token's claims *without validating it* and explain, in
//! plain words, why Exchange Online would refuse it.
//!
//! These are the 401/403 stories of app-only Exchange access: the wrong tenant or cloud, the
//! wrong resource, a missing `Exchange.ManageAsApp` app role (401), a delegated token (`scp`),
//! an expired token. An empty `wids` is a warning, not a failure: the app may hold its Exchange
//! permissions through RBAC for Applications (a role assignment to its service principal, which
//! no token claim shows) rather than an Entra role. Decoding is best effort: an
//! opaque token is reported as such and skipped. It never prints the token or its signature.

use serde::Serialize;
use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The app role Exchange Online requires for app-only access.
pub const EXCHANGE_MANAGE_AS_APP: &str = "Exchange.ManageAsApp";

/// What a 401 that lasts through fresh tokens may mean besides a missing grant: a role,
/// role-group membership or admin consent given recently has not reached Exchange yet.
/// Microsoft documents that role and permission changes can take up to an hour to apply (a
/// figure we could not verify for app-only Exchange RBAC).
pub const GRANT_PROPAGATION: &str = "if the role, role-group membership or consent was granted in the last hour, it may not have reached Exchange yet: wait and run it again";

/// Entra built-in role template ids that Exchange's app-only RBAC recognises (or that admins
/// commonly assign), with their names. Ids are the documented RoleTemplateIDs.
pub const KNOWN_ROLE_TEMPLATES: &[(&str, &str)] = &[
    (
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
        "Exchange Administrator",
    ),
    (
        "62e90394-69f5-4237-9190-012177145e10",
        "Global Administrator",
    ),
    ("f2ef992c-3afb-46b9-b7cf-a126ee74c451", "Global Reader"),
    (
        "17315797-102d-40b4-93e0-432062caca18",
        "Compliance Administrator",
    ),
    (
        "e6d1a23a-da11-4be4-9570-befc86d067a7",
        "Compliance Data Administrator",
    ),
    ("5d6b6bb7-de71-4623-b4af-96380a352509", "Security Reader"),
    (
        "194ae4cb-b126-40b2-bd5b-6091b380977d",
        "Security Administrator",
    ),
    (
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",
        "Helpdesk Administrator",
    ),
    (
        "31392ffb-586c-42d1-9346-e59415a2cc4e",
        "Exchange Recipient Administrator",
    ),
];

/// The name of a known role template id.
pub fn role_name(template_id: &str) -> Option<&'static str> {
    KNOWN_ROLE_TEMPLATES
        .iter()
        .find(|(id, _)| id.eq_ignore_ascii_case(template_id))
        .map(|(_, name)| *name)
}

/// Decodes a JWT's payload without checking its signature. `None` for an opaque token.
pub fn decode_claims(token: &str) -> Option<Map<String, Value>> {
    // jsonwebtoken splits from the right and ignores what precedes the last three parts, so a
    // five-part JWE would pass as a JWS: a compact JWS has exactly three.
    if token.split('.').count() != 3 {
        return None;
    }
    jsonwebtoken::dangerous::insecure_decode_claims(token).ok()
}

/// What was expected of the token.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// The configured tenant: a GUID is compared with `tid`; a domain cannot be, and is skipped.
    pub tenant: Option<String>,
    /// The resource the token should be for, e.g. `https://outlook.office365.com`.
    pub resource: Option<String>,
    /// The client id we authenticated as.
    pub client_id: Option<String>,
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// Will fail against Exchange.
    Fail,
    /// Suspicious but may work.
    Warn,
    /// Could not be checked.
    Skip,
}

/// One named check with its explanation and fix.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name (`tenant`, `audience`, `app role`, …).
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found, in words.
    pub detail: String,
    /// What to do, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// A redacted summary of the claims (never the token) and the checks.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// False when the token is not a JWT we could decode.
    pub decodable: bool,
    /// Selected claims: aud, iss, tid, appid/azp, appidacr/azpacr, idtyp, roles, wids, exp, nbf, ver, scp present.
    pub claims: Map<String, Value>,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl Diagnosis {
    /// True when no check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }
}

/// The two ways an app gets Exchange permissions, for an empty `wids`.
pub const WIDS_FIX: &str = "either assign the app's service principal an Entra role such as Exchange Administrator (Entra admin center > Roles and administrators) and get a new token, or give it Exchange RBAC for Applications: New-ServicePrincipal -AppId <app id> -ObjectId <service principal object id>, then New-ManagementRoleAssignment -App <app id> -Role \"Mail Recipients\" (optionally -CustomResourceScope <management scope> or -RecipientAdministrativeUnitScope <unit>), or Add-RoleGroupMember; see https://learn.microsoft.com/powershell/exchange/app-only-auth-powershell-v2 and https://learn.microsoft.com/exchange/permissions-exo/application-rbac";

/// The claims a diagnosis summarises (plus `scp_present`, derived).
pub(crate) const SUMMARY_CLAIMS: &[&str] = &[
    "aud",
    "iss",
    "tid",
    "appid",
    "azp",
    "appidacr",
    "azpacr",
    "idtyp",
    "oid",
    "roles",
    "wids",
    "exp",
    "nbf",
    "iat",
    "ver",
    "app_displayname",
];

fn check(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    fix: Option<&str>,
) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: fix.map(str::to_owned),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn looks_like_guid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok()
}

/// Diagnoses `token` against `expected` at time `now`.
pub fn diagnose(token: &str, expected: &Expectations, now: SystemTime) -> Diagnosis {
    let Some(claims) = decode_claims(token) else {
        return Diagnosis {
            decodable: false,
            claims: Map::new(),
            checks: vec![check(
                "format",
                Status::Skip,
                "token is opaque (not a JWT); skipping claim diagnostics",
                None,
            )],
        };
    };
    let mut summary = Map::new();
    for name in SUMMARY_CLAIMS {
        if let Some(value) = claims.get(*name) {
            summary.insert((*name).to_owned(), value.clone());
        }
    }
    summary.insert(
        "scp_present".into(),
        Value::Bool(claims.contains_key("scp")),
    );
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let mut checks = Vec::new();

    // Tenant.
    match (text("tid"), expected.tenant.as_deref()) {
        (None, _) => checks.push(check(
            "tenant",
            Status::Warn,
            "the token has no tid claim",
            None,
        )),
        (Some(tid), Some(want)) if looks_like_guid(want) && !tid.eq_ignore_ascii_case(want) => {
            checks.push(check(
                "tenant",
                Status::Fail,
                format!("the token is for tenant {tid}, but the configuration names {want}"),
                Some("use the tenant id of the Exchange organisation, and the cloud it lives in"),
            ))
        }
        (Some(tid), Some(want)) if !looks_like_guid(want) => checks.push(check(
            "tenant",
            Status::Pass,
            format!("tenant {tid} (configured by domain {want}; set the GUID to have it compared)"),
            None,
        )),
        (Some(tid), _) => checks.push(check("tenant", Status::Pass, format!("tenant {tid}"), None)),
    }

    // Audience.
    let aud = text("aud");
    match (&aud, expected.resource.as_deref()) {
        (None, _) => checks.push(check(
            "audience",
            Status::Fail,
            "the token has no aud claim",
            Some("request the token for the Exchange resource"),
        )),
        (Some(aud), Some(want)) => {
            let want_trimmed = want.trim_end_matches('/');
            let matches = aud.trim_end_matches('/').eq_ignore_ascii_case(want_trimmed)
                || aud == "00000002-0000-0ff1-ce00-000000000000";
            if matches {
                checks.push(check("audience", Status::Pass, format!("for {aud}"), None));
            } else {
                checks.push(check(
                    "audience",
                    Status::Fail,
                    format!("the token is for {aud}, not for Exchange Online ({want_trimmed})"),
                    Some(
                        "request scope '<exchange resource>/.default' for your cloud (see --cloud)",
                    ),
                ));
            }
        }
        (Some(aud), None) => {
            checks.push(check("audience", Status::Pass, format!("for {aud}"), None))
        }
    }

    // Client id.
    if let Some(want) = expected.client_id.as_deref() {
        match text("appid").or_else(|| text("azp")) {
            Some(got) if got.eq_ignore_ascii_case(want) => checks.push(check(
                "client",
                Status::Pass,
                format!("issued to app {got}"),
                None,
            )),
            Some(got) => checks.push(check(
                "client",
                Status::Warn,
                format!("issued to app {got}, not the configured {want}"),
                None,
            )),
            None => checks.push(check(
                "client",
                Status::Warn,
                "the token has neither appid nor azp",
                None,
            )),
        }
    }

    // Delegated or app-only.
    if claims.contains_key("scp") {
        checks.push(check(
            "app-only",
            Status::Fail,
            "the token carries scp: it is a delegated (user) token, not an app-only token",
            Some("use the client-credentials flow (a secret, certificate, federated token or managed identity), not a user sign-in"),
        ));
    } else {
        let idtyp = text("idtyp");
        let detail = match idtyp.as_deref() {
            Some("app") => "app-only token (idtyp=app, no scp)".to_owned(),
            Some(other) => format!("no scp; idtyp={other}"),
            None => "no scp (idtyp not present, which Exchange tokens may omit)".to_owned(),
        };
        checks.push(check("app-only", Status::Pass, detail, None));
    }

    // App role.
    let roles = strings(claims.get("roles"));
    if roles.iter().any(|r| r == EXCHANGE_MANAGE_AS_APP) {
        checks.push(check(
            "app role",
            Status::Pass,
            format!("roles include {EXCHANGE_MANAGE_AS_APP}"),
            None,
        ));
    } else {
        let near_miss = roles
            .iter()
            .find(|r| r.eq_ignore_ascii_case(EXCHANGE_MANAGE_AS_APP) || r.starts_with("Exchange."));
        let detail = match (roles.is_empty(), near_miss) {
            (true, _) => "the token has no roles: Exchange answers 401 Unauthorized".to_owned(),
            (false, Some(other)) => format!(
                "roles are [{}]; '{other}' is not '{EXCHANGE_MANAGE_AS_APP}' (only that exact role works): Exchange answers 401",
                roles.join(", ")
            ),
            (false, None) => format!(
                "roles are [{}], without {EXCHANGE_MANAGE_AS_APP}: Exchange answers 401 Unauthorized",
                roles.join(", ")
            ),
        };
        checks.push(check(
            "app role",
            Status::Fail,
            detail,
            Some("in the app registration, add API permission 'Office 365 Exchange Online' > Application > Exchange.ManageAsApp, grant admin consent, then get a new token (roles are fixed when a token is issued)"),
        ));
    }

    // Directory role.
    let wids = strings(claims.get("wids"));
    if wids.is_empty() {
        // Exchange authorises an app by an Entra role in `wids` or by an Exchange role
        // assignment to its service principal (RBAC for Applications), which the token does not
        // show: https://learn.microsoft.com/powershell/exchange/app-only-auth-powershell-v2
        // and https://learn.microsoft.com/exchange/permissions-exo/application-rbac.
        checks.push(check(
            "directory role",
            Status::Warn,
            "wids is empty: the app has no Entra directory role, so Exchange authorises it only if its service principal holds an Exchange role assignment (RBAC for Applications); without one every cmdlet is refused (403)",
            Some(WIDS_FIX),
        ));
    } else {
        let named: Vec<String> = wids
            .iter()
            .map(|w| {
                role_name(w)
                    .map(|n| format!("{n} ({w})"))
                    .unwrap_or_else(|| format!("{w} (unknown role template)"))
            })
            .collect();
        let known = wids.iter().any(|w| role_name(w).is_some());
        checks.push(check(
            "directory role",
            if known { Status::Pass } else { Status::Warn },
            format!("wids: {}", named.join(", ")),
            (!known).then_some("none of these is a role Exchange recognises for app-only access; assign Exchange Administrator or Global Reader"),
        ));
    }

    // Lifetime. Claims are untrusted numbers: differences are taken without overflow.
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp <= now_secs => checks.push(check(
            "lifetime",
            Status::Fail,
            format!("expired {} s ago", now_secs.abs_diff(exp)),
            Some("get a new token; if it was just issued, check this machine's clock"),
        )),
        Some(exp) => checks.push(check(
            "lifetime",
            Status::Pass,
            format!("expires in {} s", exp.abs_diff(now_secs)),
            None,
        )),
        None => checks.push(check("lifetime", Status::Warn, "no exp claim", None)),
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && nbf > now_secs.saturating_add(300)
    {
        checks.push(check(
            "clock",
            Status::Warn,
            format!(
                "not valid for another {} s: this machine's clock may be behind",
                nbf.abs_diff(now_secs)
            ),
            None,
        ));
    }

    Diagnosis {
        decodable: true,
        claims: summary,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    fn token(claims: Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn expectations() -> Expectations {
        Expectations {
            tenant: Some("11111111-1111-1111-1111-111111111111".into()),
            resource: Some("https://outlook.office365.com".into()),
            client_id: Some("22222222-2222-2222-2222-222222222222".into()),
        }
    }

    fn good() -> Value {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        json!({"aud":"https://outlook.office365.com","tid":"11111111-1111-1111-1111-111111111111","appid":"22222222-2222-2222-2222-222222222222","roles":["Exchange.ManageAsApp"],"wids":["29232cdf-9323-42fd-ade2-1d097af3e4de"],"idtyp":"app","exp":exp})
    }

    fn status_of(diagnosis: &Diagnosis, name: &str) -> Status {
        diagnosis
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}"))
            .status
    }

    #[test]
    fn a_good_token_passes_every_check() {
        let d = diagnose(&token(good()), &expectations(), SystemTime::now());
        assert!(d.ok(), "{:#?}", d.checks);
        assert!(
            d.checks
                .iter()
                .any(|c| c.detail.contains("Exchange Administrator"))
        );
    }

    #[test]
    fn each_broken_claim_fails_its_own_check() {
        type Mutation = fn(&mut Map<String, Value>);
        let cases: &[(&str, Mutation, &str)] = &[
            (
                "tenant",
                |c| {
                    c.insert("tid".into(), json!("99999999-9999-9999-9999-999999999999"));
                },
                "99999999",
            ),
            (
                "audience",
                |c| {
                    c.insert("aud".into(), json!("https://graph.microsoft.com"));
                },
                "graph",
            ),
            (
                "app role",
                |c| {
                    c.remove("roles");
                },
                "401",
            ),
            (
                "app role",
                |c| {
                    c.insert("roles".into(), json!(["Exchange.ManageAsAppV2"]));
                },
                "ManageAsAppV2",
            ),
            (
                "app-only",
                |c| {
                    c.insert("scp".into(), json!("Exchange.Manage"));
                },
                "delegated",
            ),
            (
                "lifetime",
                |c| {
                    c.insert("exp".into(), json!(1));
                },
                "expired",
            ),
        ];
        for (name, mutate, needle) in cases {
            let mut claims = good().as_object().unwrap().clone();
            mutate(&mut claims);
            let d = diagnose(
                &token(Value::Object(claims)),
                &expectations(),
                SystemTime::now(),
            );
            let failed = d.checks.iter().find(|c| c.name == *name).unwrap();
            assert_eq!(failed.status, Status::Fail, "{name}: {failed:?}");
            assert!(failed.detail.contains(needle), "{name}: {}", failed.detail);
            assert!(failed.fix.is_some(), "{name} has no fix");
            assert!(!d.ok());
        }
    }

    #[test]
    fn an_empty_wids_warns_and_explains_both_ways() {
        let mut claims = good().as_object().unwrap().clone();
        claims.insert("wids".into(), json!([]));
        let d = diagnose(
            &token(Value::Object(claims)),
            &expectations(),
            SystemTime::now(),
        );
        let role = d
            .checks
            .iter()
            .find(|c| c.name == "directory role")
            .unwrap();
        assert_eq!(role.status, Status::Warn, "{role:?}");
        let fix = role.fix.as_deref().unwrap();
        for needle in [
            "Exchange Administrator",
            "New-ManagementRoleAssignment -App",
            "https://learn.microsoft.com/",
        ] {
            assert!(fix.contains(needle), "{fix}");
        }
        assert!(d.ok(), "a warning is not a failure");
    }

    #[test]
    fn opaque_tokens_are_skipped_not_failed() {
        let jwe_shaped = format!("e30.e30.{}.x.y", URL_SAFE_NO_PAD.encode(b"{}"));
        for opaque in ["EwBwA8l6BAAU", "a.b", "a.!!!.c", "a.b.c.d", &jwe_shaped] {
            let d = diagnose(opaque, &expectations(), SystemTime::now());
            assert!(!d.decodable);
            assert_eq!(status_of(&d, "format"), Status::Skip);
            assert!(d.checks[0].detail.contains("opaque"));
        }
    }

    #[test]
    fn summary_never_contains_the_signature() {
        let d = diagnose(&token(good()), &expectations(), SystemTime::now());
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains("sig"), "{json}");
    }
}
