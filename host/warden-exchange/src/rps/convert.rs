//! Between warden's values and PSRP's: parameters to CLIXML values, output objects to the JSON
//! objects REST returns, and error records to [`CmdletError`] (error id, exception class,
//! request id and server parsed out of the `FullyQualifiedErrorId`).

use crate::error::CmdletError;
use crate::params::ParamValue;
use crate::response::redact_credentials;
use serde_json::{Map, Value, json};
use warden_psrp::clixml::{PsObject, PsValue};
use warden_psrp::pipeline::ErrorInfo;

/// A parameter value as PSRP sends it: `Null` nil, switches and booleans `<B>`, integers
/// `<I32>` when they fit else `<I64>`, dates `<DT>` in UTC ISO-8601, `ResultSize` `Unlimited` or
/// `<I32>`, arrays `System.Object[]` lists, hashtables `System.Collections.Hashtable`
/// dictionaries, bytes `<BA>`. Values are data: nothing here can become script.
pub fn to_ps(value: &ParamValue) -> PsValue {
    match value {
        ParamValue::Null => PsValue::Null,
        ParamValue::Switch(b) | ParamValue::Bool(b) => PsValue::Bool(*b),
        ParamValue::Int(i) => int(*i),
        ParamValue::String(s) => PsValue::String(s.clone()),
        ParamValue::DateTime(d) => {
            let utc = d.to_offset(time::UtcOffset::UTC);
            PsValue::DateTime(
                utc.format(&time::format_description::well_known::Rfc3339)
                    .expect("dates format"),
            )
        }
        ParamValue::ResultSize(None) => PsValue::String("Unlimited".into()),
        ParamValue::ResultSize(Some(n)) => int(i64::from(*n)),
        ParamValue::Array(items) => PsValue::Object(Box::new(PsObject {
            type_names: vec![
                "System.Object[]".into(),
                "System.Array".into(),
                "System.Object".into(),
            ],
            list: Some(items.iter().map(to_ps).collect()),
            ..PsObject::default()
        })),
        ParamValue::HashTable(map) => PsValue::Object(Box::new(PsObject {
            type_names: vec![
                "System.Collections.Hashtable".into(),
                "System.Object".into(),
            ],
            dict: Some(
                map.iter()
                    .map(|(k, v)| (PsValue::String(k.clone()), to_ps(v)))
                    .collect(),
            ),
            ..PsObject::default()
        })),
        ParamValue::Bytes(bytes) => PsValue::Bytes(bytes.clone()),
    }
}

fn int(i: i64) -> PsValue {
    i32::try_from(i).map_or(PsValue::I64(i), PsValue::I32)
}

/// One PIPELINE_OUTPUT value as a result object: an object's properties as REST returns them;
/// anything else (a string, a number, a list a cmdlet wrote as one object) is wrapped as
/// `{"Value": …}`, so a page is always a list of objects and nothing the cmdlet said is lost.
/// `select` (REST's `$select`), when not empty, keeps only the named properties
/// (case-insensitive), as the server would have.
pub fn output_object(value: PsValue, select: &[String]) -> Map<String, Value> {
    let mut object = match warden_psrp::clixml::into_json(value) {
        Value::Object(map) => map,
        other => Map::from_iter([("Value".to_owned(), other)]),
    };
    if !select.is_empty() {
        object.retain(|k, _| select.iter().any(|s| s.eq_ignore_ascii_case(k)));
    }
    object
}

/// What a `FullyQualifiedErrorId` says: `[Server=…,RequestId=…,TimeStamp=…]
/// [FailureCategory=…] 9F3A7B21,Microsoft.Exchange…GetMailbox` gives the error id (after the
/// last `]`, before the first `,`), the request id and the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QualifiedId {
    /// `9F3A7B21`.
    pub error_id: Option<String>,
    /// `RequestId=` in a bracket.
    pub request_id: Option<String>,
    /// `Server=` in a bracket.
    pub server: Option<String>,
}

