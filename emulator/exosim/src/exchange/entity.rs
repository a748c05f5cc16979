//! The REST entity sets behind the `Get-EXO*` cmdlets: `GET /adminapi/beta/{tenant}/{Set}` and
//! `GET …/{Set}('{key}')`, with the `PropertySet` and `Properties` query options, `$filter`
//! (the OPATH text, handed to the classic cmdlet), `$select`, and paging by `GET` of
//! `@odata.nextLink` (docs/fidelity.md, "Get-EXO* entity sets").
//!
//! Sources: michev.info "All you need to know about Exchange Online Admin API … part 2"
//! (`GET …/Mailbox('user@domain.com')` "corresponds to the Get-EXOMailbox cmdlet", the service
//! document lists `Mailbox`, `CasMailbox`, `Recipient`, … as entity sets); the property sets of
//! MicrosoftDocs/office-docs-powershell `exchange/docs-conceptual/cmdlet-property-sets.md`.
//! Each set is served by the classic cmdlet over the same store, then projected: every answer
//! carries the Minimum set, beside the sets and properties asked for, as the module documents.
//! The RBAC check names the `Get-EXO*` cmdlet ("User is not allowed to call Get-EXOMailbox",
//! MicrosoftDocs/office-docs-powershell#7970).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value};
use sha2::Digest as _;

use super::cmdlets::{self, Paging, Result2};
use super::{
    Answer, ExchangeRequestRecord, PageToken, authenticate, cmdlet_error, decode_token,
    encode_token, hex, now_unix_ms, page_of, page_size, run_cmdlet, service_error, too_many,
    warnings_json,
};
use crate::counters::Counter;
use crate::state::Shared;

/// One entity set: the `Get-EXO*` cmdlet it serves, the classic cmdlet that computes it, whether
/// a keyed read is one entity, and its property sets (the first is Minimum; `&[]` for a set
/// without documented property sets: every property).
struct Set {
    name: &'static str,
    cmdlet: &'static str,
    classic: &'static str,
    single: bool,
    property_sets: &'static [(&'static str, &'static [&'static str])],
}

/// MicrosoftDocs/office-docs-powershell `exchange/docs-conceptual/cmdlet-property-sets.md`
/// (a subset of the sets; the properties exosim's objects do not have are simply absent).
const MAILBOX_SETS: &[(&str, &[&str])] = &[
    (
        "Minimum",
        &[
            "Alias",
            "DisplayName",
            "DistinguishedName",
            "EmailAddresses",
            "ExchangeVersion",
            "ExternalDirectoryObjectId",
            "Guid",
            "Id",
            "Name",
            "OrganizationId",
            "PrimarySmtpAddress",
            "RecipientType",
            "RecipientTypeDetails",
            "UserPrincipalName",
        ],
    ),
    (
        "Delivery",
        &[
            "DeliverToMailboxAndForward",
            "ExternalDirectoryObjectId",
            "ForwardingAddress",
            "ForwardingSmtpAddress",
            "GrantSendOnBehalfTo",
            "MaxReceiveSize",
            "MaxSendSize",
        ],
    ),
    (
        "Quota",
        &[
            "ExternalDirectoryObjectId",
            "IssueWarningQuota",
            "ProhibitSendQuota",
            "ProhibitSendReceiveQuota",
        ],
    ),
    (
        "Hold",
        &["ExternalDirectoryObjectId", "LitigationHoldEnabled"],
    ),
    ("Audit", &["AuditEnabled", "ExternalDirectoryObjectId"]),
    (
        "AddressList",
        &["ExternalDirectoryObjectId", "HiddenFromAddressListsEnabled"],
    ),
    ("Archive", &["ArchiveStatus", "ExternalDirectoryObjectId"]),
    (
        "StatisticsSeed",
        &["DatabaseGuid", "ExchangeGuid", "ExternalDirectoryObjectId"],
    ),
];

const STATISTICS_SETS: &[(&str, &[&str])] = &[
    (
        "Minimum",
        &[
            "DeletedItemCount",
            "DisplayName",
            "ItemCount",
            "MailboxGuid",
            "TotalDeletedItemSize",
            "TotalItemSize",
        ],
    ),
    ("All", &[]),
];

const RECIPIENT_SETS: &[(&str, &[&str])] = &[(
    "Minimum",
    &[
        "ExchangeVersion",
        "ExternalDirectoryObjectId",
        "Name",
        "OrganizationId",
        "RecipientType",
        "RecipientTypeDetails",
    ],
)];

