//! The Exchange Online half of the emulator: `POST /adminapi/{beta|v1.0}/{tenant}/InvokeCommand`
//! and `GET /adminapi/v1.0/{tenant}/EXOModuleFile` (plus the `Get-EXO*` entity sets,
//! [`entity`], and `$batch`, [`batch`]), on the same server and shared state as the
//! identity half, following `docs/protocol/exo-protocol.md` §1 and §3.
//!
//! A request goes through, in order: the tenant (GUID or any accepted domain); added latency
//! (the tenant's own, else the global one); the bearer token and its roles ([`auth`]);
//! throttling ([`faults::Limiter`]); the `CmdletInput` body; the cmdlet and the caller's RBAC;
//! strict anchor mode; injected faults; parameter binding; the paging token; execution against
//! the tenant's [`store::Org`]; persistence; and the response envelope (§1.6) or error body
//! (§1.8). Every request is recorded in the Exchange request log with its credentials redacted.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Digest as _;

use crate::counters::Counter;
use crate::directory::TenantLookup;
use crate::error::Result;
use crate::state::Shared;

pub(crate) mod auth;
pub(crate) mod batch;
pub(crate) mod cmdlets;
pub(crate) mod entity;
pub(crate) mod faults;
pub(crate) mod filter;
pub(crate) mod obj;
pub(crate) mod rbac;
pub(crate) mod secure_string;
pub(crate) mod store;

use cmdlets::{ExoError, Paging, Result2, Rows, Run};
pub(crate) use faults::RateState;
use faults::{ExchangeFault, Limiter, Throttle};
use obj::BE_SERVER;
use store::Org;

/// The content type of every JSON response, exactly as captured (§1.6).
pub(crate) const CONTENT_TYPE: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// Largest body InvokeCommand reads.
const MAX_BODY: usize = 4 << 20;

/// Largest `odata.maxpagesize` honoured (and the default), §1.7.
const MAX_PAGE: usize = 1000;

/// The organisation system mailbox every tenant has (§1.4).
const SYSTEM_MAILBOX: &str = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}";

/// Bound on kept Exchange log entries.
const MAX_LOG: usize = 10_000;

/// One Exchange request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExchangeRequestRecord {
    /// When it arrived, Unix milliseconds.
    pub unix_ms: u64,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string as sent.
    pub query: Option<String>,
    /// Header names (lower case) and values; `Authorization` is reduced to its scheme.
    pub headers: Vec<(String, String)>,
    /// Canonical cmdlet name, when the body named a known cmdlet (else the name as sent).
    pub cmdlet: Option<String>,
    /// Parameter names as sent (annotations excluded).
    pub parameter_names: Vec<String>,
    /// The `Identity` value as sent, when it was a string: what the client asked Exchange to
    /// act on (a recipient's name, address or id; never a secret).
    #[serde(default)]
    pub identity: Option<String>,
    /// Response status; 0 when the connection was reset instead of answered. A slow answer is
    /// logged before its wait, with the status it is going to send.
    pub status: u16,
    /// `x-ExceptionType` of an error response.
    pub exception_type: Option<String>,
    /// Whether the request changed the tenant's state.
    pub applied: bool,
    /// The injected fault, if any (`reset_after_apply`, `strict_anchor`, `throttled`, ...); for
    /// Remote PowerShell also the subcode of a WS-Management fault answered (`w:TimedOut`).
    pub fault: Option<String>,
    /// The tenant the request was for (its id), once the URL's tenant (or, for Remote
    /// PowerShell, the caller's token) named a known one: the witness of which tenant a write
    /// was applied to.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The WS-Management action of a Remote PowerShell request (`Create`, `Command`, `Receive`,
    /// `Send`, `Signal`, `Delete`); `None` for REST.
    #[serde(default)]
    pub action: Option<String>,
}