/// Parses a `FullyQualifiedErrorId` (see [`QualifiedId`]).
pub fn parse_fqid(fqid: &str) -> QualifiedId {
    let tail = fqid.rsplit(']').next().unwrap_or(fqid).trim();
    let error_id = tail
        .split(',')
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let mut id = QualifiedId {
        error_id,
        ..QualifiedId::default()
    };
    for bracket in fqid.split('[').skip(1) {
        let inner = bracket.split(']').next().unwrap_or("");
        for part in inner.split(',') {
            if let Some((key, value)) = part.split_once('=') {
                let value = value.trim();
                if value.is_empty() {
                    continue;
                }
                match key.trim() {
                    k if k.eq_ignore_ascii_case("RequestId") => {
                        id.request_id.get_or_insert_with(|| value.to_owned());
                    }
                    k if k.eq_ignore_ascii_case("Server") => {
                        id.server.get_or_insert_with(|| value.to_owned());
                    }
                    _ => {}
                }
            }
        }
    }
    id
}

/// The short class name of a .NET type (`…Tasks.ManagementObjectNotFoundException` →
/// `ManagementObjectNotFoundException`).
fn short_class(type_name: &str) -> Option<String> {
    let short = type_name.rsplit('.').next().unwrap_or(type_name).trim();
    (!short.is_empty()).then(|| short.to_owned())
}

/// The name of an `ErrorCategory` number (`NotSpecified` for one outside the enum).
pub fn category_name(category: i32) -> &'static str {
    warden_psrp::pipeline::error_category_name(category)
}

/// Exceptions that blame the request itself, whatever their category: REST answers them 400.
/// `CommandNotFoundException` (an unknown cmdlet, or one the caller's RBAC hides) is in
/// PowerShell's `ObjectNotFound` category, yet it is not a missing *object*.
const REQUEST_EXCEPTIONS: &[&str] = &[
    "CommandNotFoundException",
    "ParameterBindingException",
    "ParameterBindingValidationException",
    "ParameterBindingArgumentTransformationException",
    "ParameterBindingParameterDefaultValueException",
    "ValidationMetadataException",
    "ArgumentTransformationMetadataException",
    "ParseException",
];

/// The HTTP status and `code` REST would have given a terminating error, so callers keying on
/// them behave the same over either transport: a request REST refuses (an unknown or hidden
/// cmdlet, a parameter that does not bind, see `REQUEST_EXCEPTIONS`) → 400 `BadRequest`;
/// a missing object (`ManagementObjectNotFoundException` and the like, or the
/// `ObjectNotFound` category) → 404 `NotFound`; a category that blames the request (invalid
/// argument, data, type or operation, syntax, an object that already exists) → 400
/// `BadRequest`; anything else → 500 `InternalServerError`.
pub fn status_of(info: &ErrorInfo) -> (u16, &'static str) {
    let category = category_name(info.category);
    let class = short_class(&info.exception_type).or_else(|| short_class(&info.reason));
    let class = class.as_deref().unwrap_or("");
    if REQUEST_EXCEPTIONS.contains(&class) {
        return (400, "BadRequest");
    }
    if category == "ObjectNotFound" || class.ends_with("NotFoundException") {
        return (404, "NotFound");
    }
    match category {
        "InvalidArgument" | "InvalidData" | "InvalidType" | "InvalidOperation" | "SyntaxError"
        | "ParserError" | "ResourceExists" => (400, "BadRequest"),
        _ => (500, "InternalServerError"),
    }
}

/// The terminating error of a Failed pipeline (its `ExceptionAsErrorRecord`).
pub fn cmdlet_error(cmdlet: &str, info: &ErrorInfo) -> CmdletError {
    let (status, code) = status_of(info);
    let id = parse_fqid(&info.fully_qualified_error_id);
    let exception_type = short_class(&info.exception_type).or_else(|| short_class(&info.reason));
    let message = if info.message.trim().is_empty() {
        "the cmdlet failed on the server without a message".to_owned()
    } else {
        info.message.clone()
    };
    // Upstream text: whatever echoed a request must not pass a credential on.
    let clean = |text: &str| redact_credentials(text);
    CmdletError {
        cmdlet: cmdlet.to_owned(),
        status,
        code: code.to_owned(),
        error_id: id.error_id.as_deref().map(clean),
        exception_type: exception_type.as_deref().map(clean),
        message: clean(&message),
        target: Some(info.target_name.clone())
            .filter(|t| !t.is_empty())
            .or_else(|| info.target_object.clone())
            .map(|t| clean(&t)),
        request_id: id.request_id.as_deref().map(clean),
        server: id.server.as_deref().map(clean),
    }
}

