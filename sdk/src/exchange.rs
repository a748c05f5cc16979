//! Running cmdlets through the host's broker, with typed results.
//!
//! Parameters go in as anything that serializes to a JSON object (a `serde_json::json!` map or
//! your own struct); results come back as `Vec<T>` for any `T: DeserializeOwned`. Large result
//! sets should use [`stream`], which holds one page in memory at a time.
//!
//! This module refuses to send parameters that are not a JSON object: the host would refuse
//! them anyway, and failing here says which call was wrong before a call is spent.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::CallError;
use crate::bindings::warden::plugin::exchange as wit;

/// Runs `cmdlet` with `parameters` and returns every result, decoded as `T`.
///
/// Use `serde_json::Value` as `T` to take results as they come.
///
/// ```no_run
/// # use warden_sdk::{exchange, Mailbox, serde_json::json};
/// let shared: Vec<Mailbox> = exchange::invoke(
///     "Get-Mailbox",
///     &json!({"RecipientTypeDetails": "SharedMailbox", "ResultSize": 100}),
/// )?;
/// # Ok::<(), warden_sdk::CallError>(())
/// ```
pub fn invoke<T: DeserializeOwned>(
    cmdlet: &str,
    parameters: &impl Serialize,
) -> Result<Vec<T>, CallError> {
    let text = invoke_json(cmdlet, &parameters_json(parameters)?)?;
    serde_json::from_str(&text).map_err(|e| crate::reads::decode_error(cmdlet, e))
}

/// Runs `cmdlet` with `parameters` given as JSON text and returns the results as the host sent
/// them: one JSON array of objects.
pub fn invoke_json(cmdlet: &str, parameters: &str) -> Result<String, CallError> {
    wit::invoke(cmdlet, parameters).map_err(CallError::from)
}

/// One call of a batch ([`invoke_batch`]): a cmdlet and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCall {
    cmdlet: String,
    parameters: String,
}

impl BatchCall {
    /// `cmdlet` with `parameters` (anything that serializes to a JSON object), refused here
    /// as [`invoke`] refuses them when they are not one.
    pub fn new(cmdlet: &str, parameters: &impl Serialize) -> Result<Self, CallError> {
        Ok(Self {
            cmdlet: cmdlet.to_owned(),
            parameters: parameters_json(parameters)?,
        })
    }

    /// `cmdlet` with its parameters as JSON text, sent as given.
    pub fn json(cmdlet: &str, parameters: &str) -> Self {
        Self {
            cmdlet: cmdlet.to_owned(),
            parameters: parameters.to_owned(),
        }
    }
}

/// Runs several calls at once and returns each one's results, decoded as `T`, in order. Each
/// call is judged and counted as if made alone: a refused call's slot holds its error and the
/// others still run. The whole is `Err` only when the host refuses the batch itself (more than
/// 100 calls).
///
/// ```no_run
/// # use warden_sdk::{exchange, exchange::BatchCall, serde_json::{json, Value}};
/// let calls = [
///     BatchCall::new("Get-Mailbox", &json!({"Identity": "ann@contoso.com"}))?,
///     BatchCall::new("Get-Mailbox", &json!({"Identity": "bob@contoso.com"}))?,
/// ];
/// for result in exchange::invoke_batch::<Value>(&calls)? {
///     match result {
///         Ok(objects) => { /* … */ }
///         Err(error) => { /* this call only */ }
///     }
/// }
/// # Ok::<(), warden_sdk::CallError>(())
/// ```
pub fn invoke_batch<T: DeserializeOwned>(
    calls: &[BatchCall],
) -> Result<Vec<Result<Vec<T>, CallError>>, CallError> {
    let results = invoke_batch_json(calls)?;
    Ok(calls
        .iter()
        .zip(results)
        .map(|(call, result)| {
            result.and_then(|text| {
                serde_json::from_str(&text).map_err(|e| crate::reads::decode_error(&call.cmdlet, e))
            })
        })
        .collect())
}

