//! `$batch`: many small calls in one POST, as the module does for pipeline input and CIPP for
//! bulk reads (docs/fidelity.md, "$batch").
//!
//! Sources: the module dump (Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`: the batch
//! URI `…/{tenant}/$batch`, a flush at 10 requests (`if($BatchBodyObj['requests'].Count -eq
//! 10)`, line 1444), each sub-request's URL absolute (`$AuthInfo.BaseUri + '/' + TenantId +
//! '/InvokeCommand'`) with the headers a single call gets, its routing hint included
//! (`AddTo-BatchRequest` → `Populate-Headers`), `Prefer: odata.continue-on-error` on the
//! outer POST and `odata.maxpagesize=N;odata.continue-on-error` on each sub-request, a non-200
//! sub-response retried alone by POSTing its body to its `url`, paging continued outside the
//! batch); KelvinTegelaar/CIPP-API `Modules/CIPPCore/Public/GraphHelper/New-ExoBulkRequest.ps1`
//! ("EXO caps each $batch at 10 sub-requests"; a sub-response can be 429 inside a 200).
//!
//! Write safety is the session's, per sub-request: a 429/503 sub-response did not run and is
//! sent again alone; a write whose sub-response is missing, a 504, or whose whole batch may
//! have run (any failure but a clear refusal before running, `refused_before_running`; an
//! answer whose ids do not match the calls sent) is of unknown outcome and never sent again; a
//! read in the same place is sent again alone. `Get-EXO*` cmdlets (GETs of entity sets) are
//! not batched: each is sent on its own.
//!
//! The batch POST is held to what its calls would get alone: each attempt within the largest of
//! their cmdlet time limits ([`super::session::SessionConfig::timeout_for`]; the module takes
//! the last request's), the whole by the caller's deadline, its answer read up to the sum of
//! their answer caps. Sub-request URLs are built after the compliance front door was asked where
//! the tenant lives, on a base within the endpoint's cloud ([`crate::cloud::same_cloud`]).

use super::routing::RoutingHint;
use super::session::{Asked, Invocation, Reading, RestSession, max_answer_bytes, read_success};
use crate::error::{ExchangeError, Result};
use crate::params::cmdlet_input;
use crate::response::parse_error;
use crate::verbs::CmdletKind;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The most sub-requests one `$batch` carries: the module flushes at 10 (the dump's line 1444,
/// above); CIPP-API `New-ExoBulkRequest.ps1`: "EXO caps each $batch at 10 sub-requests". (20 is
/// Microsoft Graph's cap, not Exchange's.)
pub const MAX_BATCH: usize = 10;

/// The label of a `$batch` POST where a cmdlet name would go (errors, `X-CmdletName`).
pub(crate) const BATCH: &str = "$batch";

/// The `Prefer` header of a request labelled `cmdlet`: the outer `$batch` POST asks the service
/// to go on after a failed sub-request; a cmdlet asks for its page size.
pub(crate) fn prefer(cmdlet: &str, page_size: u32) -> String {
    if cmdlet == BATCH {
        "odata.continue-on-error".to_owned()
    } else {
        format!("odata.maxpagesize={page_size}")
    }
}

/// What one call of a batch returned: all its objects, with the warnings and non-terminating
/// errors Exchange gave beside them (`@adminapi.warnings`, `@adminapi.errors`), as a single
/// call's pages carry them.
#[derive(Debug, Clone, Default)]
pub struct BatchOutput {
    /// Result objects, all pages.
    pub objects: Vec<Map<String, Value>>,
    /// `@adminapi.warnings`, and warden's own (a write's unreadable 2xx, a write's paging link).
    pub warnings: Vec<String>,
    /// `@adminapi.errors`: non-terminating errors inside a 2xx.
    pub errors: Vec<Value>,
}

impl BatchOutput {
    /// Adds one page's objects, warnings and errors.
    pub(crate) fn add(&mut self, page: crate::response::Page) {
        // Batches ask for objects; a text page (a caller's own runner) is parsed back.
        match page.text.map(|text| text.to_objects()) {
            Some(Ok(objects)) => self.objects.extend(objects),
            Some(Err(error)) => self.warnings.push(error),
            None => self.objects.extend(page.objects),
        }
        self.warnings.extend(page.warnings);
        self.errors.extend(page.errors);
    }
}

/// One call of a batch: its output, or its error.
pub type BatchResult = Result<BatchOutput>;

/// Whether a whole `$batch` that failed with `error` clearly did not run: the service refused
/// it before running anything (400, 401/403 after the token re-mint, 404, 413, 429/503 after the
/// retries), or it was never sent (no token, no connection, no time left). Any other failure
/// (a 500, 502, a final error the pipeline gave up on) may have come after its calls ran.
///
/// `Transport` and `Timeout` reach here only when nothing was sent for a batch with a write in
/// it: a lost answer of such a batch ends as `OutcomeUnknown` in the pipeline. For a batch of
/// reads only they may mean a lost answer, but reads are sent again either way.
fn refused_before_running(error: &ExchangeError) -> bool {
    match error {
        ExchangeError::Cmdlet(e) => matches!(e.status, 400 | 404 | 413),
        ExchangeError::AccessDenied { status, .. } => matches!(status, 401 | 403),
        ExchangeError::Throttled { .. }
        | ExchangeError::Auth(_)
        | ExchangeError::Transport { .. }
        | ExchangeError::Timeout { .. } => true,
        _ => false,
    }
}

/// Why a `$batch` answer cannot be matched to its sub-requests (`None` if it can): an id given
/// twice, an id no sub-request had, a response without a string id. The sub-request ids sent
/// are `expected`.
fn answer_mismatch(items: &[Value], expected: &[String]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    for item in items {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            return Some("a response in the $batch answer has no id".into());
        };
        if !expected.iter().any(|e| e == id) {
            return Some(format!(
                "the $batch answer names id {id:?}, which was not sent"
            ));
        }
        if !seen.insert(id) {
            return Some(format!("the $batch answer gives id {id:?} twice"));
        }
    }
    None
}

