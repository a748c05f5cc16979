//! Delegated tasks in `warden policy`: the tasks section of `check`, and `explain --task ID
//! --person user:UPN` ("may this person run the task, and approve it?").

use super::shown;
use crate::output::{Format, json_text};
use anyhow::bail;
use std::process::ExitCode;
use warden_policy::{Person, Policy, TaskSummary};

/// The tasks section of `warden policy check`'s text output.
pub(super) fn print_tasks(tasks: &[TaskSummary]) {
    println!("tasks ({}):", tasks.len());
    for t in tasks {
        println!(
            "  {} (line {}): {} → grant {}; approval {}{}",
            shown(&t.id),
            t.line,
            shown(&format!("{:?}", t.title)),
            shown(&t.grant),
            serde_json::to_value(t.approval)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            if t.needs_approval {
                " (every run waits for an approver)"
            } else {
                ""
            }
        );
        println!("    delegates: {}", shown(&or_none(&t.delegates)));
        println!("    approvers: {}", shown(&or_none(&t.approvers)));
        for p in &t.parameters {
            println!("    {}", shown(p));
        }
    }
}

fn or_none(entries: &[String]) -> String {
    if entries.is_empty() {
        "none".to_owned()
    } else {
        entries.join(", ")
    }
}

/// The person `--person`, `--group` and `--role` describe, as a sign-in would.
fn person(spec: &str, groups: &[String], roles: &[String]) -> anyhow::Result<Person> {
    let Some(user) = spec.strip_prefix("user:").filter(|u| !u.is_empty()) else {
        bail!(
            "--person {} is not user:UPN or user:OBJECT-ID\n  fix: write --person user:helpdesk@contoso.com (add --group NAME and --role VALUE for their groups and app roles)",
            shown(spec)
        );
    };
    let (upn, oid) = if user.contains('@') {
        (user.to_owned(), String::new())
    } else {
        (String::new(), user.to_owned())
    };
    let is_id = |g: &&String| g.len() == 36 && g.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    Ok(Person {
        oid,
        upn,
        groups: groups.iter().filter(is_id).cloned().collect(),
        group_names: groups.iter().filter(|g| !is_id(g)).cloned().collect(),
        roles: roles.to_vec(),
    })
}

/// `warden policy explain --task ID --person user:UPN`: exit 0 when the person may run the
/// task, 2 when not (or no such task), 1 on error.
pub(super) fn explain(
    policy: &Policy,
    task: &str,
    spec: &str,
    groups: &[String],
    roles: &[String],
    output: Format,
) -> anyhow::Result<ExitCode> {
    let who = person(spec, groups, roles)?;
    let verdict = policy.task_verdict(&who, task);
    match output {
        Format::Json => {
            let doc = serde_json::json!({
                "task": verdict.task,
                "exists": verdict.exists,
                "person": who,
                "may_run": verdict.may_run(),
                "delegate_as": verdict.delegate_as,
                "needs_approval": verdict.needs_approval,
                "may_approve": verdict.approver_as.is_some(),
                "approver_as": verdict.approver_as,
                "explanation": verdict.explanation,
            });
            println!("{}", json_text(&doc, true)?);
        }
        Format::Text => {
            println!(
                "{}: {} may {}run task {}",
                if verdict.may_run() {
                    "ALLOWED"
                } else {
                    "DENIED"
                },
                shown(spec),
                if verdict.may_run() { "" } else { "not " },
                shown(task)
            );
            for line in verdict.explanation.lines() {
                println!("  {}", shown(line));
            }
        }
    }
    Ok(if verdict.may_run() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