/// Like [`invoke_batch`], with each call's results as the host sent them (a JSON array).
pub fn invoke_batch_json(calls: &[BatchCall]) -> Result<Vec<Result<String, CallError>>, CallError> {
    let calls: Vec<wit::BatchCall> = calls
        .iter()
        .map(|c| wit::BatchCall {
            cmdlet: c.cmdlet.clone(),
            parameters: c.parameters.clone(),
        })
        .collect();
    let results = wit::invoke_batch(&calls).map_err(CallError::from)?;
    Ok(results
        .into_iter()
        .map(|r| r.map_err(CallError::from))
        .collect())
}

/// Starts `cmdlet` and returns its results one object at a time, fetching a page from the
/// host only when the previous one is used up.
///
/// The policy decision (and a write's single attempt) happens here, so a refused call fails
/// now rather than on the first item. Dropping the iterator early abandons the call.
///
/// ```no_run
/// # use warden_sdk::{exchange, Mailbox, serde_json::json};
/// for mailbox in exchange::stream::<Mailbox>("Get-Mailbox", &json!({"ResultSize": 500}))? {
///     let mailbox = mailbox?;
///     // … one mailbox at a time …
/// }
/// # Ok::<(), warden_sdk::CallError>(())
/// ```
pub fn stream<T: DeserializeOwned>(
    cmdlet: &str,
    parameters: &impl Serialize,
) -> Result<Results<T>, CallError> {
    let pages = stream_json(cmdlet, &parameters_json(parameters)?)?;
    Ok(Results {
        pages: Pages {
            raw: pages,
            cmdlet: cmdlet.to_owned(),
            _t: PhantomData,
        },
        current: Vec::new().into_iter(),
    })
}

/// Like [`stream`], with parameters as JSON text and pages as the host sent them.
pub fn stream_json(cmdlet: &str, parameters: &str) -> Result<RawPages, CallError> {
    let results = wit::stream(cmdlet, parameters).map_err(CallError::from)?;
    Ok(RawPages {
        results: Some(results),
    })
}

fn parameters_json(parameters: &impl Serialize) -> Result<String, CallError> {
    let value = serde_json::to_value(parameters).map_err(|e| CallError::Invalid {
        message: format!("the parameters do not serialize to JSON: {e}"),
    })?;
    if !value.is_object() {
        return Err(CallError::Invalid {
            message: format!("the parameters must be a JSON object of name to value, not {value}"),
        });
    }
    Ok(value.to_string())
}

/// A streamed call's pages as JSON text (each a JSON array of objects).
///
/// After the last page or an error it yields `None` for good.
#[derive(Debug)]
pub struct RawPages {
    results: Option<wit::Results>,
}

impl Iterator for RawPages {
    type Item = Result<String, CallError>;

    fn next(&mut self) -> Option<Self::Item> {
        let results = self.results.as_ref()?;
        match results.next() {
            Ok(Some(page)) => Some(Ok(page)),
            Ok(None) => {
                // Dropping the handle now tells the host the stream was read to its end.
                self.results = None;
                None
            }
            Err(e) => {
                self.results = None;
                Some(Err(e.into()))
            }
        }
    }
}

impl std::iter::FusedIterator for RawPages {}

