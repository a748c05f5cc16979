//! The `Get-EXO*` cmdlets: the module serves them from the REST API's entity sets with a `GET`,
//! not through `InvokeCommand` (`docs/fidelity.md`, "Get-EXO* entity sets").
//!
//! - Source for the URL form: michev.info "All you need to know about Exchange Online Admin API
//!   … part 2" (`GET /adminapi/beta/{tenant}/Mailbox('user@domain.com')` "corresponds to the
//!   Get-EXOMailbox cmdlet"); the `PropertySet=Minimum,Delivery` query option as a public C#
//!   client sends it; the property sets in MicrosoftDocs/office-docs-powershell
//!   `exchange/docs-conceptual/cmdlet-property-sets.md`; paging by `GET` of `@odata.nextLink`
//!   as silverhack/monkey365 `core/api/m365/ExchangeOnline/Get-PSExoAdminApiObject.ps1` does.
//! - Not verified offline: how the module spells `Filter` and `Properties` on the wire; we send
//!   `$filter` (the OPATH text, its `$true`/`$false` rewritten as for `InvokeCommand`: the REST
//!   API has no PowerShell variables either way) and `Properties` as a query option of that name.
//!
//! A guest asks for `Get-EXOMailbox` like any cmdlet; only the REST session knows it is a GET.
//! Remote PowerShell never offers these cmdlets (the module defines them only for REST).

use crate::error::ExchangeError;
use crate::params::{ParamValue, Parameters, RESULT_SIZE, sanitize_filter_booleans};
use serde_json::{Map, Value};

/// One `Get-EXO*` cmdlet and the entity set that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntitySet {
    /// The cmdlet name as the module spells it.
    pub cmdlet: &'static str,
    /// The entity set in the URL path.
    pub set: &'static str,
    /// Whether the cmdlet needs `Identity` (the set is read one object's key at a time).
    pub needs_identity: bool,
}

/// The `Get-EXO*` cmdlets warden serves, with their entity sets (the set names are the ones the
/// service document lists, michev.info part 2; the pairing is by name).
pub const ENTITY_SETS: &[EntitySet] = &[
    EntitySet {
        cmdlet: "Get-EXOMailbox",
        set: "Mailbox",
        needs_identity: false,
    },
    EntitySet {
        cmdlet: "Get-EXORecipient",
        set: "Recipient",
        needs_identity: false,
    },
    EntitySet {
        cmdlet: "Get-EXOCasMailbox",
        set: "CasMailbox",
        needs_identity: false,
    },
    EntitySet {
        cmdlet: "Get-EXOMailboxStatistics",
        set: "MailboxStatistics",
        needs_identity: true,
    },
    EntitySet {
        cmdlet: "Get-EXOMailboxPermission",
        set: "MailboxPermission",
        needs_identity: true,
    },
    EntitySet {
        cmdlet: "Get-EXOMailboxFolderStatistics",
        set: "MailboxFolderStatistics",
        needs_identity: true,
    },
];

/// What an entity key escapes in the URL path: all but RFC 3986's unreserved characters.
const PATH_KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The parameters an entity-set request carries; anything else is refused with this list.
pub const ENTITY_PARAMETERS: &[&str] = &[
    "Identity",
    "Filter",
    "PropertySets",
    "Properties",
    RESULT_SIZE,
];

/// The entity set serving `cmdlet`, when it is a `Get-EXO*` cmdlet (any case).
pub fn entity_set(cmdlet: &str) -> Option<&'static EntitySet> {
    ENTITY_SETS
        .iter()
        .find(|e| e.cmdlet.eq_ignore_ascii_case(cmdlet))
}

/// The module's nine `Get-EXO*` cmdlets, all REST-only (the module defines them for REST
/// connections only; the list: Microsoft Learn, "About the Exchange Online PowerShell module",
/// "REST API cmdlets"). Warden serves the ones in [`ENTITY_SETS`]; other cmdlets whose names
/// merely begin the same way (`Get-ExoPhishSimOverrideRule`) are ordinary server cmdlets.
pub const REST_ONLY_CMDLETS: &[&str] = &[
    "Get-EXOCasMailbox",
    "Get-EXOMailbox",
    "Get-EXOMailboxFolderPermission",
    "Get-EXOMailboxFolderStatistics",
    "Get-EXOMailboxPermission",
    "Get-EXOMailboxStatistics",
    "Get-EXOMobileDeviceStatistics",
    "Get-EXORecipient",
    "Get-EXORecipientPermission",
];