impl ExchangeRequestRecord {
    /// A record of a request just received (status 0 until answered), credentials redacted.
    pub(crate) fn received(method: &str, uri: &Uri, headers: &HeaderMap) -> Self {
        ExchangeRequestRecord {
            unix_ms: u64::try_from(now_unix_ms()).unwrap_or(0),
            method: method.to_owned(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: logged_headers(headers),
            cmdlet: None,
            parameter_names: Vec::new(),
            identity: None,
            status: 0,
            exception_type: None,
            applied: false,
            fault: None,
            tenant_id: None,
            action: None,
        }
    }

    /// The value of header `name` (case-insensitive), as logged.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The Exchange state of one emulator.
#[derive(Debug)]
pub(crate) struct Exchange {
    orgs: Vec<Mutex<Org>>,
    /// Tenant id to its index in `orgs` (ids never change while running).
    org_index: std::collections::HashMap<String, usize>,
    /// Accepted domain (lower case) to its tenant id, so a lookup locks no organisation;
    /// rebuilt when [`Exchange::reload`] replaces them.
    domain_index: std::sync::RwLock<std::collections::HashMap<String, String>>,
    pub faults: faults::ExchangeFaults,
    pub throttle: Option<Throttle>,
    /// `--exchange-latency-ms`: the latency when no run-time one is set.
    latency: Duration,
    pub limiter: Limiter,
    state_file: Option<PathBuf>,
    save_lock: Mutex<()>,
    /// Keys the paging tokens, so a client cannot forge one.
    pub(crate) page_key: [u8; 32],
    log: Mutex<VecDeque<ExchangeRequestRecord>>,
    pub connections: Arc<crate::conn::Connections>,
}

impl Exchange {
    /// Builds (or loads from `state_file`) one organisation per tenant: `(id, domain, its own
    /// mailbox count)`, `mailboxes` for those without.
    pub(crate) fn build(
        tenants: &[(String, String, Option<usize>)],
        mailboxes: usize,
        seed: u64,
        state_file: Option<PathBuf>,
        throttle: Option<Throttle>,
        latency: Duration,
    ) -> Result<Exchange> {
        let mut loaded = match &state_file {
            Some(path) => store::load(path)?.map(|s| s.tenants).unwrap_or_default(),
            None => Vec::new(),
        };
        let orgs: Vec<Mutex<Org>> = tenants
            .iter()
            .enumerate()
            .map(|(i, (id, domain, own))| {
                let org = match loaded.iter().position(|o| o.tenant_id == *id) {
                    Some(at) => loaded.swap_remove(at),
                    // Tenants after the first get their own seed, so they differ.
                    None => Org::generate(
                        id,
                        domain,
                        seed.wrapping_add(i as u64),
                        own.unwrap_or(mailboxes),
                    ),
                };
                Mutex::new(org)
            })
            .collect();
        let org_index = tenants
            .iter()
            .enumerate()
            .map(|(i, (id, _, _))| (id.clone(), i))
            .collect();
        let domain_index = std::sync::RwLock::new(index_domains(&orgs));
        let mut page_key = [0u8; 32];
        rand::fill(&mut page_key[..]);
        Ok(Exchange {
            orgs,
            org_index,
            domain_index,
            faults: faults::ExchangeFaults::default(),
            throttle,
            latency,
            limiter: Limiter::default(),
            state_file,
            save_lock: Mutex::new(()),
            page_key,
            log: Mutex::new(VecDeque::new()),
            connections: Arc::default(),
        })
    }

    pub(crate) fn org(&self, tenant_id: &str) -> Option<&Mutex<Org>> {
        // By index, never by locking each org: a busy tenant must not hold up another's lookup.
        self.org_index.get(tenant_id).map(|i| &self.orgs[*i])
    }

    /// The throttle of `tenant_id`: its own or the run-time one (control endpoint), else
    /// `--throttle`.
    pub(crate) fn throttle_for(&self, tenant_id: &str) -> Option<Throttle> {
        self.faults.throttle(tenant_id, self.throttle)
    }

    /// Waits the added latency of an answer to `tenant_id` (its own or the run-time one, else
    /// `--exchange-latency-ms`): every Exchange answer goes through here.
    pub(crate) async fn delay(&self, tenant_id: Option<&str>) {
        let latency = self.faults.latency(tenant_id, self.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// Finds the tenant id of an organisation by any accepted domain.
    pub(crate) fn tenant_by_domain(&self, domain: &str) -> Option<String> {
        self.domain_index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&domain.to_ascii_lowercase())
            .cloned()
    }

    /// Saves every organisation to the state file (atomically); a no-op without one.
    pub(crate) fn save(&self) -> Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let _guard = self.save_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(1 << 16);
        out.extend_from_slice(b"{\"version\":1,\"tenants\":[");
        for (i, org) in self.orgs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let org = lock(org);
            serde_json::to_writer(&mut out, &*org).map_err(|e| {
                crate::error::Error::state("encode state for", path, std::io::Error::other(e))
            })?;
        }
        out.extend_from_slice(b"]}");
        store::write_atomically(path, &out)
    }

    /// Replaces every organisation with its copy in the state file, as a restarted process
    /// would find it; a no-op without a state file (or without an entry for a tenant).
    pub(crate) fn reload(&self) -> Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let Some(saved) = store::load(path)? else {
            return Ok(());
        };
        for saved_org in saved.tenants {
            if let Some(org) = self.org(&saved_org.tenant_id) {
                *lock(org) = saved_org;
            }
        }
        *self.domain_index.write().unwrap_or_else(|e| e.into_inner()) = index_domains(&self.orgs);
        Ok(())
    }

    pub(crate) fn record(&self, entry: ExchangeRequestRecord) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= MAX_LOG {
            log.pop_front();
        }
        log.push_back(entry);
    }

    pub(crate) fn log_snapshot(&self) -> Vec<ExchangeRequestRecord> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub(crate) fn clear_log(&self) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Resolves a tenant (GUID or domain) to its tenant id.
    pub(crate) fn resolve_tenant(&self, shared: &Shared, segment: &str) -> Option<String> {
        match shared.directory.lookup(segment) {
            TenantLookup::Found(t) => Some(t.id.clone()),
            _ => self.tenant_by_domain(segment),
        }
    }

    /// A mailbox as `Get-Mailbox` shows it, without annotations.
    pub(crate) fn mailbox(&self, shared: &Shared, tenant: &str, identity: &str) -> Option<Value> {
        let id = self.resolve_tenant(shared, tenant)?;
        let org = lock(self.org(&id)?);
        let i = org.resolve_mailbox(identity).ok()?;
        Some(Value::Object(obj::plain_object(&obj::mailbox(
            &org,
            &org.mailboxes[i],
        ))))
    }

    pub(crate) fn mailbox_count(&self, shared: &Shared, tenant: &str) -> usize {
        self.resolve_tenant(shared, tenant)
            .and_then(|id| self.org(&id).map(|o| lock(o).mailboxes.len()))
            .unwrap_or(0)
    }
}

/// The string value of a call's `Identity` parameter, for the request log.
/// The `{"CmdletInput":{"CmdletName":…,"Parameters":{…}}}` body of an `InvokeCommand`, noted in
/// `record`; the one reading of it for Exchange and Security & Compliance alike.
pub(crate) fn cmdlet_input(
    body: &[u8],
    record: &mut ExchangeRequestRecord,
) -> Result<(String, Map<String, Value>), Answer> {
    let parsed: Option<(String, Map<String, Value>)> =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let input = v.get("CmdletInput")?.as_object()?;
            let name = input.get("CmdletName")?.as_str()?.to_owned();
            let params = match input.get("Parameters") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(_) => return None,
            };
            Some((name, params))
        });
    let Some((name, params)) = parsed else {
        return Err(service_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The request body is not a valid CmdletInput: expected {\"CmdletInput\":{\"CmdletName\":\"...\",\"Parameters\":{...}}}.",
        ));
    };
    record.cmdlet = Some(name.clone());
    record.parameter_names = params
        .keys()
        .filter(|k| !k.contains('@'))
        .cloned()
        .collect();
    record.identity = identity_value(&params);
    Ok((name, params))
}