impl RestSession {
    /// Runs `invocations` in `$batch` POSTs of at most [`MAX_BATCH`], and returns each one's
    /// results (all pages: a paging link continues outside the batch) in the same order.
    pub async fn invoke_batch(&self, invocations: &[Invocation]) -> Vec<BatchResult> {
        self.invoke_batch_within(invocations, None).await
    }

    /// [`RestSession::invoke_batch`] for a caller that stops waiting after `patience`: every
    /// request (the batches, and calls sent alone) ends by then, and a wait that would not end
    /// in time is not started, as for a single call's page
    /// ([`super::session::ResultStream::next_page_within`]).
    pub async fn invoke_batch_within(
        &self,
        invocations: &[Invocation],
        patience: Option<Duration>,
    ) -> Vec<BatchResult> {
        let deadline = patience.map(|p| Instant::now() + p);
        let mut results = Vec::with_capacity(invocations.len());
        for chunk in invocations.chunks(MAX_BATCH) {
            results.extend(self.one_batch(chunk, deadline).await);
        }
        results
    }

    /// The base a batch's absolute sub-request URLs name: the tenant's regional host once the
    /// front door was asked (compliance), and only within the endpoint's cloud.
    async fn sub_request_base(&self, deadline: Option<Instant>) -> Result<String> {
        self.discover_region_by(deadline).await;
        let base = self.current_base();
        let door = url::Url::parse(&self.config().base_url).expect("validated at session creation");
        let parsed =
            url::Url::parse(&base).expect("validated at session creation or by regional_base");
        crate::cloud::same_cloud(&self.config().hosts, &door, &parsed).map_err(|refused| {
            ExchangeError::Protocol {
                cmdlet: BATCH.to_owned(),
                reason: format!("the batch would name {refused}; refusing to build it there"),
            }
        })?;
        Ok(base)
    }

