//! `$batch`: many small calls in one POST, as the module does for pipeline input and CIPP for
//! bulk reads (docs/fidelity.md, "$batch").
//!
//! Sources: the module dump (Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`: the batch
//! URI `…/{tenant}/$batch`, a flush at 10 requests, `Prefer: odata.continue-on-error` on the
//! outer POST and `odata.maxpagesize=N;odata.continue-on-error` on each sub-request, a non-200
//! sub-response retried alone by POSTing its body to its `url`, paging continued outside the
//! batch); KelvinTegelaar/CIPP-API `Modules/CIPPCore/Public/GraphHelper/New-ExoBulkRequest.ps1`
//! ("EXO caps each $batch at 10 sub-requests"; a sub-response can be 429 inside a 200).
//!
//! Write safety is the session's, per sub-request: a 429/503 sub-response did not run and is
//! sent again alone; a write whose sub-response is missing, a 504, or whose whole batch got no
//! answer is of unknown outcome and never sent again; a read in the same place is sent again
//! alone. `Get-EXO*` cmdlets (GETs of entity sets) are not batched: each is sent on its own.

use super::session::{Invocation, RestSession};
use crate::error::{ExchangeError, Result};
use crate::params::cmdlet_input;
use crate::response::{parse_answer, parse_error};
use crate::verbs::CmdletKind;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The most sub-requests one `$batch` carries (the module flushes at 10; CIPP: the service caps it).
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

/// All results of one call of a batch, or its error.
pub type BatchResult = Result<Vec<Map<String, Value>>>;

impl RestSession {
    /// Runs `invocations` in `$batch` POSTs of at most [`MAX_BATCH`], and returns each one's
    /// results (all pages: a paging link continues outside the batch) in the same order.
    pub async fn invoke_batch(&self, invocations: &[Invocation]) -> Vec<BatchResult> {
        let mut results = Vec::with_capacity(invocations.len());
        for chunk in invocations.chunks(MAX_BATCH) {
            results.extend(self.one_batch(chunk).await);
        }
        results
    }

    async fn one_batch(&self, chunk: &[Invocation]) -> Vec<BatchResult> {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let config = self.config();
        let base = self.current_base();
        // Entity-set GETs, calls with a SecureString value (encrypted by the single-call path
        // only) and calls for the other endpoint (refused there) are sent on their own.
        let batched = |i: &Invocation| {
            i.endpoint == config.endpoint
                && super::entity::entity_set(&i.cmdlet).is_none()
                && !i
                    .parameters
                    .keys()
                    .any(|name| warden_vocab::secure_parameter(&i.cmdlet, name).is_some())
        };
        let requests: Vec<Value> = chunk
            .iter()
            .enumerate()
            .filter(|(_, i)| batched(i))
            .map(|(n, i)| {
                let page = i.result_limit().map_or(config.page_size, |r| {
                    r.clamp(1, u64::from(config.page_size)) as u32
                });
                json!({
                    "id": n.to_string(),
                    "method": "POST",
                    "url": config.invoke_url(&base, &i.select),
                    "headers": {
                        "X-CmdletName": i.cmdlet,
                        "Prefer": format!("odata.maxpagesize={page};odata.continue-on-error"),
                        "Content-Type": "application/json",
                    },
                    "body": cmdlet_input(&i.cmdlet, &i.parameters),
                })
            })
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
            match self.send_batch(&body, kind, &client_request_id).await {
                Ok(response) => match serde_json::from_slice::<Value>(&response.body) {
                    Ok(Value::Object(mut root)) => {
                        if let Some(Value::Array(items)) = root.remove("responses") {
                            for item in items {
                                if let Some(id) = item.get("id").and_then(Value::as_str) {
                                    answers.insert(id.to_owned(), item.clone());
                                }
                            }
                        }
                    }
                    _ => {
                        unanswered = Some((true, "the $batch answer is not JSON".into()));
                    }
                },
                Err(ExchangeError::OutcomeUnknown { reason, .. }) => {
                    unanswered = Some((true, reason));
                }
                // Refused or never sent as a whole: nothing in it ran.
                Err(error) => unanswered = Some((false, error.to_string())),
            }
        }
        let mut results = Vec::with_capacity(chunk.len());
        for (n, invocation) in chunk.iter().enumerate() {
            let result = match answers.remove(&n.to_string()) {
                Some(answer) if batched(invocation) => {
                    self.finish(invocation, &answer, &client_request_id).await
                }
                None if batched(invocation) => {
                    let (may_have_run, reason) = unanswered
                        .clone()
                        .unwrap_or((true, "the $batch answer did not include it".to_owned()));
                    self.alone_unless_unknown(invocation, may_have_run, reason)
                        .await
                }
                _ => self.invoke(invocation.clone()).await,
            };
            results.push(result);
        }
        results
    }

    /// A sub-request without an answer: a write that may have run is of unknown outcome; any
    /// other call is sent again alone.
    async fn alone_unless_unknown(
        &self,
        invocation: &Invocation,
        may_have_run: bool,
        reason: String,
    ) -> BatchResult {
        if may_have_run && CmdletKind::of(&invocation.cmdlet).is_write() {
            return Err(ExchangeError::OutcomeUnknown {
                cmdlet: invocation.cmdlet.clone(),
                reason: format!("it was sent in a $batch whose answer for it was lost ({reason})"),
            });
        }
        self.invoke(invocation.clone()).await
    }

    /// One sub-response: its objects (and the pages after it), or its error.
    async fn finish(
        &self,
        invocation: &Invocation,
        answer: &Value,
        client_request_id: &str,
    ) -> BatchResult {
        let cmdlet = &invocation.cmdlet;
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
                let keep = self.config().keep_annotations;
                let protocol = |reason| ExchangeError::Protocol {
                    cmdlet: cmdlet.clone(),
                    reason,
                };
                // As in the session: a read's non-envelope is refused, a write's 2xx kept.
                let parsed = parse_answer(&body, keep).map_err(protocol)?;
                let page = match parsed.not_an_envelope {
                    Some(reason) if status != 204 && !CmdletKind::of(cmdlet).is_write() => {
                        return Err(protocol(reason));
                    }
                    _ => parsed.page,
                };
                let mut objects = page.objects;
                if let Some(limit) = invocation.result_limit() {
                    objects.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                }
                let more_wanted = invocation
                    .result_limit()
                    .is_none_or(|l| (objects.len() as u64) < l);
                if let Some(link) = page.next_link.filter(|_| more_wanted)
                    && !CmdletKind::of(cmdlet).is_write()
                {
                    let mut rest = self.continue_at(
                        invocation,
                        &link,
                        client_request_id,
                        objects.len() as u64,
                    )?;
                    while let Some(next) = rest.next_page().await? {
                        objects.extend(next.objects);
                    }
                }
                Ok(objects)
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
                self.invoke(invocation.clone()).await
            }
            0 | 504 => {
                let reason = format!("its sub-response in the $batch was HTTP {status}");
                self.alone_unless_unknown(invocation, true, reason).await
            }
            _ => Err(ExchangeError::Cmdlet(Box::new(parse_error(
                cmdlet, status, &body, header,
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outer_post_asks_to_continue_on_error() {
        assert_eq!(prefer(BATCH, 1000), "odata.continue-on-error");
        assert_eq!(prefer("Get-Mailbox", 7), "odata.maxpagesize=7");
    }
}