/// The answer to a caller whose RBAC does not include `cmdlet` (401, as the service answers;
/// MicrosoftDocs/office-docs-powershell#7970), counted as an auth failure.
pub(crate) fn not_allowed_to_call(shared: &Shared, cmdlet: &str) -> Answer {
    shared.counters.bump(Counter::ExchangeAuthFailure);
    service_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        &format!("User is not allowed to call {cmdlet}"),
    )
}

pub(crate) fn identity_value(params: &Map<String, Value>) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Identity"))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned)
}

/// Every accepted domain of `orgs` (lower case) to its tenant id; the first tenant wins a domain
/// two organisations claim, as the linear search did.
fn index_domains(orgs: &[Mutex<Org>]) -> std::collections::HashMap<String, String> {
    let mut index = std::collections::HashMap::new();
    for org in orgs {
        let org = lock(org);
        for domain in org.accepted_domains() {
            index
                .entry(domain.to_ascii_lowercase())
                .or_insert_with(|| org.tenant_id.clone());
        }
    }
    index
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Exchange routes; merged with the others in [`crate::server`]. Both spellings of the
/// prefix are routed: the module and most clients send `adminapi`, several send `AdminApi`.
pub(crate) fn router() -> Router<Arc<Shared>> {
    let mut router = Router::new();
    for prefix in ["adminapi", "AdminApi"] {
        router = router
            .route(
                &format!("/{prefix}/{{version}}/{{tenant}}/InvokeCommand"),
                post(invoke),
            )
            .route(
                &format!("/{prefix}/{{version}}/{{tenant}}/EXOModuleFile"),
                get(module_file),
            )
            .route(
                &format!("/{prefix}/{{version}}/{{tenant}}/$batch"),
                post(batch::batch),
            )
            .route(
                &format!("/{prefix}/{{version}}/{{tenant}}/{{entity}}"),
                get(entity::get_entity),
            );
    }
    router
}

fn now_unix() -> i64 {
    crate::identity::unix_now()
}

pub(crate) fn now_unix_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

fn iso_ms(unix_ms: i64) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

/// Headers as logged: everything, with `Authorization` reduced to its scheme.
fn logged_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("[binary]");
            let value = if name == header::AUTHORIZATION || name.as_str() == "proxy-authorization" {
                match value.split_once(' ') {
                    Some((scheme, _)) => format!("{scheme} [redacted]"),
                    None => "[redacted]".to_owned(),
                }
            } else {
                value.to_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect()
}

/// Response under construction: status, body, extra headers, and what the log should say.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    pub(crate) content_type: &'static str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) exception_type: Option<String>,
}

impl Answer {
    pub(crate) fn json(status: StatusCode, body: String) -> Self {
        Answer {
            status,
            body,
            content_type: CONTENT_TYPE,
            headers: Vec::new(),
            exception_type: None,
        }
    }

    pub(crate) fn into_response(self, request_id: &str, rate: Option<&RateState>) -> Response {
        let mut response = (self.status, self.body).into_response();
        let h = response.headers_mut();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        };
        set("content-type", self.content_type);
        set("request-id", request_id);
        set("x-calculatedbetarget", BE_SERVER);
        set("odata-version", "4.0");
        if let Some(rate) = rate {
            set("rate-limit-limit", &rate.limit.to_string());
            set("rate-limit-remaining", &rate.remaining.to_string());
            set("rate-limit-reset", &iso_ms(rate.reset_unix_ms));
        }
        if let Some(t) = &self.exception_type {
            set("x-exceptiontype", t);
        }
        for (name, value) in &self.headers {
            set(name, value);
        }
        response
    }
}

pub(crate) fn warnings_json(warnings: &[String]) -> String {
    format!(
        "\"adminapi.warnings@odata.type\":\"#Collection(String)\",\"@adminapi.warnings\":{}",
        Value::from(warnings.to_vec())
    )
}

/// The §1.8 error body for a cmdlet failure.
pub(crate) fn cmdlet_error(err: &ExoError) -> Answer {
    let body = json!({
        "error": {
            "code": err.code,
            "message": "Error executing cmdlet",
            "details": [{"code": "Client", "target": "", "message": err.details_message()}],
            "innererror": {
                "message": "Error executing cmdlet",
                "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                "stacktrace": "   at Microsoft.Exchange.AdminApi.CommandInvocation.CommandInvocation.InvokeCommand(QueryContext queryContext, CmdletInvokeInputType cmdletInvokeInputType)",
                "internalexception": {
                    "message": "Exception of type 'Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException' was thrown.",
                    "type": "Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException",
                    "stacktrace": ""
                }
            },
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": []
        }
    });
    let mut answer = Answer::json(
        StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_REQUEST),
        body.to_string(),
    );
    answer.exception_type = Some(err.short_class().to_owned());
    answer
}

/// The answer of an injected [`ExchangeFault::ServerError`] (a 500 the module does not call
/// transient) or else [`ExchangeFault::BadGateway`] (a gateway's 502 page).
pub(crate) fn server_failure(fault: ExchangeFault) -> Answer {
    if fault == ExchangeFault::BadGateway {
        return Answer {
            status: StatusCode::BAD_GATEWAY,
            body: "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>".to_owned(),
            content_type: "text/html",
            headers: Vec::new(),
            exception_type: None,
        };
    }
    service_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        "An internal server error occurred. The operation failed.",
    )
}

/// A service-level error (`{"error":{"code","message","innererror"}}`), for auth, throttling,
/// routing and paging failures that happen outside a cmdlet.
pub(crate) fn service_error(status: StatusCode, code: &str, message: &str) -> Answer {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innererror": {
                "message": message,
                "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"
            }
        }
    });
    Answer::json(status, body.to_string())
}

/// 401 for a missing or invalid token, with the challenge Exchange Online's resource sends.
/// The exact challenge parameters are inferred: those of Exchange Online's other REST endpoints.
pub(crate) fn invalid_token(shared: &Shared, message: &str) -> Answer {
    let mut answer = service_error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
    answer.headers.push((
        "www-authenticate",
        format!(
            "Bearer client_id=\"00000002-0000-0ff1-ce00-000000000000\", trusted_issuers=\"00000001-0000-0000-c000-000000000000@*\", token_types=\"app_asserted_user_v1 service_asserted_app_v1\", authorization_uri=\"{}/common/oauth2/authorize\", error=\"invalid_token\"",
            shared.base_url
        ),
    ));
    answer.exception_type = Some("UnauthorizedAccessException".to_owned());
    answer
}