    async fn one_batch(&self, chunk: &[Invocation], deadline: Option<Instant>) -> Vec<BatchResult> {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let config = self.config();
        // Get-EXO* cmdlets (a GET, or refused as not served: never an InvokeCommand), calls with
        // a SecureString value (encrypted by the single-call path only) and calls for the other
        // endpoint (refused there) are sent on their own.
        let batched = |i: &Invocation| {
            i.endpoint == config.endpoint
                && !super::entity::is_rest_only(&i.cmdlet)
                && !i
                    .parameters
                    .keys()
                    .any(|name| warden_vocab::secure_parameter(&i.cmdlet, name).is_some())
        };
        let Ok(base) = self.sub_request_base(deadline).await else {
            // Nothing was sent: each call alone, through the single call's own checks.
            let mut results = Vec::with_capacity(chunk.len());
            for invocation in chunk {
                results.push(self.alone(invocation, deadline).await);
            }
            return results;
        };
        let page_of = |i: &Invocation| {
            i.result_limit().map_or(config.page_size, |r| {
                r.clamp(1, u64::from(config.page_size)) as u32
            })
        };
        let requests: Vec<Value> = chunk
            .iter()
            .enumerate()
            .filter(|(_, i)| batched(i))
            .map(|(n, i)| {
                let page = page_of(i);
                // The routing hint the call would carry alone (`routing.rs`).
                let routing = RoutingHint::for_call(
                    &i.cmdlet,
                    &i.parameters,
                    &config.anchor_mailbox,
                    &config.tenant,
                    config.custom_routing,
                );
                let mut headers = Map::from_iter([
                    ("X-CmdletName".to_owned(), Value::from(i.cmdlet.clone())),
                    (
                        "Prefer".to_owned(),
                        Value::from(format!("odata.maxpagesize={page};odata.continue-on-error")),
                    ),
                    ("Content-Type".to_owned(), Value::from("application/json")),
                ]);
                headers.extend(routing.headers().map(|(k, v)| (k, Value::from(v))));
                json!({
                    "id": n.to_string(),
                    "method": "POST",
                    "url": config.invoke_url(&base, &i.select),
                    "headers": headers,
                    "body": cmdlet_input(&i.cmdlet, &i.parameters),
                })
            })
            .collect();
        // What the calls would get alone: the longest of their time limits, room for each
        // one's answer.
        let limit = chunk
            .iter()
            .filter(|i| batched(i))
            .map(|i| config.timeout_for(&i.cmdlet))
            .max()
            .unwrap_or(config.request_timeout);
        let answer_cap = chunk
            .iter()
            .filter(|i| batched(i))
            .map(|i| max_answer_bytes(page_of(i)))
            .fold(0usize, usize::saturating_add);
        let expected: Vec<String> = requests
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        let mut answers: HashMap<String, Value> = HashMap::new();
        // Why the batch's sub-requests have no answer: `Some(true)` if they may have run.
        let mut unanswered: Option<(bool, String)> = None;
        if !requests.is_empty() {
            let any_write = chunk
                .iter()
                .filter(|i| batched(i))
                .any(|i| CmdletKind::of(&i.cmdlet).is_write());
            let kind = if any_write {
                CmdletKind::Write
            } else {
                CmdletKind::Read
            };
            let body = Arc::new(
                serde_json::to_vec(&json!({ "requests": requests })).expect("JSON encodes"),
            );
            match self
                .send_batch(&body, kind, &client_request_id, limit, answer_cap, deadline)
                .await
            {
                Ok(response) => match serde_json::from_slice::<Value>(&response.body) {
                    Ok(Value::Object(mut root)) => match root.remove("responses") {
                        Some(Value::Array(items)) => match answer_mismatch(&items, &expected) {
                            // Which answer belongs to which call is unknown: none is used.
                            Some(reason) => unanswered = Some((true, reason)),
                            None => {
                                for item in items {
                                    if let Some(id) = item.get("id").and_then(Value::as_str) {
                                        answers.insert(id.to_owned(), item.clone());
                                    }
                                }
                            }
                        },
                        _ => {
                            unanswered =
                                Some((true, "the $batch answer has no responses array".into()));
                        }
                    },
                    _ => {
                        unanswered = Some((true, "the $batch answer is not JSON".into()));
                    }
                },
                Err(ExchangeError::OutcomeUnknown { reason, .. }) => {
                    unanswered = Some((true, reason));
                }
                Err(error) => {
                    unanswered = Some((!refused_before_running(&error), error.to_string()));
                }
            }
        }
        let mut results = Vec::with_capacity(chunk.len());
        for (n, invocation) in chunk.iter().enumerate() {
            let result = match answers.remove(&n.to_string()) {
                Some(answer) if batched(invocation) => {
                    self.finish(invocation, &answer, &client_request_id, deadline)
                        .await
                }
                None if batched(invocation) => {
                    let (may_have_run, reason) = unanswered
                        .clone()
                        .unwrap_or((true, "the $batch answer did not include it".to_owned()));
                    self.alone_unless_unknown(invocation, may_have_run, reason, deadline)
                        .await
                }
                _ => self.alone(invocation, deadline).await,
            };
            results.push(result);
        }
        results
    }

    /// `invocation` sent on its own, every page with its warnings and errors.
    async fn alone(&self, invocation: &Invocation, deadline: Option<Instant>) -> BatchResult {
        let stream = self.stream(invocation.clone());
        drain(stream, BatchOutput::default(), deadline).await
    }

    /// A sub-request without an answer: a write that may have run is of unknown outcome; any
    /// other call is sent again alone.
    async fn alone_unless_unknown(
        &self,
        invocation: &Invocation,
        may_have_run: bool,
        reason: String,
        deadline: Option<Instant>,
    ) -> BatchResult {
        if may_have_run && CmdletKind::of(&invocation.cmdlet).is_write() {
            return Err(ExchangeError::OutcomeUnknown {
                cmdlet: invocation.cmdlet.clone(),
                reason: format!("it was sent in a $batch whose answer for it was lost ({reason})"),
            });
        }
        self.alone(invocation, deadline).await
    }

