//! On whose behalf a run acts: the person who asked the service for it, the task, and the
//! person who approved it. The service (`warden serve`) begins such runs; the broker writes
//! the delegation into every audit line of the run, so the trail answers "who did this" without
//! the service's own records.

/// A signed-in person as the record names them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DelegatedPerson {
    /// Entra object id (`oid`): what identity comparisons use.
    pub oid: String,
    /// User principal name, for people reading the record.
    pub upn: String,
}

/// A run the service began for a person: who asked, for which task, who approved it (when the
/// task needed an approval), and the service's id of the run (its record in the store).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delegation {
    /// Who asked for the run.
    pub person: DelegatedPerson,
    /// The task's id in the policy.
    pub task: String,
    /// Who approved it; `None` for a task that needs no approval.
    pub approver: Option<DelegatedPerson>,
    /// The service's id of the run (not the broker's run id, which is new at each attempt).
    pub service_run: String,
}