/// Why a caller may not use Exchange at all (before any cmdlet is looked at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No usable token: missing, malformed, badly signed, expired, wrong audience or tenant.
    Token(String),
    /// A valid token without the `Exchange.ManageAsApp` application permission.
    NoAppRole { appid: String },
    /// A valid token whose `wids` hold no role Exchange supports for app-only access.
    NoDirectoryRole { appid: String },
}

impl Denied {
    /// The text the service gives for this refusal.
    pub(crate) fn message(&self) -> String {
        match self {
            Denied::Token(why) => why.clone(),
            // Our wording (the service's is not recorded): the token lacks the application
            // permission (§3.4 "bare UnAuthorized").
            Denied::NoAppRole { appid } => format!(
                "The application {appid} does not have the Exchange.ManageAsApp permission on Office 365 Exchange Online."
            ),
            Denied::NoDirectoryRole { appid } => format!(
                "The role assigned to application {appid} isn't supported in this scenario. Please check online documentation for assigning correct Directory Roles to Azure AD Application for EXO App-Only Authentication."
            ),
        }
    }
}

/// Checks a bearer `authorization` value and the roles that every Exchange call needs (not the
/// cmdlet), for either transport; a refusal counts as an Exchange auth failure.
pub(crate) fn check_caller(
    shared: &Shared,
    authorization: Option<&str>,
    tenant_id: &str,
) -> Result<auth::Caller, Denied> {
    let checked = match auth::verify(shared, authorization, tenant_id, now_unix()) {
        Err(refused) => Err(Denied::Token(refused.0)),
        Ok(caller) if !caller.has_role => Err(Denied::NoAppRole {
            appid: caller.appid,
        }),
        Ok(caller) if !caller.has_exchange_rbac() => Err(Denied::NoDirectoryRole {
            appid: caller.appid,
        }),
        Ok(caller) => Ok(caller),
    };
    if checked.is_err() {
        shared.counters.bump(Counter::ExchangeAuthFailure);
    }
    checked
}

/// Checks the token and the roles that every Exchange call needs (not the cmdlet).
pub(crate) fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    tenant_id: &str,
) -> Result<auth::Caller, Answer> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    check_caller(shared, authorization, tenant_id).map_err(|denied| match &denied {
        Denied::Token(why) => invalid_token(shared, why),
        Denied::NoAppRole { .. } => {
            service_error(StatusCode::UNAUTHORIZED, "Unauthorized", &denied.message())
        }
        Denied::NoDirectoryRole { .. } => {
            service_error(StatusCode::FORBIDDEN, "Forbidden", &denied.message())
        }
    })
}

/// A routing hint the service could not read at all, refused in every mode with 400
/// `ErrorIncorrectRoutingHint` (docs/protocol/exo-protocol.md §1.4: the Outlook REST API's
/// documented answer to a wrong `X-AnchorMailbox`; that adminapi answers alike is our
/// inference): not `<PREFIX>:<something>@<something>` in visible ASCII with a prefix the module
/// uses (`APP`, `UPN`, `SMTP`, `MBX`), or a parameter-based hint (`parameter-based-routing:
/// true`) that is not `SMTP:`/`MBX:`. A missing hint, or one naming another tenant, is refused
/// only in strict mode ([`anchor_ok`]); the double-`@` form EXOHELPER sends passes here.
fn anchor_malformed(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get("x-anchormailbox")?;
    let shown = String::from_utf8_lossy(raw.as_bytes()).into_owned();
    let Ok(value) = raw.to_str() else {
        return Some(shown);
    };
    let parameter_based = headers
        .get("parameter-based-routing")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let well_formed = value.split_once(':').is_some_and(|(prefix, rest)| {
        let known = if parameter_based {
            ["SMTP", "MBX"].as_slice()
        } else {
            ["APP", "UPN", "SMTP", "MBX"].as_slice()
        };
        known.iter().any(|k| k.eq_ignore_ascii_case(prefix))
            && rest
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
            && !rest.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control())
    });
    (!well_formed).then_some(shown)
}

/// Strict anchor mode: `APP:SystemMailbox{bb558c35-...}@<tenant guid or domain>`,
/// `UPN:`/`SMTP:` + an address in one of the tenant's domains, or `MBX:<guid>@<tenant guid or
/// domain>` (the module's parameter-based form, §1.4). Our choice: the double-`@` form
/// EXOHELPER sends is refused here (strict means strict).
fn anchor_ok(value: Option<&str>, tenant_id: &str, org: &Org) -> bool {
    let Some(value) = value else { return false };
    let Some((prefix, rest)) = value.split_once(':') else {
        return false;
    };
    let Some((local, domain)) = rest.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() || local.contains('@') || local.contains(char::is_whitespace) {
        return false;
    }
    let in_tenant = org.accepts_domain(domain) || domain.eq_ignore_ascii_case(tenant_id);
    if prefix.eq_ignore_ascii_case("APP") {
        local.eq_ignore_ascii_case(SYSTEM_MAILBOX) && in_tenant
    } else if prefix.eq_ignore_ascii_case("UPN") || prefix.eq_ignore_ascii_case("SMTP") {
        org.accepts_domain(domain)
    } else if prefix.eq_ignore_ascii_case("MBX") {
        uuid::Uuid::parse_str(local).is_ok() && in_tenant
    } else {
        false
    }
}

