//! Decoding InvokeCommand answers: the success envelope (`value`, `@odata.nextLink`,
//! `@adminapi.warnings`, `@adminapi.errors`, per-property annotations) and the error body
//! (`error.details[0].message` = `ErrorId|ExceptionClass|Message`).
//!
//! A 2xx without a `value` array (only `@odata.context` and `@adminapi.warnings`, a 204, an
//! empty body) is zero objects plus its warnings: Exchange answers a write that returns nothing
//! that way. It refuses a success body that is not JSON, rather than guessing (the session
//! decides what that means for a write), and it keeps credentials an upstream echoed into an
//! error body out of the error it returns.

use crate::error::CmdletError;
use serde_json::{Map, Value};

/// One page of results.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Result objects.
    pub objects: Vec<Map<String, Value>>,
    /// `@adminapi.warnings`.
    pub warnings: Vec<String>,
    /// `@adminapi.errors`: non-terminating errors that came inside a 200.
    pub errors: Vec<Value>,
    /// `@odata.nextLink`.
    pub next_link: Option<String>,
    /// `request-id` of the response.
    pub request_id: Option<String>,
}

/// A 2xx answer: its page, and whether it was a confirmation prompt instead of a result.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The page (empty for a prompt).
    pub page: Page,
    /// `@adminapi.confirmationmessage` when it is a non-empty string: a prompt (or a what-if
    /// description) when the request asked for one, a warning otherwise (the session decides).
    pub confirmation: Option<String>,
    /// Why a body without `value` is not an answer of zero objects: it is empty, or lacks
    /// `@odata.context`, or carries an `error` (`None` when `value` came, or the envelope
    /// without it did). Only a 204 makes it zero objects anyway; a read is refused, a write's
    /// 2xx is kept (the session decides).
    pub not_an_envelope: Option<String>,
    /// The text of an `error` member inside a 2xx (a warning for a write).
    pub error_member: Option<String>,
}

/// Removes `@odata.type` / `@data.type` annotations (any key containing `@`), recursively.
pub fn strip_annotations(object: &mut Map<String, Value>) {
    object.retain(|key, _| !key.contains('@'));
    for value in object.values_mut() {
        strip_value(value);
    }
}

fn strip_value(value: &mut Value) {
    match value {
        Value::Object(map) => strip_annotations(map),
        Value::Array(items) => items.iter_mut().for_each(strip_value),
        _ => {}
    }
}

/// Parses a 2xx body. `keep_annotations` keeps `@odata.type`/`@data.type` keys.
///
/// An empty body (a 204) and an object without `value` are zero objects: the module reads
/// `$ResultObject.value` and a missing one is `$null`, i.e. nothing (Calvindd2f/EXO_PROJECT
/// `.idea/full_modoule_dump.ps1`, `PrintResultAndCheckForNextPage`).
pub fn parse_page(body: &[u8], keep_annotations: bool) -> Result<Page, String> {
    let answer = parse_answer(body, keep_annotations)?;
    match answer.not_an_envelope {
        Some(reason) => Err(reason),
        None => Ok(answer.page),
    }
}

