//! Why a run did not complete, told twice: a short reason for the delegate (the run's `error`
//! in the API and on the page, and its log) and the whole detail for the operator (the
//! service's log and the audit trail). The detail can hold the policy file's path, its rule
//! text, the task's script path or an Exchange error; the delegate's reason never does: it is
//! one of the fixed sentences below, or a refusal already phrased for the delegate.

use crate::state::Shared;
use warden_audit::Event;
use warden_policy::{Decision, Principal};
use warden_runtime::StopReason;
use warden_store::{RunRecord, RunStatus};

/// Why a run ended without completing.
#[derive(Debug)]
pub enum RunError {
    /// The policy file cannot be loaded when the run starts.
    PolicyUnavailable(String),
    /// The policy as it is now does not admit the run. The text names only the task and the
    /// requester (it is written for the delegate).
    NotAdmitted(String),
    /// The policy as it is now refuses the run's values.
    ValuesRefused {
        /// The parameters refused (the task's names for them).
        parameters: Vec<String>,
        /// Why, per parameter (the messages can quote a deny rule, its line and its reason).
        detail: String,
    },
    /// The task's script or plugin cannot be read or loaded.
    CodeUnavailable(String),
    /// The broker refused to run the task's code (its hash is not the pinned one, no grant
    /// names it, the audit trail cannot be written).
    CodeRefused(String),
    /// A limit stopped it.
    Stopped(StopReason),
    /// It failed while it ran (its message may quote the policy's refusals).
    Failed(String),
    /// The service's shutdown cut it after it may have written.
    CutAfterWrite(String),
    /// Its end could not be written to the audit trail (nor, with it, the lines queued before
    /// it): what it did is not on record. `true` when it may have written.
    Unrecorded(bool),
}

impl RunError {
    /// The status the run ends in.
    pub fn status(&self) -> RunStatus {
        match self {
            RunError::PolicyUnavailable(_)
            | RunError::NotAdmitted(_)
            | RunError::ValuesRefused { .. }
            | RunError::CodeRefused(_) => RunStatus::Refused,
            RunError::CodeUnavailable(_) | RunError::Stopped(_) | RunError::Failed(_) => {
                RunStatus::Failed
            }
            RunError::CutAfterWrite(_) | RunError::Unrecorded(true) => RunStatus::OutcomeUnknown,
            RunError::Unrecorded(false) => RunStatus::Failed,
        }
    }

    /// What the delegate is told.
    pub fn for_delegate(&self) -> String {
        const TOLD: &str = "the operator has the details";
        match self {
            RunError::PolicyUnavailable(_) => {
                format!("refused when it started: the service's policy cannot be read now; {TOLD}")
            }
            RunError::NotAdmitted(reason) => format!("refused when it started: {reason}"),
            RunError::ValuesRefused { parameters, .. } => format!(
                "refused when it started: the policy no longer allows the values of {}; ask \
                 again with other values, or ask the operator",
                parameters.join(", ")
            ),
            RunError::CodeUnavailable(_) => {
                format!("the task's code cannot be loaded; {TOLD}")
            }
            RunError::CodeRefused(_) => {
                format!(
                    "refused when it started: the policy does not allow the task's code; {TOLD}"
                )
            }
            RunError::Stopped(reason) => format!("the task was {reason}"),
            RunError::Failed(_) => format!("the task failed while it ran; {TOLD}"),
            RunError::CutAfterWrite(_) => "cut by the service's shutdown after it may have \
                                           written; check its effect before running it again"
                .to_owned(),
            RunError::Unrecorded(true) => "its end could not be recorded after it may have \
                                           written; check its effect before running it again"
                .to_owned(),
            RunError::Unrecorded(false) => format!("its end could not be recorded; {TOLD}"),
        }
    }

    /// What the operator is told.
    pub fn detail(&self) -> String {
        match self {
            RunError::PolicyUnavailable(detail) => {
                format!("the policy cannot be loaded: {detail}")
            }
            RunError::ValuesRefused { detail, .. } => {
                format!("the values are no longer allowed by the policy: {detail}")
            }
            RunError::NotAdmitted(detail)
            | RunError::CodeUnavailable(detail)
            | RunError::CodeRefused(detail)
            | RunError::Failed(detail)
            | RunError::CutAfterWrite(detail) => detail.clone(),
            RunError::Stopped(reason) => reason.to_string(),
            RunError::Unrecorded(_) => "the audit trail could not record the run's end: check \
                                        the trail's disk and permissions"
                .to_owned(),
        }
    }

    /// Tells the operator: the service's log, and a line in the audit trail (`rule` =
    /// `serve:run-<status>`, the detail as its reason, the requester as its principal).
    pub fn report(&self, shared: &Shared, run: &RunRecord) {
        let detail = self.detail();
        let status = self.status();
        tracing::warn!(run = %run.id, task = %run.task, status = status.as_str(), %detail, "a run did not complete");
        let principal = Principal::ad_hoc(format!("user:{}", run.requested_by.upn), "");
        let decision = Decision {
            allowed: false,
            rule: format!("serve:run-{}", status.as_str()),
            reason: format!(
                "task {}: {detail} (requested by oid {})",
                run.task, run.requested_by.oid
            ),
            cmdlet: "(serve)".into(),
            parameters: Default::default(),
            sensitive: Vec::new(),
            write: false,
        };
        if let Err(error) =
            shared
                .audit
                .record(&Event::decision(&run.id.to_string(), &principal, &decision))
        {
            tracing::error!(%error, run = %run.id, "could not write a run's end to the audit trail");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delegate_never_sees_the_detail() {
        let detail = "/etc/warden/policy.toml: line 3: DisplayName = { pattern = \"x\" }";
        for error in [
            RunError::PolicyUnavailable(detail.into()),
            RunError::ValuesRefused {
                parameters: vec!["identity".into()],
                detail: detail.into(),
            },
            RunError::CodeUnavailable(detail.into()),
            RunError::CodeRefused(detail.into()),
            RunError::Failed(detail.into()),
            RunError::CutAfterWrite(detail.into()),
        ] {
            let told = error.for_delegate();
            assert!(
                !told.contains("/etc/warden") && !told.contains("pattern"),
                "{told}"
            );
            assert!(error.detail().contains(detail));
        }
    }

    #[test]
    fn a_run_whose_end_is_not_on_record_is_outcome_unknown_only_if_it_may_have_written() {
        assert_eq!(
            RunError::Unrecorded(true).status(),
            RunStatus::OutcomeUnknown
        );
        assert_eq!(RunError::Unrecorded(false).status(), RunStatus::Failed);
    }
}