/// `odata.maxpagesize` from `Prefer`, clamped to 1..=1000.
pub(crate) fn page_size(headers: &HeaderMap) -> (usize, Vec<String>) {
    let mut size = MAX_PAGE;
    let mut applied = Vec::new();
    for value in headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for pref in value.split([',', ';']).map(str::trim) {
            if let Some(n) = pref.strip_prefix("odata.maxpagesize=") {
                if let Ok(n) = n.trim().parse::<usize>() {
                    size = n.clamp(1, MAX_PAGE);
                    applied.push(format!("odata.maxpagesize={size}"));
                }
            } else if pref.starts_with("odata.include-annotations=") {
                applied.push(pref.to_owned());
            }
        }
    }
    (size, applied)
}

/// What a paging token carries.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PageToken {
    /// Tenant id.
    pub(crate) t: String,
    /// SHA-256 of the body that produced it, hex.
    pub(crate) d: String,
    /// Key of the last object returned.
    pub(crate) a: u64,
    /// Objects returned so far.
    pub(crate) n: u64,
}

fn sign(key: &[u8; 32], payload: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(key);
    h.update(payload.as_bytes());
    crate::jose::b64url(&h.finalize()[..16])
}

pub(crate) fn encode_token(key: &[u8; 32], token: &PageToken) -> String {
    let payload = crate::jose::b64url(serde_json::to_vec(token).unwrap_or_default());
    let mac = sign(key, &payload);
    format!("{payload}.{mac}")
}