/// [`parse_page`], keeping `@adminapi.confirmationmessage`.
pub fn parse_answer(body: &[u8], keep_annotations: bool) -> Result<Answer, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Answer {
            not_an_envelope: Some("the answer is empty (only a 204 may be)".into()),
            ..Answer::default()
        });
    }
    let root: Value =
        serde_json::from_slice(body).map_err(|e| format!("the response is not JSON ({e})"))?;
    let Value::Object(mut root) = root else {
        return Err("the response is not a JSON object".into());
    };
    let error_member = root
        .get("error")
        .filter(|e| !e.is_null())
        .map(|e| match &e["message"] {
            Value::String(message) => redact_credentials(message),
            _ => redact_credentials(&e.to_string()),
        });
    let has_value = root.get("value").is_some_and(|v| !v.is_null());
    // The module's flow: a result without `value` is `$null`, nothing. Only the envelope
    // (`@odata.context`) without an `error` says so; `{}`, `{"values":[]}` or an error body
    // are not Exchange saying "no objects".
    let not_an_envelope = if error_member.is_some() {
        Some(format!(
            "the answer carries an error: {}",
            error_member.as_deref().unwrap_or_default()
        ))
    } else if !has_value && !root.contains_key("@odata.context") {
        Some("the answer has neither 'value' nor '@odata.context'".into())
    } else {
        None
    };
    let values = match root.remove("value") {
        Some(Value::Array(values)) => values,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("the response's 'value' is not an array".into()),
    };
    let mut objects = Vec::with_capacity(values.len());
    for value in values {
        let Value::Object(mut object) = value else {
            return Err("a result in 'value' is not an object".into());
        };
        if !keep_annotations {
            strip_annotations(&mut object);
        }
        objects.push(object);
    }
    let strings = |v: Option<Value>| match v {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect(),
        _ => Vec::new(),
    };
    let warnings = strings(root.remove("@adminapi.warnings"));
    let errors = match root.remove("@adminapi.errors") {
        Some(Value::Array(items)) => items,
        Some(other) if !other.is_null() => vec![other],
        _ => Vec::new(),
    };
    let next_link = root
        .remove("@odata.nextLink")
        .or_else(|| root.remove("odata.nextLink"))
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|s| !s.is_empty());
    // The module acts on the message only when it is a non-empty string
    // (`!string.IsNullOrEmpty(confirmationMessage)`); anything else is no message.
    let confirmation = match root.remove("@adminapi.confirmationmessage") {
        Some(Value::String(text)) if !text.trim().is_empty() => Some(text),
        _ => None,
    };
    Ok(Answer {
        page: Page {
            objects,
            warnings,
            errors,
            next_link,
            request_id: None,
        },
        confirmation,
        not_an_envelope,
        error_member,
    })
}

/// Parses an error answer into a [`CmdletError`]; the message follows the module's extraction
/// order (`details[0].message`, then `innererror.internalexception.message`, then
/// `error.message`).
pub fn parse_error(
    cmdlet: &str,
    status: u16,
    body: &[u8],
    header: impl Fn(&str) -> Option<String>,
) -> CmdletError {
    let root: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = &root["error"];
    let detail = &error["details"][0];
    let mut error_id = None;
    let mut exception_type = header("x-exceptiontype");
    let from_detail = detail["message"].as_str().map(|text| {
        let mut parts = text.splitn(3, '|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(class), Some(message)) => {
                error_id = Some(id.to_owned()).filter(|id| !id.is_empty());
                let short = class.rsplit('.').next().unwrap_or(class).to_owned();
                if !short.is_empty() {
                    exception_type.get_or_insert(short);
                }
                message
            }
            _ => text,
        }
    });
    // The first source that says something: an empty message is no message.
    let said = [
        from_detail,
        error["innererror"]["internalexception"]["message"].as_str(),
        error["message"].as_str(),
    ]
    .into_iter()
    .flatten()
    .find(|text| !text.trim().is_empty());
    let message = if let Some(text) = said {
        text.to_owned()
    } else if body.is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("HTTP {status} with a body that is not Exchange's error JSON: {text}")
    };
    // The body is upstream text: whatever echoes the request on the way (a proxy's error page,
    // a handler that dumps it) must not pass the bearer token on to whoever reads the error.
    let clean = |text: &str| redact_credentials(text);
    CmdletError {
        cmdlet: cmdlet.to_owned(),
        status,
        code: clean(error["code"].as_str().unwrap_or("")),
        error_id: error_id.as_deref().map(clean),
        exception_type: exception_type.as_deref().map(clean),
        message: clean(&message),
        target: detail["target"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(clean),
        // Header values are server text too.
        request_id: header("request-id").as_deref().map(clean),
        server: header("x-calculatedbetarget").as_deref().map(clean),
    }
}

/// Whether the run after `Basic ` is credentials: at least 8 base64 characters, unless it is a
/// plain word (letters only, lower case after the first: "Basic authentication") that does
/// not decode to `user:password`.
fn basic_credentials(run: &str) -> bool {
    if run.len() < 8 {
        return false;
    }
    let word = run.bytes().all(|b| b.is_ascii_alphabetic())
        && run.bytes().skip(1).all(|b| b.is_ascii_lowercase());
    if !word {
        return true;
    }
    // A plain word is redacted only if it decodes to something with the `:` of user:password.
    use base64::Engine;
    let whole = run.len() / 4 * 4;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&run[..whole])
        .is_ok_and(|bytes| bytes.contains(&b':'))
}