/// Whether `cmdlet` (any case) is one of the module's [`REST_ONLY_CMDLETS`].
pub fn is_rest_only(cmdlet: &str) -> bool {
    REST_ONLY_CMDLETS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(cmdlet))
}

/// The error the REST transport gives for a `Get-EXO*` cmdlet warden has no entity set for: it
/// is not a server cmdlet, so it is refused here, never POSTed to `InvokeCommand`.
pub fn not_served_error(cmdlet: &str) -> ExchangeError {
    ExchangeError::Invalid(format!(
        "{cmdlet} is not served by warden (it serves {} as entity-set GETs): use the classic cmdlet ({})",
        ENTITY_SETS
            .iter()
            .map(|e| e.cmdlet)
            .collect::<Vec<_>>()
            .join(", "),
        classic_name(cmdlet)
    ))
}

/// The error a transport without entity sets gives for a `Get-EXO*` cmdlet.
pub fn rest_only_error(cmdlet: &str) -> ExchangeError {
    ExchangeError::Invalid(format!(
        "{cmdlet} is served only by the REST API's entity sets (the ExchangeOnlineManagement module defines the Get-EXO* cmdlets for REST connections only): use the REST transport, or the classic cmdlet ({}) over Remote PowerShell",
        classic_name(cmdlet)
    ))
}

/// `Get-EXOMailbox` → `Get-Mailbox`.
fn classic_name(cmdlet: &str) -> String {
    match cmdlet.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("Get-EXO") => format!("Get-{}", &cmdlet[7..]),
        _ => cmdlet.to_owned(),
    }
}

/// The first URL of `cmdlet` with `parameters`: `{base}/adminapi/beta/{tenant}/{Set}` or
/// `…/{Set}('{Identity}')`, with `PropertySet`, `Properties` and `$filter` query options.
/// Refuses a parameter the entity set does not take and a set or property name that is not a
/// plain name (it would change the query's meaning).
pub fn request_url(
    base: &str,
    tenant: &str,
    entity: &EntitySet,
    parameters: &Parameters,
) -> Result<String, ExchangeError> {
    let mut identity = None;
    let mut filter = None;
    let mut sets = Vec::new();
    let mut properties = Vec::new();
    for (name, value) in parameters {
        let known = ENTITY_PARAMETERS
            .iter()
            .find(|p| p.eq_ignore_ascii_case(name))
            .copied();
        match known {
            Some("Identity") => identity = Some(text(entity, name, value)?),
            Some("Filter") => {
                let text = text(entity, name, value)?;
                filter = Some(sanitize_filter_booleans(&text).map_err(|why| {
                    ExchangeError::Invalid(format!("{}: '{name}': {why}", entity.cmdlet))
                })?);
            }
            Some("PropertySets") => sets = names(entity, name, value)?,
            Some("Properties") => properties = names(entity, name, value)?,
            // Not sent (the stream stops there), so judged here as the service's binder judges
            // it on InvokeCommand: a value it would refuse is refused, never read as no limit.
            Some(_) => {
                crate::params::result_size(value).map_err(|why| {
                    ExchangeError::Invalid(format!("{}: '{name}': {why}", entity.cmdlet))
                })?;
            }
            None => {
                return Err(ExchangeError::Invalid(format!(
                    "{} does not take the parameter '{name}': its entity set takes {}",
                    entity.cmdlet,
                    ENTITY_PARAMETERS.join(", ")
                )));
            }
        }
    }
    let mut url = format!(
        "{}/adminapi/beta/{}/{}",
        base.trim_end_matches('/'),
        tenant,
        entity.set
    );
    match identity {
        // An OData string key: a quote is doubled; the key is percent-encoded as a path
        // segment (a space is %20: `+` is a space only in a query, a literal `+` in a path).
        Some(id) => {
            let key = format!("'{}'", id.replace('\'', "''"));
            url.push('(');
            url.extend(percent_encoding::utf8_percent_encode(&key, PATH_KEY));
            url.push(')');
        }
        None if entity.needs_identity => {
            return Err(ExchangeError::Invalid(format!(
                "{} needs Identity: its entity set is read one mailbox at a time",
                entity.cmdlet
            )));
        }
        None => {}
    }
    // The Minimum set comes with whatever else is asked for: "If you use the PropertySets or
    // Properties parameters, you get the specified properties and the properties in the
    // Minimum property set" (MicrosoftDocs/office-docs-powershell
    // `exchange/docs-conceptual/exchange-online-powershell-v2.md`, "Properties and property
    // sets"); with neither, Minimum alone.
    if !sets.iter().any(|s| s.eq_ignore_ascii_case("Minimum")) {
        sets.insert(0, "Minimum".to_owned());
    }
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("PropertySet", &sets.join(","));
    if !properties.is_empty() {
        query.append_pair("Properties", &properties.join(","));
    }
    if let Some(filter) = &filter {
        query.append_pair("$filter", filter);
    }
    url.push('?');
    url.push_str(&query.finish());
    Ok(url)
}