pub(crate) fn decode_token(key: &[u8; 32], text: &str) -> Option<PageToken> {
    let (payload, mac) = text.split_once('.')?;
    if sign(key, payload) != mac {
        return None;
    }
    serde_json::from_slice(&crate::jose::decode_segment(payload)?).ok()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The query parameters InvokeCommand understands: `$select` and our `$skiptoken`.
pub(crate) fn query_params(uri: &Uri) -> (Option<Vec<String>>, Option<String>, Option<String>) {
    let pairs: Vec<(String, String)> = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let select_raw = pairs
        .iter()
        .find(|(k, _)| k == "$select")
        .map(|(_, v)| v.clone());
    let select = select_raw.as_ref().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let skip = pairs
        .iter()
        .find(|(k, _)| k == "$skiptoken")
        .map(|(_, v)| v.clone());
    (select, select_raw, skip)
}

async fn invoke(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((version, tenant_segment)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (answer, rate) = run_invoke(
        &shared,
        peer,
        method.as_str(),
        &version,
        &tenant_segment,
        &uri,
        &headers,
        &body,
    )
    .await;
    answer.into_response(&request_id, rate.as_ref())
}

/// One InvokeCommand request, alone or as a `$batch` sub-request: logged as its own call.
#[allow(clippy::too_many_arguments, reason = "one request's parts")]
pub(crate) async fn run_invoke(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    method: &str,
    version: &str,
    tenant_segment: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> (Answer, Option<RateState>) {
    let mut record = ExchangeRequestRecord::received(method, uri, headers);
    shared.counters.bump(Counter::InvokeRequest);
    // Resolved once here for the per-tenant latency and the log; the handler resolves again.
    record.tenant_id = shared.exchange.resolve_tenant(shared, tenant_segment);
    shared.exchange.delay(record.tenant_id.as_deref()).await;
    let mut slow = Duration::ZERO;
    let outcome = handle_invoke(
        shared,
        peer,
        version,
        tenant_segment,
        uri,
        headers,
        body,
        &mut record,
        &mut slow,
    )
    .await;
    let (answer, rate) = match outcome {
        Ok(done) => done,
        Err((answer, rate)) => (answer, rate),
    };
    if record
        .fault
        .as_deref()
        .is_some_and(|f| f.starts_with("reset_"))
    {
        record.status = 0;
    } else {
        record.status = answer.status.as_u16();
    }
    record.exception_type = answer.exception_type.clone();
    // Logged before a slow answer's wait: the client may hang up (and drop this future).
    shared.exchange.record(record);
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    (answer, rate)
}

type Step<T> = std::result::Result<T, (Answer, Option<RateState>)>;

#[allow(clippy::too_many_arguments, reason = "one request's parts")]
async fn handle_invoke(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    version: &str,
    tenant_segment: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    record: &mut ExchangeRequestRecord,
    slow: &mut Duration,
) -> Step<(Answer, Option<RateState>)> {
    let exchange = &shared.exchange;
    if version != "beta" && version != "v1.0" {
        return Err((
            service_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("The API version '{version}' is not supported."),
            ),
            None,
        ));
    }
    // Our choice, since an unknown tenant cannot match any token's `tid`: answer as for a token for
    // another tenant, which reveals nothing about which tenants exist.
    let Some(tenant_id) = exchange.resolve_tenant(shared, tenant_segment) else {
        shared.counters.bump(Counter::ExchangeAuthFailure);
        return Err((
            invalid_token(shared, "The access token was issued for another tenant."),
            None,
        ));
    };
    let caller = authenticate(shared, headers, &tenant_id).map_err(|a| (a, None))?;
    let rate = exchange
        .limiter
        .take(exchange.throttle_for(&tenant_id), &tenant_id, now_unix_ms());
    if let Some(retry) = rate.retry_after {
        record.fault = Some("throttled".to_owned());
        return Err((too_many(retry), Some(rate)));
    }
    let rate = Some(rate);
    let fail = |a: Answer| (a, rate.clone());

    // The body: {"CmdletInput":{"CmdletName":..,"Parameters":{..}}}.
    if body.len() > MAX_BODY {
        return Err(fail(service_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request body is too large.",
        )));
    }
    let (name, params) = cmdlet_input(body, record).map_err(fail)?;
    let Some(spec) = cmdlets::find(&name) else {
        return Err(fail(cmdlet_error(&ExoError::command_not_found(&name))));
    };
    record.cmdlet = Some(spec.name.to_owned());
    shared.counters.cmdlet(spec.name);
    if !caller.allows(spec.name) {
        return Err(fail(not_allowed_to_call(shared, spec.name)));
    }
    let org_lock = exchange.org(&tenant_id).ok_or_else(|| {
        fail(service_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "Unknown tenant.",
        ))
    })?;
    if let Some(hint) = anchor_malformed(headers) {
        record.fault = Some("malformed_anchor".to_owned());
        let mut answer = service_error(
            StatusCode::BAD_REQUEST,
            "ErrorIncorrectRoutingHint",
            &format!(
                "The X-AnchorMailbox header is malformed ({hint:?}). Expected APP:{SYSTEM_MAILBOX}@<tenant id or domain>, UPN:<user@domain>, SMTP:<address@domain> or MBX:<guid>@<tenant>."
            ),
        );
        answer.exception_type = Some("IncorrectRoutingHintException".to_owned());
        return Err(fail(answer));
    }
    if exchange.faults.strict_anchor() {
        let anchor = headers.get("x-anchormailbox").and_then(|v| v.to_str().ok());
        if !anchor_ok(anchor, &tenant_id, &lock(org_lock)) {
            record.fault = Some("strict_anchor".to_owned());
            let mut answer = service_error(
                StatusCode::BAD_REQUEST,
                "ErrorIncorrectRoutingHint",
                &format!(
                    "The X-AnchorMailbox header is missing or malformed ('{}'). Expected APP:{SYSTEM_MAILBOX}@<tenant id or domain>, UPN:<user@domain> or SMTP:<address@domain> in this tenant.",
                    anchor.unwrap_or("")
                ),
            );
            answer.exception_type = Some("IncorrectRoutingHintException".to_owned());
            return Err(fail(answer));
        }
    }
    let fault = exchange.faults.take(spec.name, &tenant_id);
    if let Some(f) = fault {
        record.fault = Some(f.name().to_owned());
        shared.counters.bump(Counter::ExchangeFaultInjected);
        match f {
            ExchangeFault::TooManyRequests { retry_after_secs } => {
                return Err(fail(too_many(retry_after_secs)));
            }
            ExchangeFault::ServiceUnavailable => {
                let mut a = service_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable. Please try again later.",
                );
                a.exception_type = Some("ServiceUnavailableException".to_owned());
                return Err(fail(a));
            }
            ExchangeFault::GatewayTimeout => {
                return Err(fail(Answer {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    body: "<html><head><title>504 Gateway Timeout</title></head><body><h1>504 Gateway Timeout</h1></body></html>".to_owned(),
                    content_type: "text/html",
                    headers: Vec::new(),
                    exception_type: None,
                }));
            }
            ExchangeFault::TransientServerError => {
                return Err(fail(cmdlet_error(&ExoError::transient())));
            }
            ExchangeFault::ServerError | ExchangeFault::BadGateway => {
                return Err(fail(server_failure(f)));
            }
            ExchangeFault::ResetBeforeApply => {
                exchange.connections.kill(peer);
                return Err(fail(service_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Reset",
                    "connection reset",
                )));
            }
            ExchangeFault::TokenExpired => {
                shared.faults.expire_issued_tokens();
                shared.counters.bump(Counter::ExchangeAuthFailure);
                return Err(fail(invalid_token(shared, "The access token has expired.")));
            }
            ExchangeFault::Unauthorized => {
                // The RBAC refusal's shape (MicrosoftDocs/office-docs-powershell#7970).
                shared.counters.bump(Counter::ExchangeAuthFailure);
                return Err(fail(service_error(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    &format!("User is not allowed to call {}", spec.name),
                )));
            }
            ExchangeFault::SlowAnswer { delay_ms } => *slow = Duration::from_millis(delay_ms),
            ExchangeFault::ResetAfterApply | ExchangeFault::HtmlAfterApply => {}
        }
    }
    // A REST call's filter holds no `$true`/`$false` (filter.rs says why); Remote PowerShell
    // runs a real PowerShell session and accepts them.
    filter::refuse_boolean_variables(&params).map_err(|e| fail(cmdlet_error(&e)))?;
    // SecureString parameters arrive encrypted with our published key (secure_string.rs).
    let unseal =
        |name: &str, value: &Value| secure_string::unseal(&shared.secure_string, name, value);
    let args = cmdlets::bind_with(spec, &params, &unseal).map_err(|e| fail(cmdlet_error(&e)))?;
    // RBAC for Applications: a scoped role assignment limits where writes land (rbac.rs).
    if let Some(refusal) = rbac::write_scope_refusal(
        &caller.grants,
        caller.by_directory_role(spec.name),
        spec.name,
        spec.write,
        args.identity(),
        &lock(org_lock),
    ) {
        return Err(fail(cmdlet_error(&refusal)));
    }

    // Paging: a nextLink is valid only for the identical body in the same tenant.
    let (select, select_raw, skip) = query_params(uri);
    let digest = hex(&sha2::Sha256::digest(body));
    let (after, returned_before) = match &skip {
        None => (None, 0),
        Some(text) => match decode_token(&exchange.page_key, text) {
            Some(t) if t.t == tenant_id && t.d == digest => (Some(t.a), t.n),
            _ => {
                return Err(fail(service_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "The continuation link is not valid for this request: re-POST the identical request body to an @odata.nextLink.",
                )));
            }
        },
    };
    let (page, applied_prefs) = page_size(headers);
    let bound = cmdlets::result_size(spec, &args);
    let remaining =
        bound.map(|b| usize::try_from(b.saturating_sub(returned_before)).unwrap_or(usize::MAX));
    let want = remaining.map_or(page, |r| r.min(page));

    let Executed {
        result,
        mut warnings,
        errors,
        applied,
    } = run_cmdlet(shared, org_lock, spec, args, Paging { after, want })
        .await
        .map_err(|e| fail(cmdlet_error(&e)))?;
    record.applied = applied;
    if fault == Some(ExchangeFault::ResetAfterApply) {
        exchange.connections.kill(peer);
        return Err(fail(service_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Reset",
            "connection reset",
        )));
    }

    if fault == Some(ExchangeFault::HtmlAfterApply) {
        return Ok((
            Answer {
                status: StatusCode::OK,
                body: "<html><head><title>Sign in</title></head><body>Please sign in to continue.</body></html>".to_owned(),
                content_type: "text/html",
                headers: Vec::new(),
                exception_type: None,
            },
            rate,
        ));
    }
    let base =
        crate::identity::addressed_base(headers, uri).unwrap_or_else(|| shared.base_url.clone());
    let context = format!(
        "{base}/adminapi/{version}/{tenant_segment}/$metadata#Collection(Exchange.GenericHashTable)"
    );
    let mut out = String::with_capacity(4096);
    out.push('{');
    out.push_str(&format!("\"@odata.context\":{}", Value::from(context)));
    let rows = match result {
        Result2::Confirm(message) => {
            out.push(',');
            out.push_str(&warnings_json(&warnings));
            out.push_str(&format!(
                ",\"@adminapi.confirmationmessage\":{},\"value\":[]}}",
                Value::from(message)
            ));
            let mut answer = Answer::json(StatusCode::OK, out);
            if !applied_prefs.is_empty() {
                answer
                    .headers
                    .push(("preference-applied", applied_prefs.join(",")));
            }
            return Ok((answer, rate));
        }
        Result2::Done(rows) => rows,
    };
    let (objs, last, more) = page_of(rows, after, want);
    let returned = returned_before + objs.len() as u64;
    let bound_reached = bound.is_some_and(|b| returned >= b);
    if more && bound_reached {
        warnings.push(MORE_RESULTS.to_owned());
    }
    out.push(',');
    out.push_str(&warnings_json(&warnings));
    if !errors.is_empty() {
        out.push_str(&format!(
            ",\"adminapi.errors@odata.type\":\"#Collection(String)\",\"@adminapi.errors\":{}",
            Value::from(errors)
        ));
    }
    // A write that outputs nothing (Set-*, Add-*, …) answers with the envelope's annotations
    // and no `value`: the module reads `$ResultObject.value`, which is then `$null`, i.e. no
    // output (Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`,
    // `PrintResultAndCheckForNextPage`). The exact live form is not recorded anywhere public; a
    // client must take it as zero objects (issue 15, divergence 1).
    let no_output = spec.write && objs.is_empty() && !more;
    if !no_output {
        out.push_str(",\"value\":[");
        for (i, o) in objs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            obj::write_object(&mut out, o, select.as_deref());
        }
        out.push(']');
    }
    if more && !bound_reached {
        let token = encode_token(
            &exchange.page_key,
            &PageToken {
                t: tenant_id.clone(),
                d: digest,
                a: last,
                n: returned,
            },
        );
        let mut query = Vec::new();
        if let Some(s) = &select_raw {
            query.push(("$select", s.clone()));
        }
        query.push(("$skiptoken", token));
        let link = format!(
            "{base}{}?{}",
            uri.path(),
            serde_urlencoded::to_string(&query).unwrap_or_default()
        );
        out.push_str(&format!(",\"@odata.nextLink\":{}", Value::from(link)));
    }
    out.push('}');
    let mut answer = Answer::json(StatusCode::OK, out);
    if !applied_prefs.is_empty() {
        answer
            .headers
            .push(("preference-applied", applied_prefs.join(",")));
    }
    Ok((answer, rate))
}