    /// One sub-response: its objects (and the pages after it), or its error.
    async fn finish(
        &self,
        invocation: &Invocation,
        answer: &Value,
        client_request_id: &str,
        deadline: Option<Instant>,
    ) -> BatchResult {
        let cmdlet = &invocation.cmdlet;
        let write = CmdletKind::of(cmdlet).is_write();
        let status = answer
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = answer
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.to_ascii_lowercase(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = match answer.get("body") {
            Some(Value::String(text)) => text.clone().into_bytes(),
            Some(value) => serde_json::to_vec(value).expect("JSON encodes"),
            None => Vec::new(),
        };
        match status {
            200..=299 => {
                let mut output = BatchOutput::default();
                // The one reading of a 2xx a single call's page gets too (`read_success`).
                let mut page = read_success(
                    cmdlet,
                    CmdletKind::of(cmdlet),
                    Asked::of(&invocation.parameters),
                    status,
                    &body,
                    Reading {
                        keep_annotations: self.config().keep_annotations,
                        as_text: false,
                    },
                    header("request-id").as_deref(),
                )?;
                if let Some(limit) = invocation.result_limit() {
                    page.objects
                        .truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                }
                let more_wanted = invocation
                    .result_limit()
                    .is_none_or(|l| (page.objects.len() as u64) < l);
                let link = page.next_link.take().filter(|_| more_wanted);
                if link.is_some() && write {
                    // Following it re-POSTs the write (session.rs says the same alone).
                    page.warnings.push("the server offered another page of a write's results; warden does not re-send a write to fetch it".into());
                }
                output.add(page);
                if let Some(link) = link.filter(|_| !write) {
                    let rest = self.continue_at(
                        invocation,
                        &link,
                        client_request_id,
                        output.objects.len() as u64,
                    )?;
                    return drain(rest, output, deadline).await;
                }
                Ok(output)
            }
            // Refused before it ran: wait as asked, then alone through the session's retries.
            429 | 503 => {
                let wait = header("retry-after")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(60.0)));
                if let Some(wait) = wait {
                    self.pause_for(wait);
                }
                self.alone(invocation, deadline).await
            }
            0 | 504 => {
                let reason = format!("its sub-response in the $batch was HTTP {status}");
                self.alone_unless_unknown(invocation, true, reason, deadline)
                    .await
            }
            _ => Err(ExchangeError::Cmdlet(Box::new(parse_error(
                cmdlet, status, &body, header,
            )))),
        }
    }
}

/// The rest of `stream`'s pages added to `output`, each asked for within what is left until
/// `deadline`.
async fn drain(
    mut stream: super::session::ResultStream,
    mut output: BatchOutput,
    deadline: Option<Instant>,
) -> BatchResult {
    loop {
        let patience = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match stream.next_page_within(patience).await? {
            Some(page) => output.add(page),
            None => return Ok(output),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdlet_error(status: u16) -> ExchangeError {
        ExchangeError::Cmdlet(Box::new(crate::error::CmdletError {
            cmdlet: BATCH.into(),
            status,
            code: String::new(),
            error_id: None,
            exception_type: None,
            message: String::new(),
            target: None,
            request_id: None,
            server: None,
        }))
    }

    #[test]
    fn only_a_clear_refusal_means_the_batch_did_not_run() {
        for status in [400, 404, 413] {
            assert!(refused_before_running(&cmdlet_error(status)), "{status}");
        }
        for status in [500, 502, 409, 504] {
            assert!(!refused_before_running(&cmdlet_error(status)), "{status}");
        }
        let throttled = ExchangeError::Throttled {
            cmdlet: BATCH.into(),
            status: 429,
            attempts: 3,
            retry_after: None,
        };
        assert!(refused_before_running(&throttled));
        let protocol = ExchangeError::Protocol {
            cmdlet: BATCH.into(),
            reason: String::new(),
        };
        assert!(!refused_before_running(&protocol));
    }

    #[test]
    fn a_repeated_unknown_or_unnamed_id_unmatches_the_answer() {
        let sent = ["0".to_owned(), "1".to_owned()];
        let ok = [json!({"id": "1"}), json!({"id": "0"})];
        assert_eq!(answer_mismatch(&ok, &sent), None);
        let missing_one = [json!({"id": "0"})];
        assert_eq!(
            answer_mismatch(&missing_one, &sent),
            None,
            "missing: per call"
        );
        let twice = [json!({"id": "0"}), json!({"id": "0"})];
        assert!(answer_mismatch(&twice, &sent).unwrap().contains("twice"));
        let unknown = [json!({"id": "7"})];
        assert!(
            answer_mismatch(&unknown, &sent)
                .unwrap()
                .contains("not sent")
        );
        let unnamed = [json!({"status": 200})];
        assert!(answer_mismatch(&unnamed, &sent).is_some());
    }

    #[test]
    fn the_outer_post_asks_to_continue_on_error() {
        assert_eq!(prefer(BATCH, 1000), "odata.continue-on-error");
        assert_eq!(prefer("Get-Mailbox", 7), "odata.maxpagesize=7");
    }
}