const SETS: &[Set] = &[
    Set {
        name: "Mailbox",
        cmdlet: "Get-EXOMailbox",
        classic: "Get-Mailbox",
        single: true,
        property_sets: MAILBOX_SETS,
    },
    Set {
        name: "MailboxStatistics",
        cmdlet: "Get-EXOMailboxStatistics",
        classic: "Get-MailboxStatistics",
        single: true,
        property_sets: STATISTICS_SETS,
    },
    Set {
        name: "Recipient",
        cmdlet: "Get-EXORecipient",
        classic: "Get-Recipient",
        single: true,
        property_sets: RECIPIENT_SETS,
    },
    Set {
        name: "MailboxPermission",
        cmdlet: "Get-EXOMailboxPermission",
        classic: "Get-MailboxPermission",
        single: false,
        property_sets: &[],
    },
];

/// `Mailbox` or `Mailbox('o''brien@contoso.com')` → the set name and the quoted key's inside
/// (its quotes still doubled: [`unquote`]).
fn parse_segment(segment: &str) -> Option<(&str, Option<String>)> {
    match segment.split_once('(') {
        None => Some((segment, None)),
        Some((name, rest)) => {
            let quoted = rest.strip_suffix(')')?;
            let inner = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
            Some((name, Some(inner.to_owned())))
        }
    }
}

/// The inside of an OData string literal with its doubled quotes made single; `None` when a
/// quote is not doubled (it would end the literal early: the service answers 400, a syntax
/// error in the URL).
fn unquote(inner: &str) -> Option<String> {
    let mut key = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\'' && chars.next() != Some('\'') {
            return None;
        }
        key.push(c);
    }
    Some(key)
}