/// The warning a read gets when `ResultSize` cut it short (§1.7).
pub(crate) const MORE_RESULTS: &str = "There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter.";

/// What one execution of a cmdlet produced.
#[derive(Debug)]
pub(crate) struct Executed {
    pub result: Result2,
    pub warnings: Vec<String>,
    /// Non-terminating errors, `ErrorId|class|text`.
    pub errors: Vec<String>,
    /// Whether state changed (then it was counted and saved).
    pub applied: bool,
}

/// Runs one page of `spec` against `org` for either transport, then counts and saves an
/// applied write (the state file is written off the async threads before this returns, so a
/// client that sees the answer can rely on the write surviving a restart).
pub(crate) async fn run_cmdlet(
    shared: &Arc<Shared>,
    org: &Mutex<Org>,
    spec: &'static cmdlets::Spec,
    args: cmdlets::Bound,
    paging: Paging,
) -> std::result::Result<Executed, ExoError> {
    let executed = {
        let mut org = lock(org);
        let mut run = Run {
            org: &mut org,
            args,
            paging,
            now: now_unix(),
            warnings: Vec::new(),
            errors: Vec::new(),
            applied: false,
        };
        let result = cmdlets::execute(spec, &mut run)?;
        Executed {
            result,
            warnings: run.warnings,
            errors: run.errors,
            applied: run.applied,
        }
    };
    if executed.applied {
        shared.counters.bump(Counter::WriteApplied);
        let saver = shared.clone();
        match tokio::task::spawn_blocking(move || saver.exchange.save()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "cannot save the exosim state file"),
            Err(error) => tracing::error!(%error, "state saver panicked"),
        }
    }
    Ok(executed)
}

/// One page of a cmdlet's rows: the objects after key `after` (at most `want`), the key of the
/// last one, and whether more follow. A small whole result (`Rows::All`) is keyed by position.
pub(crate) fn page_of(rows: Rows, after: Option<u64>, want: usize) -> (Vec<obj::Obj>, u64, bool) {
    match rows {
        Rows::All(all) => {
            let start = usize::try_from(after.unwrap_or(0))
                .unwrap_or(usize::MAX)
                .min(all.len());
            let total = all.len();
            let objs: Vec<_> = all.into_iter().skip(start).take(want).collect();
            let last = (start + objs.len()) as u64;
            let more = start + objs.len() < total;
            (objs, last, more)
        }
        Rows::Page { objs, last, more } => (objs, last, more),
    }
}

/// 429 with a fractional `Retry-After` (the module reads it as decimal seconds, §1.9).
pub(crate) fn too_many(retry_after: f64) -> Answer {
    let mut answer = service_error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        &format!("Too many requests. Please retry after {retry_after:.3} seconds."),
    );
    let mut text = format!("{retry_after:.3}");
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    answer.headers.push(("retry-after", text));
    answer.exception_type = Some("ThrottlingException".to_owned());
    answer
}