/// `text` with what could authenticate replaced by `[redacted]`: a long credential after
/// `Bearer ` (any token format), the base64 `user:password` after `Basic ` (8 characters or
/// more, not a plain word: for OAuth it holds the token, for plain Basic the password), and
/// any JWT-shaped run (`eyJ…`, dots allowed, so a cut-off token goes too). Short words are
/// kept, so ordinary messages read the same.
pub fn redact_credentials(text: &str) -> String {
    // RFC 6750 `b64token` characters (a JWT's are a subset).
    let token_byte = |b: u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
    };
    let run = |from: usize| {
        from + text.as_bytes()[from..]
            .iter()
            .take_while(|b| token_byte(**b))
            .count()
    };
    const LONG: usize = 16;
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        let at_word = i == 0 || !token_byte(bytes[i - 1]);
        // A JWT may follow `=` or `/` (a query, a path): only base64url letters join it.
        let at_jwt =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || b"-_".contains(&bytes[i - 1]));
        // Matches start at ASCII bytes, so every slice below is at a character boundary.
        let secret = if at_word
            && bytes.len() - i > 7
            && bytes[i..i + 7].eq_ignore_ascii_case(b"bearer ")
        {
            let start = i + 7 + bytes[i + 7..].iter().take_while(|b| **b == b' ').count();
            let end = run(start);
            (end - start >= LONG).then_some((start, end))
        } else if at_word && bytes.len() - i > 6 && bytes[i..i + 6].eq_ignore_ascii_case(b"basic ")
        {
            let start = i + 6 + bytes[i + 6..].iter().take_while(|b| **b == b' ').count();
            // The standard base64 alphabet only (a sentence's full stop is not part of it).
            let end = start
                + bytes[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
                    .count();
            basic_credentials(&text[start..end]).then_some((start, end))
        } else if at_jwt && bytes[i..].starts_with(b"eyJ") {
            let end = run(i);
            (end - i >= LONG).then_some((i, end))
        } else {
            None
        };
        match secret {
            Some((start, end)) => {
                out.push_str(&text[copied..start]);
                out.push_str("[redacted]");
                copied = end;
                i = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_recorded_envelope_parses_and_annotations_are_stripped() {
        let body = json!({
            "@odata.context": "https://outlook.office.com/adminapi/beta/x/$metadata#Collection(Exchange.GenericHashTable)",
            "adminapi.warnings@odata.type": "#Collection(String)", "@adminapi.warnings": ["w1"],
            "value": [{"DatabaseGuid@data.type": "System.Guid", "DatabaseGuid@odata.type": "#Guid", "DatabaseGuid": "ae06",
                       "EmailAddresses@odata.type": "#Collection(String)", "EmailAddresses": ["smtp:a", "SMTP:b"]}],
            "@odata.nextLink": "https://outlook.office.com/adminapi/beta/x/InvokeCommand?$skiptoken=2"
        });
        let page = parse_page(body.to_string().as_bytes(), false).unwrap();
        assert_eq!(page.objects.len(), 1);
        assert_eq!(
            page.objects[0].keys().collect::<Vec<_>>(),
            vec!["DatabaseGuid", "EmailAddresses"]
        );
        assert_eq!(page.warnings, vec!["w1"]);
        assert!(page.next_link.unwrap().contains("skiptoken"));
        let kept = parse_page(body.to_string().as_bytes(), true).unwrap();
        assert!(kept.objects[0].contains_key("DatabaseGuid@odata.type"));
    }

    #[test]
    fn non_envelopes_are_refused() {
        for body in [
            "<html/>",
            "[]",
            r#"{"value":{}}"#,
            r#"{"value":[1]}"#,
            "",
            "{}",
            r#"{"values":[]}"#,
            r#"{"error":{"code":"X","message":"broken"}}"#,
            r#"{"@odata.context":"x","error":{"message":"broken"}}"#,
        ] {
            assert!(parse_page(body.as_bytes(), false).is_err(), "{body}");
        }
    }

    #[test]
    fn an_answer_without_value_is_zero_objects_and_its_warnings() {
        let only_warnings = json!({
            "@odata.context": "https://outlook.office.com/adminapi/beta/x/$metadata#Collection(Exchange.GenericHashTable)",
            "adminapi.warnings@odata.type": "#Collection(String)", "@adminapi.warnings": ["w1"]
        })
        .to_string();
        for body in ["", " \r\n", only_warnings.as_str()] {
            let answer = parse_answer(body.as_bytes(), false).unwrap();
            assert!(answer.page.objects.is_empty(), "{body}");
            assert!(answer.confirmation.is_none());
        }
        assert_eq!(
            parse_page(only_warnings.as_bytes(), false)
                .unwrap()
                .warnings,
            ["w1"]
        );
        let prompt = r#"{"@adminapi.confirmationmessage":"Are you sure?","value":[]}"#;
        let answer = parse_answer(prompt.as_bytes(), false).unwrap();
        assert_eq!(answer.confirmation.as_deref(), Some("Are you sure?"));
    }

    #[test]
    fn error_text_never_carries_a_bearer_token() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sifQ.c2lnbmF0dXJl";
        let echoed = format!("Authorization: Bearer {jwt}");
        let json =
            json!({"error": {"code": "BadRequest", "message": format!("Bad request: {echoed}")}});
        let html = format!("<html><pre>{echoed}</pre></html>");
        for body in [json.to_string(), html, format!("token={jwt}&x=1")] {
            let error = parse_error("Get-Mailbox", 502, body.as_bytes(), |_| None);
            assert!(!error.message.contains("eyJ"), "{}", error.message);
            assert!(error.message.contains("[redacted]"), "{}", error.message);
        }
        // Opaque tokens after `Bearer` go too; cut-off JWTs go; ordinary words stay.
        for (text, expected) in [
            (
                "header: bearer 0123456789abcdef0123+/=",
                "header: bearer [redacted]",
            ),
            ("cut: eyJhbGciOiJSUzI1Ni", "cut: [redacted]"),
            (
                "The operation couldn't be performed because object 'eyJohn' couldn't be found.",
                "The operation couldn't be performed because object 'eyJohn' couldn't be found.",
            ),
            ("Use a Bearer token.", "Use a Bearer token."),
            ("héllo Bearer ✓", "héllo Bearer ✓"),
            // `Basic` and base64 user:password, in any case; a word after Basic stays.
            (
                "Authorization: Basic Q09OVE9TT1xhZG1pbjpwdw==",
                "Authorization: Basic [redacted]",
            ),
            (
                "authorization: BASIC  dXNlcjpwYXNzd29yZA",
                "authorization: BASIC  [redacted]",
            ),
            ("basic aBcdefgh!", "basic [redacted]!"),
            (
                "Basic authentication is disabled.",
                "Basic authentication is disabled.",
            ),
            ("Use Basic Authentication.", "Use Basic Authentication."),
            ("Basic dXNlcg short", "Basic dXNlcg short"),
            // A lower-case word that is base64 of `user:password` goes.
            ("Basic dxnlcjpw", "Basic [redacted]"),
        ] {
            assert_eq!(redact_credentials(text), expected);
        }
    }

    #[test]
    fn the_recorded_error_body_splits_into_id_class_and_message() {
        let body = json!({"error":{"code":"NotFound","message":"Error executing cmdlet","details":[{"code":"Client","target":"","message":"Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation couldn't be performed because object 'x' couldn't be found."}],"innererror":{"message":"Error executing cmdlet","type":"Microsoft.Exchange.Admin.OData.Core.ODataServiceException"}}});
        let error = parse_error("Get-Mailbox", 404, body.to_string().as_bytes(), |h| {
            (h == "request-id").then(|| "r-1".to_owned())
        });
        assert_eq!(error.error_id.as_deref(), Some("Ex6F9304"));
        assert_eq!(
            error.exception_type.as_deref(),
            Some("ManagementObjectNotFoundException")
        );
        assert!(
            error
                .message
                .starts_with("The operation couldn't be performed")
        );
        assert_eq!(error.code, "NotFound");
        assert_eq!(error.request_id.as_deref(), Some("r-1"));
        assert_eq!(error.target, None);
        let plain = parse_error("Get-Mailbox", 401, br#"{"error":{"code":"Unauthorized","message":"User is not allowed to call Get-Mailbox"}}"#, |_| None);
        assert_eq!(plain.message, "User is not allowed to call Get-Mailbox");
        let html = parse_error("Get-Mailbox", 502, b"<html>Bad gateway</html>", |_| None);
        assert!(
            html.message.contains("not Exchange's error JSON"),
            "{}",
            html.message
        );
    }

    #[test]
    fn header_ids_never_carry_a_bearer_token() {
        let echoed = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sifQ.c2lnbmF0dXJl";
        let error = parse_error("Get-Mailbox", 500, b"{}", |_| Some(echoed.to_owned()));
        for id in [error.request_id.unwrap(), error.server.unwrap()] {
            assert!(!id.contains("eyJhbGci"), "{id}");
        }
    }
}