/// A streamed call's pages, each decoded as `Vec<T>`.
#[derive(Debug)]
pub struct Pages<T> {
    raw: RawPages,
    cmdlet: String,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for Pages<T> {
    type Item = Result<Vec<T>, CallError>;

    fn next(&mut self) -> Option<Self::Item> {
        let page = match self.raw.next()? {
            Ok(page) => page,
            Err(e) => return Some(Err(e)),
        };
        match serde_json::from_str(&page) {
            Ok(items) => Some(Ok(items)),
            Err(e) => {
                // A page we cannot read ends the stream: skipping it would hide results.
                self.raw.results = None;
                Some(Err(crate::reads::decode_error(&self.cmdlet, e)))
            }
        }
    }
}

impl<T: DeserializeOwned> std::iter::FusedIterator for Pages<T> {}

/// A streamed call's results, one object at a time (see [`stream`]). Holds at most one page.
#[derive(Debug)]
pub struct Results<T> {
    pages: Pages<T>,
    current: std::vec::IntoIter<T>,
}

impl<T: DeserializeOwned> Results<T> {
    /// The remaining results a page at a time, for plugins that work in batches.
    pub fn into_pages(self) -> Pages<T> {
        self.pages
    }
}

impl<T: DeserializeOwned> Iterator for Results<T> {
    type Item = Result<T, CallError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(Ok(item));
            }
            match self.pages.next()? {
                Ok(page) => self.current = page.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl<T: DeserializeOwned> std::iter::FusedIterator for Results<T> {}

/// One cmdlet this run may call, as its grant (intersected with the plugin's manifest)
/// allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The cmdlet, as the policy spells it.
    pub cmdlet: String,
    /// The rule that allows it (`role:reader/Get-Mailbox`).
    pub rule: String,
    /// The only parameter names it may take.
    pub parameters: Vec<String>,
    /// True for cmdlets that change state.
    pub write: bool,
    /// The largest `ResultSize` allowed, when the grant bounds it.
    pub max_result_size: Option<u64>,
    /// The only result properties the plugin receives, when the grant limits them.
    pub output: Option<Vec<String>>,
    /// The parameter whose target object the host checks before the call.
    pub target_parameter: Option<String>,
}

impl Grant {
    /// True when this grant lets the cmdlet take `parameter` (names compare like the host
    /// compares them: exactly, ignoring ASCII case).
    pub fn takes(&self, parameter: &str) -> bool {
        self.parameters
            .iter()
            .any(|p| p.eq_ignore_ascii_case(parameter))
    }

    /// True when results will carry `property` (always, unless output shaping removes it).
    pub fn returns(&self, property: &str) -> bool {
        self.output
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p.eq_ignore_ascii_case(property)))
    }
}

/// What this run may call.
pub fn grants() -> Vec<Grant> {
    wit::grants()
        .into_iter()
        .map(|g| Grant {
            cmdlet: g.cmdlet,
            rule: g.rule,
            parameters: g.parameters,
            write: g.write,
            max_result_size: g.max_result_size,
            output: g.output,
            target_parameter: g.target_parameter,
        })
        .collect()
}

/// Checks up front that this run may call each cmdlet with each parameter listed, so a plugin
/// can stop before its first call instead of half-way through a job.
///
/// The error names everything missing, e.g. `this run may not call Get-MailboxStatistics;
/// Get-Mailbox may not take Filter`.
pub fn require(needs: &[(&str, &[&str])]) -> Result<Vec<Grant>, String> {
    let granted = grants();
    let mut missing = Vec::new();
    for (cmdlet, parameters) in needs {
        match granted
            .iter()
            .find(|g| g.cmdlet.eq_ignore_ascii_case(cmdlet))
        {
            None => missing.push(format!("this run may not call {cmdlet}")),
            Some(g) => {
                let absent: Vec<&str> =
                    parameters.iter().copied().filter(|p| !g.takes(p)).collect();
                if !absent.is_empty() {
                    missing.push(format!("{cmdlet} may not take {}", absent.join(", ")));
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(granted)
    } else {
        Err(format!(
            "{} (check the plugin's grant in the policy)",
            missing.join("; ")
        ))
    }
}

/// What this run has used of its budgets so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Cmdlet calls started.
    pub calls: u64,
    /// Of which writes.
    pub writes: u64,
    /// Result objects received.
    pub objects: u64,
    /// Bytes of result JSON received.
    pub output_bytes: u64,
}

/// What this run has used of its budgets so far.
pub fn usage() -> Usage {
    let u = wit::usage();
    Usage {
        calls: u.calls,
        writes: u.writes,
        objects: u.objects,
        output_bytes: u.output_bytes,
    }
}