fn text(entity: &EntitySet, name: &str, value: &ParamValue) -> Result<String, ExchangeError> {
    match value {
        ParamValue::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(ExchangeError::Invalid(format!(
            "{}: '{name}' must be a non-empty string",
            entity.cmdlet
        ))),
    }
}

/// A name list: one string (one name) or an array of strings (one name each); each a plain
/// name. A comma in one string is refused, not split: the policy judged that string as one
/// value, and PowerShell binds one string to `PropertySet[]` as one enum value, refusing a
/// comma for an enum without `[Flags]` (PowerShell/PowerShell
/// `src/System.Management.Automation/engine/LanguagePrimitives.cs`, `EnumSingleTypeConverter`,
/// "InvalidCastEnumCommaAndNoFlags"; that PropertySet has no `[Flags]` is inferred from the
/// parameter being an array). A `String[]` parameter (`Properties`) gets the same rule.
fn names(entity: &EntitySet, name: &str, value: &ParamValue) -> Result<Vec<String>, ExchangeError> {
    let items: Vec<String> = match value {
        ParamValue::String(s) => vec![s.trim().to_owned()],
        ParamValue::Array(items) => items
            .iter()
            .map(|i| match i {
                ParamValue::String(s) => Ok(s.trim().to_owned()),
                _ => Err(()),
            })
            .collect::<Result<_, _>>()
            .map_err(|()| {
                ExchangeError::Invalid(format!(
                    "{}: '{name}' must be names (strings)",
                    entity.cmdlet
                ))
            })?,
        _ => {
            return Err(ExchangeError::Invalid(format!(
                "{}: '{name}' must be a name or a list of names",
                entity.cmdlet
            )));
        }
    };
    if let Some(bad) = items.iter().find(|i| i.contains(',')) {
        return Err(ExchangeError::Invalid(format!(
            "{}: '{bad}' in '{name}' names several in one string; pass a list instead ([\"{}\"])",
            entity.cmdlet,
            bad.split(',')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\", \"")
        )));
    }
    if let Some(bad) = items
        .iter()
        .find(|i| i.is_empty() || !i.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(ExchangeError::Invalid(format!(
            "{}: '{bad}' in '{name}' is not a property name (letters and digits only)",
            entity.cmdlet
        )));
    }
    Ok(items)
}