/// `GET .../EXOModuleFile`: the cmdlets the caller's roles allow, comma-separated (§1.2, CIPP).
async fn module_file(
    State(shared): State<Arc<Shared>>,
    Path((version, tenant_segment)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut record = ExchangeRequestRecord::received("GET", &uri, &headers);
    let answer = (|| {
        if version != "beta" && version != "v1.0" {
            return service_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "Unsupported API version.",
            );
        }
        let Some(tenant_id) = shared.exchange.resolve_tenant(&shared, &tenant_segment) else {
            shared.counters.bump(Counter::ExchangeAuthFailure);
            return invalid_token(&shared, "The access token was issued for another tenant.");
        };
        let caller = match authenticate(&shared, &headers, &tenant_id) {
            Ok(c) => c,
            Err(a) => return a,
        };
        let exported: Vec<&str> = cmdlets::CMDLETS
            .iter()
            .map(|s| s.name)
            .filter(|n| caller.allows(n))
            .collect();
        let base = crate::identity::addressed_base(&headers, &uri)
            .unwrap_or_else(|| shared.base_url.clone());
        let body = json!({
            "@odata.context": format!("{base}/adminapi/{version}/{tenant_segment}/$metadata#Collection(Exchange.ModuleFile)"),
            "value": [{"exportedCmdlets": exported.join(",")}]
        });
        Answer::json(StatusCode::OK, body.to_string())
    })();
    record.status = answer.status.as_u16();
    record.exception_type = answer.exception_type.clone();
    shared.exchange.record(record);
    answer.into_response(&request_id, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_lookup_locks_no_organisation() {
        let tenants: Vec<(String, String, Option<usize>)> = (1..=3)
            .map(|i| {
                (
                    format!("f1ee7000-0000-4000-8000-{i:012x}"),
                    format!("tenant-{i:03}.onmicrosoft.com"),
                    Some(1),
                )
            })
            .collect();
        let exchange =
            Arc::new(Exchange::build(&tenants, 1, 1, None, None, Duration::ZERO).unwrap());
        // A busy first tenant (its org locked) must not hold up a lookup of another.
        let busy = Arc::clone(&exchange);
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _org = lock(busy.org(&tenants[0].0).unwrap());
            held_tx.send(()).unwrap();
            let _ = done_rx.recv_timeout(Duration::from_secs(5));
        });
        held_rx.recv().unwrap();
        let (found_tx, found_rx) = std::sync::mpsc::channel();
        let looker = Arc::clone(&exchange);
        std::thread::spawn(move || {
            let _ = found_tx.send(looker.tenant_by_domain("TENANT-003.mail.onmicrosoft.com"));
        });
        let found = found_rx.recv_timeout(Duration::from_secs(2));
        done_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(
            found.expect("the lookup waited for a locked organisation"),
            Some("f1ee7000-0000-4000-8000-000000000003".to_owned())
        );
        assert_eq!(exchange.tenant_by_domain("nowhere.example"), None);
    }

    #[test]
    fn anchors() {
        let org = Org::generate(
            "8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d",
            "contoso.onmicrosoft.com",
            1,
            3,
        );
        let tid = "8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d";
        for good in [
            "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d",
            "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@contoso.onmicrosoft.com",
            "UPN:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@contoso.onmicrosoft.com",
            "SMTP:admin@contoso.mail.onmicrosoft.com",
            "MBX:0f8fad5b-d9cb-469f-a165-70867728950e@contoso.onmicrosoft.com",
        ] {
            assert!(anchor_ok(Some(good), tid, &org), "{good}");
        }
        for bad in [
            "",
            "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@@8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d",
            "APP:SystemMailbox{00000000-97f1-4cb9-8ff7-d53741dc928c}@contoso.onmicrosoft.com",
            "UPN:admin@fabrikam.com",
            "MBX:x@contoso.onmicrosoft.com",
            "MBX:0f8fad5b-d9cb-469f-a165-70867728950e@fabrikam.com",
            "admin@contoso.onmicrosoft.com",
        ] {
            assert!(!anchor_ok(Some(bad), tid, &org), "{bad}");
        }
        assert!(!anchor_ok(None, tid, &org));
    }

    #[test]
    fn malformed_routing_hints() {
        let headers = |anchor: &[u8], parameter_based: bool| {
            let mut h = HeaderMap::new();
            h.insert(
                "x-anchormailbox",
                axum::http::HeaderValue::from_bytes(anchor).unwrap(),
            );
            if parameter_based {
                h.insert(
                    "parameter-based-routing",
                    axum::http::HeaderValue::from_static("true"),
                );
            }
            h
        };
        assert_eq!(
            anchor_malformed(&HeaderMap::new()),
            None,
            "missing is strict mode's"
        );
        for fine in [
            "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@@8d3f5c1a",
            "UPN:admin@fabrikam.com",
            "MBX:0f8fad5b-d9cb-469f-a165-70867728950e@contoso.onmicrosoft.com",
        ] {
            assert_eq!(
                anchor_malformed(&headers(fine.as_bytes(), false)),
                None,
                "{fine}"
            );
        }
        assert_eq!(
            anchor_malformed(&headers(b"SMTP:ann@contoso.com", true)),
            None
        );
        for (bad, parameter_based) in [
            ("admin@contoso.onmicrosoft.com", false),
            ("XYZ:admin@contoso.onmicrosoft.com", false),
            ("SMTP:nobody", false),
            ("SMTP:ann smith@contoso.com", false),
            (
                "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@contoso.com",
                true,
            ),
            ("SMTP:ann\u{f1}@contoso.com", false),
        ] {
            assert!(
                anchor_malformed(&headers(bad.as_bytes(), parameter_based)).is_some(),
                "{bad}"
            );
        }
    }

    #[test]
    fn page_tokens_are_tamper_evident() {
        let key = [7u8; 32];
        let t = encode_token(
            &key,
            &PageToken {
                t: "x".into(),
                d: "y".into(),
                a: 5,
                n: 5,
            },
        );
        assert_eq!(decode_token(&key, &t).map(|t| t.a), Some(5));
        let mut forged = t.clone();
        forged.insert(0, 'A');
        assert!(decode_token(&key, &forged).is_none());
        assert!(decode_token(&[8u8; 32], &t).is_none());
    }
}