/// The query options an entity-set GET understands.
#[derive(Debug, Default)]
struct Options {
    property_sets: Vec<String>,
    properties: Vec<String>,
    filter: Option<String>,
    select: Option<Vec<String>>,
    skip: Option<String>,
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn options(uri: &Uri) -> Options {
    let pairs: Vec<(String, String)> = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let mut o = Options::default();
    for (key, value) in pairs {
        match key.as_str() {
            k if k.eq_ignore_ascii_case("PropertySet") => o.property_sets = list(&value),
            k if k.eq_ignore_ascii_case("Properties") => o.properties = list(&value),
            "$filter" => o.filter = Some(value),
            "$select" => o.select = Some(list(&value)),
            "$skiptoken" => o.skip = Some(value),
            _ => {}
        }
    }
    o
}

/// The properties to return, or `None` for all; an unknown property set is refused.
fn projection(set: &Set, o: &Options) -> Result<Option<Vec<String>>, String> {
    let mut wanted: Vec<String> = Vec::new();
    let mut all = set.property_sets.is_empty();
    // Minimum always, beside whatever else was asked for: "If you use the PropertySets or
    // Properties parameters, you get the specified properties and the properties in the
    // Minimum property set" (MicrosoftDocs/office-docs-powershell
    // `exchange/docs-conceptual/exchange-online-powershell-v2.md`).
    let mut asked = vec!["Minimum".to_owned()];
    asked.extend(o.property_sets.iter().cloned());
    for name in &asked {
        if set.property_sets.is_empty() {
            continue;
        }
        let Some((_, props)) = set
            .property_sets
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        else {
            return Err(format!(
                "The property set '{name}' is not valid for {}. Valid property sets: {}.",
                set.cmdlet,
                set.property_sets
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if props.is_empty() {
            all = true;
        }
        wanted.extend(props.iter().map(|p| (*p).to_owned()));
    }
    wanted.extend(o.properties.iter().cloned());
    if let Some(select) = &o.select {
        return Ok(Some(select.clone()));
    }
    Ok((!all).then_some(wanted))
}

/// `GET /adminapi/{version}/{tenant}/{segment}`.
pub(crate) async fn get_entity(
    State(shared): State<Arc<Shared>>,
    Path((version, tenant_segment, segment)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut record = ExchangeRequestRecord::received("GET", &uri, &headers);
    let request_id = uuid::Uuid::new_v4().to_string();
    let (answer, rate) = answer(
        &shared,
        &version,
        &tenant_segment,
        &segment,
        &uri,
        &headers,
        &mut record,
    )
    .await;
    record.status = answer.status.as_u16();
    record.exception_type = answer.exception_type.clone();
    shared.exchange.record(record);
    answer.into_response(&request_id, rate.as_ref())
}

async fn answer(
    shared: &Arc<Shared>,
    version: &str,
    tenant_segment: &str,
    segment: &str,
    uri: &Uri,
    headers: &HeaderMap,
    record: &mut ExchangeRequestRecord,
) -> (Answer, Option<super::RateState>) {
    let not_found = |what: &str| service_error(StatusCode::NOT_FOUND, "NotFound", what);
    if version != "beta" && version != "v1.0" {
        return (
            not_found(&format!("The API version '{version}' is not supported.")),
            None,
        );
    }
    let Some((set_name, key)) = parse_segment(segment) else {
        return (
            not_found(&format!(
                "The resource '{segment}' is not a valid entity path."
            )),
            None,
        );
    };
    let key = match key.map(|k| unquote(&k).ok_or(k)).transpose() {
        Ok(key) => key,
        Err(raw) => {
            return (
                super::service_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!(
                        "Bad Request - Error in query syntax: the key '{raw}' has a single quote that is not doubled."
                    ),
                ),
                None,
            );
        }
    };
    let Some(set) = SETS.iter().find(|s| s.name.eq_ignore_ascii_case(set_name)) else {
        return (
            not_found(&format!(
                "The entity set '{set_name}' is not served by this emulator (it serves {}).",
                SETS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            )),
            None,
        );
    };
    record.cmdlet = Some(set.cmdlet.to_owned());
    record.identity = key.clone();
    let exchange = &shared.exchange;
    let resolved = exchange.resolve_tenant(shared, tenant_segment);
    record.tenant_id.clone_from(&resolved);
    exchange.delay(resolved.as_deref()).await;
    let Some(tenant_id) = resolved else {
        shared.counters.bump(Counter::ExchangeAuthFailure);
        return (
            super::invalid_token(shared, "The access token was issued for another tenant."),
            None,
        );
    };
    let caller = match authenticate(shared, headers, &tenant_id) {
        Ok(caller) => caller,
        Err(answer) => return (answer, None),
    };
    let rate = exchange
        .limiter
        .take(exchange.throttle_for(&tenant_id), &tenant_id, now_unix_ms());
    if let Some(retry) = rate.retry_after {
        record.fault = Some("throttled".to_owned());
        return (too_many(retry), Some(rate));
    }
    let rate = Some(rate);
    shared.counters.cmdlet(set.cmdlet);
    if !caller.allows(set.cmdlet) {
        shared.counters.bump(Counter::ExchangeAuthFailure);
        let message = format!("User is not allowed to call {}", set.cmdlet);
        return (
            service_error(StatusCode::UNAUTHORIZED, "Unauthorized", &message),
            rate,
        );
    }
    let o = options(uri);
    let projection = match projection(set, &o) {
        Ok(p) => p,
        Err(message) => {
            return (
                service_error(StatusCode::BAD_REQUEST, "BadRequest", &message),
                rate,
            );
        }
    };
    let mut params = Map::new();
    if let Some(key) = &key {
        params.insert("Identity".into(), Value::from(key.clone()));
    }
    if let Some(filter) = &o.filter {
        params.insert("Filter".into(), Value::from(filter.clone()));
    }
    if set.classic != "Get-MailboxStatistics" {
        params.insert("ResultSize".into(), Value::from("Unlimited"));
    }
    record.parameter_names = params.keys().cloned().collect();
    // `$filter` is read as InvokeCommand's `Filter`: no `$true`/`$false` over REST.
    if let Err(e) = super::filter::refuse_boolean_variables(&params) {
        return (cmdlet_error(&e), rate);
    }
    let Some(spec) = cmdlets::find(set.classic) else {
        return (not_found("The entity set has no cmdlet."), rate);
    };
    let args = match cmdlets::bind(spec, &params) {
        Ok(args) => args,
        Err(e) => return (cmdlet_error(&e), rate),
    };
    // A nextLink is valid only for the same set, key and options in the same tenant.
    let digest = hex(&sha2::Sha256::digest(
        format!(
            "{segment}|{:?}|{:?}|{:?}|{:?}",
            o.property_sets, o.properties, o.filter, o.select
        )
        .as_bytes(),
    ));
    let (after, returned_before) = match &o.skip {
        None => (None, 0),
        Some(text) => match decode_token(&exchange.page_key, text) {
            Some(t) if t.t == tenant_id && t.d == digest => (Some(t.a), t.n),
            _ => {
                return (
                    service_error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "The continuation link is not valid for this request: GET the @odata.nextLink as given.",
                    ),
                    rate,
                );
            }
        },
    };
    let Some(org) = exchange.org(&tenant_id) else {
        return (not_found("Unknown tenant."), rate);
    };
    let (want, _) = page_size(headers);
    let executed = match run_cmdlet(shared, org, spec, args, Paging { after, want }).await {
        Ok(e) => e,
        Err(e) => return (cmdlet_error(&e), rate),
    };
    let Result2::Done(rows) = executed.result else {
        return (not_found("The entity set answered a confirmation."), rate);
    };
    let (objs, last, more) = page_of(rows, after, want);
    let base =
        crate::identity::addressed_base(headers, uri).unwrap_or_else(|| shared.base_url.clone());
    let metadata = format!(
        "{base}/adminapi/{version}/{tenant_segment}/$metadata#{}",
        set.name
    );
    let select = projection.as_deref();
    let mut out = String::with_capacity(4096);
    if key.is_some() && set.single && objs.len() == 1 {
        // A keyed read of a single-valued set is the entity itself (OData `$entity`).
        let mut entity = String::new();
        super::obj::write_object(&mut entity, &objs[0], select);
        out.push_str(&format!(
            "{{\"@odata.context\":{},{}",
            Value::from(format!("{metadata}/$entity")),
            entity.strip_prefix('{').unwrap_or("}")
        ));
        return (Answer::json(StatusCode::OK, out), rate);
    }
    out.push_str(&format!("{{\"@odata.context\":{}", Value::from(metadata)));
    out.push(',');
    out.push_str(&warnings_json(&executed.warnings));
    out.push_str(",\"value\":[");
    for (i, o) in objs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        super::obj::write_object(&mut out, o, select);
    }
    out.push(']');
    if more {
        let token = encode_token(
            &exchange.page_key,
            &PageToken {
                t: tenant_id.clone(),
                d: digest,
                a: last,
                n: returned_before + objs.len() as u64,
            },
        );
        let mut query: Vec<(String, String)> = uri
            .query()
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        query.retain(|(k, _)| k != "$skiptoken");
        query.push(("$skiptoken".into(), token));
        let link = format!(
            "{base}{}?{}",
            uri.path(),
            serde_urlencoded::to_string(&query).unwrap_or_default()
        );
        out.push_str(&format!(",\"@odata.nextLink\":{}", Value::from(link)));
    }
    out.push('}');
    (Answer::json(StatusCode::OK, out), rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_parse_with_odata_quoting() {
        assert_eq!(parse_segment("Mailbox"), Some(("Mailbox", None)));
        assert_eq!(
            parse_segment("Mailbox('o''brien@x.com')"),
            Some(("Mailbox", Some("o''brien@x.com".to_owned())))
        );
        assert_eq!(parse_segment("Mailbox(x)"), None);
        assert_eq!(unquote("o''brien@x.com").as_deref(), Some("o'brien@x.com"));
        assert_eq!(unquote("a+b c").as_deref(), Some("a+b c"));
        assert_eq!(unquote("o'brien"), None, "an undoubled quote");
        assert_eq!(unquote("o'''brien"), None);
    }

    #[test]
    fn minimum_is_the_default_and_unknown_sets_are_refused() {
        let mailbox = &SETS[0];
        let minimum = projection(mailbox, &Options::default()).unwrap().unwrap();
        assert!(minimum.iter().any(|p| p == "PrimarySmtpAddress"));
        assert!(!minimum.iter().any(|p| p == "Database"));
        let bad = Options {
            property_sets: vec!["Everything".into()],
            ..Default::default()
        };
        assert!(
            projection(mailbox, &bad)
                .unwrap_err()
                .contains("Valid property sets")
        );
        // Properties alone, or another set, still come with Minimum.
        for asked in [
            Options {
                properties: vec!["Database".into()],
                ..Default::default()
            },
            Options {
                property_sets: vec!["Archive".into()],
                ..Default::default()
            },
        ] {
            let got = projection(mailbox, &asked).unwrap().unwrap();
            assert!(got.iter().any(|p| p == "PrimarySmtpAddress"), "{asked:?}");
        }
    }
}