/// An entity-set answer as the envelope [`crate::response::parse_page`] reads: a collection is
/// kept; a single entity (`…/$entity`, what a keyed GET returns in OData) becomes a one-object
/// `value`, its annotations kept at the envelope level.
pub(crate) fn as_collection(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(body) else {
        return body.into();
    };
    if root.contains_key("value") {
        return body.into();
    }
    let mut envelope = Map::new();
    let mut entity = Map::new();
    for (key, value) in root {
        if key.starts_with("@odata.")
            || key.starts_with("@adminapi.")
            || key.starts_with("adminapi.")
        {
            envelope.insert(key, value);
        } else {
            entity.insert(key, value);
        }
    }
    envelope.insert("value".into(), Value::Array(vec![Value::Object(entity)]));
    serde_json::to_vec(&Value::Object(envelope))
        .expect("JSON encodes")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, ParamValue)]) -> Parameters {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn s(v: &str) -> ParamValue {
        ParamValue::String(v.to_owned())
    }

    #[test]
    fn urls_name_the_entity_set_the_key_and_the_property_sets() {
        let mailbox = entity_set("get-exomailbox").unwrap();
        assert_eq!(
            request_url("https://h/", "t", mailbox, &p(&[])).unwrap(),
            "https://h/adminapi/beta/t/Mailbox?PropertySet=Minimum"
        );
        // Properties alone come with the Minimum set, as the module documents.
        assert_eq!(
            request_url(
                "https://h/",
                "t",
                mailbox,
                &p(&[("Properties", ParamValue::Array(vec![s("ItemCount")]))])
            )
            .unwrap(),
            "https://h/adminapi/beta/t/Mailbox?PropertySet=Minimum&Properties=ItemCount"
        );
        assert_eq!(
            request_url(
                "https://h",
                "t",
                mailbox,
                &p(&[
                    ("Identity", s("o'brien@x.com")),
                    (
                        "PropertySets",
                        ParamValue::Array(vec![s("Minimum"), s(" Delivery")])
                    ),
                    ("Properties", ParamValue::Array(vec![s("ItemCount")])),
                    ("Filter", s("DisplayName -like 'A*' -and Hidden -eq$true")),
                    ("ResultSize", ParamValue::ResultSize(Some(5))),
                ])
            )
            .unwrap(),
            "https://h/adminapi/beta/t/Mailbox(%27o%27%27brien%40x.com%27)?PropertySet=Minimum%2CDelivery&Properties=ItemCount&%24filter=DisplayName+-like+%27A*%27+-and+Hidden+-eq+%27True%27"
        );
    }

    #[test]
    fn bad_parameters_are_refused_by_name() {
        let mailbox = entity_set("Get-EXOMailbox").unwrap();
        let stats = entity_set("Get-EXOMailboxStatistics").unwrap();
        for (entity, params, needle) in [
            (mailbox, p(&[("Anr", s("x"))]), "'Anr'"),
            (
                mailbox,
                p(&[("PropertySets", s("Minimum&x=1"))]),
                "not a property name",
            ),
            (
                mailbox,
                p(&[("Properties", ParamValue::Int(3))]),
                "'Properties'",
            ),
            (stats, p(&[]), "needs Identity"),
            (
                mailbox,
                p(&[("PropertySets", s("Minimum,Archive"))]),
                "pass a list instead ([\"Minimum\", \"Archive\"])",
            ),
            (mailbox, p(&[("Properties", s("Name, Guid"))]), "several"),
            (
                mailbox,
                p(&[("Filter", s("Name -eq 'x`' $true'"))]),
                "write 'True' or 'False'",
            ),
            (mailbox, p(&[("ResultSize", s("lots"))]), "'ResultSize'"),
            (
                mailbox,
                p(&[("ResultSize", ParamValue::Int(-1))]),
                "'ResultSize'",
            ),
            (
                mailbox,
                p(&[("ResultSize", ParamValue::Int(0))]),
                "'ResultSize'",
            ),
            (
                mailbox,
                p(&[("ResultSize", ParamValue::Bool(true))]),
                "'ResultSize'",
            ),
        ] {
            let error = request_url("https://h", "t", entity, &params).unwrap_err();
            assert!(error.to_string().contains(needle), "{error}");
        }
    }

    #[test]
    fn the_family_is_rest_only_and_the_error_names_rest() {
        assert!(is_rest_only("Get-EXOMailbox") && is_rest_only("get-exomobiledevicestatistics"));
        assert!(!is_rest_only("Get-Mailbox") && !is_rest_only("Get-EX"));
        // Server cmdlets that only look like the family.
        assert!(!is_rest_only("Get-ExoPhishSimOverrideRule"));
        assert!(!is_rest_only("Get-ExoSecOpsOverrideRule"));
        assert_eq!(REST_ONLY_CMDLETS.len(), 9);
        assert!(ENTITY_SETS.iter().all(|e| is_rest_only(e.cmdlet)));
        let text = rest_only_error("Get-EXOMailbox").to_string();
        assert!(
            text.contains("REST") && text.contains("Get-Mailbox"),
            "{text}"
        );
    }

    #[test]
    fn a_single_entity_becomes_a_one_object_collection() {
        let body = br##"{"@odata.context":"x/$metadata#Mailbox/$entity","Name":"a","Guid@odata.type":"#Guid"}"##;
        let page = crate::response::parse_page(&as_collection(body), false).unwrap();
        assert_eq!(page.objects.len(), 1);
        assert_eq!(page.objects[0]["Name"], "a");
        let many = br#"{"value":[{"Name":"a"},{"Name":"b"}]}"#;
        assert_eq!(as_collection(many).as_ref(), many);
    }
}