/// A non-terminating ERROR_RECORD as an entry of [`crate::Page::errors`]: `message`, `error_id`,
/// `exception_type`, `category`, `target` and the whole `fully_qualified_error_id`.
pub fn error_json(info: &ErrorInfo) -> Value {
    let id = parse_fqid(&info.fully_qualified_error_id);
    let clean = |text: &str| redact_credentials(text);
    json!({
        "message": clean(&info.message),
        "error_id": id.error_id.as_deref().map(clean),
        "exception_type": short_class(&info.exception_type).or_else(|| short_class(&info.reason)).map(|t| clean(&t)),
        "category": category_name(info.category),
        "target": Some(info.target_name.clone()).filter(|t| !t.is_empty()).or_else(|| info.target_object.clone()).map(|t| clean(&t)),
        "fully_qualified_error_id": clean(&info.fully_qualified_error_id),
        "request_id": id.request_id,
        "server": id.server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use time::macros::datetime;

    #[test]
    fn fqid_parts() {
        let id = parse_fqid(
            "[Server=BN8PR05MB1234,RequestId=6b1a5f0e-77a4-4c4e-9d55-0c8f3e0f1a2b,TimeStamp=Tue, 28 Mar 2023 13:55:04 GMT] [FailureCategory=Cmdlet-ManagementObjectNotFoundException] 9F3A7B21,Microsoft.Exchange.Management.RecipientTasks.GetMailbox",
        );
        assert_eq!(id.error_id.as_deref(), Some("9F3A7B21"));
        assert_eq!(
            id.request_id.as_deref(),
            Some("6b1a5f0e-77a4-4c4e-9d55-0c8f3e0f1a2b")
        );
        assert_eq!(id.server.as_deref(), Some("BN8PR05MB1234"));
        let plain = parse_fqid("ParameterBindingFailed,Set-Mailbox");
        assert_eq!(plain.error_id.as_deref(), Some("ParameterBindingFailed"));
        assert_eq!(plain.request_id, None);
        assert_eq!(plain.server, None);
        assert_eq!(parse_fqid("").error_id, None);
    }

    #[test]
    fn parameters_become_typed_values() {
        assert_eq!(to_ps(&ParamValue::Null), PsValue::Null);
        assert_eq!(to_ps(&ParamValue::Switch(true)), PsValue::Bool(true));
        assert_eq!(to_ps(&ParamValue::Int(5)), PsValue::I32(5));
        assert_eq!(
            to_ps(&ParamValue::Int(5_000_000_000)),
            PsValue::I64(5_000_000_000)
        );
        assert_eq!(
            to_ps(&ParamValue::ResultSize(None)),
            PsValue::String("Unlimited".into())
        );
        assert_eq!(to_ps(&ParamValue::ResultSize(Some(10))), PsValue::I32(10));
        assert_eq!(
            to_ps(&ParamValue::DateTime(datetime!(2024-05-22 18:52:26 +02:00))),
            PsValue::DateTime("2024-05-22T16:52:26Z".into())
        );
        let PsValue::Object(list) = to_ps(&ParamValue::Array(vec![
            ParamValue::String("a".into()),
            ParamValue::Int(1),
        ])) else {
            panic!("an array is an object");
        };
        assert_eq!(list.type_names[0], "System.Object[]");
        assert_eq!(
            list.list,
            Some(vec![PsValue::String("a".into()), PsValue::I32(1)])
        );
        let PsValue::Object(table) = to_ps(&ParamValue::HashTable(BTreeMap::from([(
            "Add".to_owned(),
            ParamValue::String("x".into()),
        )]))) else {
            panic!("a hashtable is an object");
        };
        assert_eq!(table.type_names[0], "System.Collections.Hashtable");
        assert_eq!(
            table.dict,
            Some(vec![(
                PsValue::String("Add".into()),
                PsValue::String("x".into())
            )])
        );
        assert_eq!(
            to_ps(&ParamValue::Bytes(vec![0, 255])),
            PsValue::Bytes(vec![0, 255])
        );
    }

    #[test]
    fn failed_pipeline_error_fields() {
        let info = ErrorInfo {
            message: "The operation couldn't be performed because object 'nobody' couldn't be found.".into(),
            fully_qualified_error_id: "[Server=AM6PR06MB5795,RequestId=req-42,TimeStamp=Tue, 28 Mar 2023 13:55:04 GMT] [FailureCategory=Cmdlet-ManagementObjectNotFoundException] Ex6F9304,Microsoft.Exchange.Management.RecipientTasks.GetMailbox".into(),
            exception_type: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException".into(),
            category: 13,
            reason: "ManagementObjectNotFoundException".into(),
            target_name: "nobody".into(),
            target_object: None,
        };
        let error = cmdlet_error("Get-Mailbox", &info);
        assert_eq!(error.status, 404);
        assert_eq!(error.code, "NotFound");
        assert_eq!(error.error_id.as_deref(), Some("Ex6F9304"));
        assert_eq!(
            error.exception_type.as_deref(),
            Some("ManagementObjectNotFoundException")
        );
        assert_eq!(error.request_id.as_deref(), Some("req-42"));
        assert_eq!(error.server.as_deref(), Some("AM6PR06MB5795"));
        assert_eq!(error.target.as_deref(), Some("nobody"));
        let bad = ErrorInfo {
            category: 5,
            ..info.clone()
        };
        let bad = ErrorInfo {
            exception_type: "System.ArgumentException".into(),
            ..bad
        };
        assert_eq!(status_of(&bad), (400, "BadRequest"));
        let other = ErrorInfo {
            category: 0,
            exception_type: "System.Exception".into(),
            ..info
        };
        assert_eq!(status_of(&other), (500, "InternalServerError"));
    }

    /// REST's status for each kind of terminating error (exosim's REST answers the same).
    #[test]
    fn status_mapping_matches_rest() {
        let info = |exception: &str, reason: &str, category: i32| ErrorInfo {
            message: "m".into(),
            fully_qualified_error_id: "X,Y".into(),
            exception_type: exception.into(),
            category,
            reason: reason.into(),
            target_name: String::new(),
            target_object: None,
        };
        let sma = "System.Management.Automation.";
        for (exception, reason, category, expected) in [
            // An unknown cmdlet, or one RBAC hides: REST says 400, though its category is
            // ObjectNotFound.
            (
                format!("{sma}CommandNotFoundException"),
                "CommandNotFoundException",
                13,
                (400, "BadRequest"),
            ),
            (
                String::new(),
                "CommandNotFoundException",
                13,
                (400, "BadRequest"),
            ),
            (
                format!("{sma}ParameterBindingException"),
                "ParameterBindingException",
                5,
                (400, "BadRequest"),
            ),
            (
                format!("{sma}ParameterBindingValidationException"),
                "ParameterBindingValidationException",
                0,
                (400, "BadRequest"),
            ),
            (
                format!("{sma}ParameterBindingArgumentTransformationException"),
                "",
                0,
                (400, "BadRequest"),
            ),
            // A missing object: 404.
            (
                "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException".into(),
                "ManagementObjectNotFoundException",
                13,
                (404, "NotFound"),
            ),
            (
                "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException".into(),
                "",
                0,
                (404, "NotFound"),
            ),
            (
                "Microsoft.Exchange.Data.Storage.ObjectNotFoundException".into(),
                "",
                0,
                (404, "NotFound"),
            ),
            ("System.Exception".into(), "", 13, (404, "NotFound")),
            // Categories.
            (
                "System.ArgumentException".into(),
                "",
                5,
                (400, "BadRequest"),
            ),
            ("System.Exception".into(), "", 17, (400, "BadRequest")),
            (
                "System.Exception".into(),
                "",
                0,
                (500, "InternalServerError"),
            ),
        ] {
            assert_eq!(
                status_of(&info(&exception, reason, category)),
                expected,
                "{exception} / {reason} / {category}"
            );
        }
        // The whole error too.
        let error = cmdlet_error(
            "Get-Mailboxx",
            &info(&format!("{sma}CommandNotFoundException"), "", 13),
        );
        assert_eq!((error.status, error.code.as_str()), (400, "BadRequest"));
    }
}
