//! What the app may actually run: the `EXOModuleFile` lookup the ExchangeOnlineManagement
//! module makes when it connects (`GET {base}/adminapi/v1.0/{tenant}/EXOModuleFile?Version=…`).
//! The service answers with the cmdlets the app's RBAC allows in `value[0].exportedCmdlets`,
//! comma-separated; the module generates only those (a cmdlet outside the app's RBAC is then
//! "not recognized"). CIPP reads it the same way: KelvinTegelaar/CIPP-API
//! `Modules/CIPPCore/Public/GraphHelper/New-ExoRequest.ps1` (`.value.exportedCmdlets -split ','`,
//! header `CommandName: *`).
//!
//! It sends the token only to the session's https base and follows no redirect (the transport
//! never does).

use crate::error::{ExchangeError, Result};
use crate::response::parse_error;
use crate::rest::SessionConfig;
use serde_json::Value;
use warden_auth::transport::{Auth, HttpRequest, HttpTransport, Method};
use warden_auth::{AccessToken, TokenProvider};

/// The module version sent as `Version=` (the one whose generated code the client follows).
pub const MODULE_VERSION: &str = "3.9.0";

/// The name errors carry for this lookup (it is not a cmdlet).
const LOOKUP: &str = "EXOModuleFile";

/// The lookup's `GET` to the session's configured base (never a regional host: the front door
/// answers it, and redirects it for a tenant elsewhere), with `token`. The one builder of this
/// request: [`exported_cmdlets`] sends it, and the compliance session's region probe sends it
/// to learn the tenant's regional host from the redirect.
pub(crate) fn request(config: &SessionConfig, token: AccessToken) -> HttpRequest {
    let url = format!(
        "{}/adminapi/v1.0/{}/EXOModuleFile?Version={MODULE_VERSION}",
        config.base_url.trim_end_matches('/'),
        config.tenant
    );
    let mut request = HttpRequest::new(Method::Get, url);
    request.headers = vec![
        ("accept".into(), "application/json".into()),
        ("commandname".into(), "*".into()),
        ("x-anchormailbox".into(), config.anchor_mailbox.clone()),
    ];
    request.auth = Some(Auth::Bearer(token));
    request
}

/// The cmdlets the service says this app's RBAC allows, in the service's order.
pub async fn exported_cmdlets(
    config: &SessionConfig,
    tokens: &TokenProvider,
    http: &dyn HttpTransport,
) -> Result<Vec<String>> {
    let base = config.base_url.trim_end_matches('/');
    if !base.starts_with("https://") {
        return Err(ExchangeError::Invalid(format!(
            "Exchange URL '{base}' is not https: the bearer token must not travel in clear"
        )));
    }
    let token = tokens.get_token(&config.scope).await?;
    let response = http
        .send(request(config, token.clone()))
        .await
        .map_err(|e| ExchangeError::Transport {
            cmdlet: LOOKUP.into(),
            reason: e.to_string(),
        })?;
    let header = |h: &str| response.header(h).map(str::to_owned);
    if matches!(response.status, 401 | 403) {
        let error = parse_error(LOOKUP, response.status, &response.body, header);
        return Err(ExchangeError::AccessDenied {
            cmdlet: LOOKUP.into(),
            status: response.status,
            explanation: super::session::access_denied_explanation(
                LOOKUP,
                response.status,
                &error.message,
                &token,
                &config.tenant,
                &config.scope,
            ),
            message: error.message,
            request_id: error.request_id,
        });
    }
    if !(200..300).contains(&response.status) {
        return Err(ExchangeError::Cmdlet(Box::new(parse_error(
            LOOKUP,
            response.status,
            &response.body,
            header,
        ))));
    }
    parse_exported(&response.body).map_err(|reason| ExchangeError::Protocol {
        cmdlet: LOOKUP.into(),
        reason,
    })
}

/// `value[*].exportedCmdlets`, split at commas.
fn parse_exported(body: &[u8]) -> std::result::Result<Vec<String>, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the EXOModuleFile answer is not JSON: {e}"))?;
    let rows = value
        .get("value")
        .and_then(Value::as_array)
        .ok_or("the EXOModuleFile answer has no value array")?;
    let mut cmdlets = Vec::new();
    for row in rows {
        let list = row
            .get("exportedCmdlets")
            .and_then(Value::as_str)
            .ok_or("an EXOModuleFile row has no exportedCmdlets string")?;
        cmdlets.extend(
            list.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(cmdlets)
}

/// Whether `cmdlet` is among `exported` (names compare case-insensitively).
pub fn may_run(exported: &[String], cmdlet: &str) -> bool {
    exported.iter().any(|c| c.eq_ignore_ascii_case(cmdlet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_comma_separated_list() {
        let body = br#"{"value":[{"exportedCmdlets":"Get-Mailbox, Set-Mailbox,,Get-User","x":1}]}"#;
        let cmdlets = parse_exported(body).unwrap();
        assert_eq!(cmdlets, ["Get-Mailbox", "Set-Mailbox", "Get-User"]);
        assert!(may_run(&cmdlets, "get-mailbox") && !may_run(&cmdlets, "Remove-Mailbox"));
        assert!(parse_exported(br#"{"value":[{}]}"#).is_err());
    }
}
