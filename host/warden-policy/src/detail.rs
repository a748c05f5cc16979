//! The operator's view of a value refusal: which value, and which rule refused it. A guest's
//! refusal carries only the rule id and the reason (which never quote a value); the operator,
//! who owns the policy, also sees the value — unless it is sensitive (a constraint marks it, or
//! its name looks like a secret), which is never echoed anywhere.

use crate::grant::{Decision, Grant};
use crate::names;

/// Longest rendering of a refused value (bytes of its JSON text).
const MAX_VALUE_BYTES: usize = 200;

impl Grant {
    /// `PARAMETER = VALUE refused by RULE: REASON` for a call refused at a parameter's value (a
    /// role's constraint, or a deny rule that looks at a parameter), for the operator's eyes
    /// only. `None` when the refusal is not about a value (an unknown cmdlet or parameter name,
    /// bad JSON, an allowed call). A sensitive value is replaced by `(sensitive: not shown)`.
    pub fn refused_value(&self, decision: &Decision) -> Option<String> {
        if decision.allowed || decision.rule.starts_with("invalid") {
            return None;
        }
        let listed = |parameter: &str| {
            self.entries
                .iter()
                .filter(|e| names::same(&e.name, &decision.cmdlet))
                .any(|e| {
                    e.parameters.iter().any(|(p, _)| names::same(p, parameter))
                        || (e.max_result_size.is_some() && names::same(parameter, "ResultSize"))
                })
        };
        let parameter = if let Some(index) = decision
            .rule
            .strip_prefix("deny[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse::<usize>().ok())
        {
            self.deny
                .iter()
                .find(|d| d.index == index)?
                .parameter
                .clone()?
        } else {
            // `role:NAME/Cmdlet/Parameter`: refused at that parameter.
            let (_, after_role) = decision.rule.split_once('/')?;
            let (_, parameter) = after_role.split_once('/')?;
            // A parameter no entry lists was refused for its name, not its value.
            if !listed(parameter) {
                return None;
            }
            parameter.to_owned()
        };
        let (name, value) = decision
            .parameters
            .iter()
            .find(|(k, _)| names::same(k, &parameter))?;
        let shown = if decision.sensitive.iter().any(|s| names::same(s, name))
            || names::sensitive_by_name(name)
            || warden_vocab::secure_parameter_named(&decision.cmdlet, name).is_some()
        {
            "(sensitive: not shown)".to_owned()
        } else {
            names::cut(&value.to_string(), MAX_VALUE_BYTES)
        };
        Some(format!(
            "{name} = {shown} refused by {}: {}",
            decision.rule, decision.reason
        ))
    }
}
