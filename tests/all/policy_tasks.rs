//! Delegated tasks in the policy (issue 16, `[[task]]`): parsing, form fields derived from the
//! constraints, values judged by the broker's own checks, delegates and approvers, approval
//! modes, every load error with its message, `warden policy check` and `explain --task` through
//! the real binary, and the shipped task scripts run with the arguments `check_values` gives,
//! through the broker against exosim.

use crate::guests::{Recorder, output_json};
use crate::support::*;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use warden_policy::{Approval, FormField, Person, Policy, Principal, Task};

/// Roles and grants the tasks below run under: a reader (every field kind), a writer, a
/// second writer entry listing only Identity, and script/plugin/inline/ad hoc grants.
const BASE: &str = r#"
version = 1
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 50
[roles.reader.cmdlet.parameters]
RecipientTypeDetails = { one_of = ["UserMailbox", "SharedMailbox"] }
Identity = { domain = ["contoso.com"] }
Anr = { length = [2, 20] }
Filter = { pattern = "Name -eq '[a-z]+'" }
IncludeInactiveMailbox = { boolean = true }
Archive = { equals = true }
OrganizationalUnit = { any = true }
[roles.stats]
[[roles.stats.cmdlet]]
name = "Get-MailboxStatistics"
[roles.stats.cmdlet.parameters]
Identity = { domain = ["contoso.com"] }
[roles.lists]
[[roles.lists.cmdlet]]
name = "Get-Recipient"
[roles.lists.cmdlet.parameters]
RecipientTypeDetails = { items = [1, 3] }
[roles.writer]
[[roles.writer.cmdlet]]
name = "Set-Mailbox"
[roles.writer.cmdlet.parameters]
Identity = { domain = ["contoso.com"] }
DisplayName = { length = [1, 20], pattern = "[A-Za-z ]+" }
IssueWarningQuota = { range = [1, 100] }
[roles.identity-only]
[[roles.identity-only.cmdlet]]
name = "Set-Mailbox"
[roles.identity-only.cmdlet.parameters]
Identity = { domain = ["fabrikam.com"] }
HiddenFromAddressListsEnabled = { boolean = true }

[[deny]]
cmdlet = "Set-Mailbox"
parameter = "Identity"
when = { pattern = "admin.*@.*" }
reason = "administrators are renamed by hand"

[[grant]]
id = "read"
script = "read.rhai"
sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
roles = ["reader", "stats", "lists"]
[[grant]]
id = "write"
script = "write.rhai"
sha256 = "2222222222222222222222222222222222222222222222222222222222222222"
roles = ["reader", "writer", "identity-only"]
[grant.budgets]
writes = 1
[[grant]]
id = "plugin"
plugin = "report"
sha256 = "3333333333333333333333333333333333333333333333333333333333333333"
roles = ["reader"]
[[grant]]
id = "inline"
script_inline_sha256 = "4444444444444444444444444444444444444444444444444444444444444444"
roles = ["reader"]
[[grant]]
id = "adhoc"
principal = "operator"
script_inline = "any"
roles = ["reader"]
"#;

fn parse(tasks: &str) -> Result<Policy, warden_policy::PolicyError> {
    Policy::parse(
        &format!("{BASE}\n{tasks}"),
        Path::new("/etc/warden/tasks.toml"),
    )
}

fn policy(tasks: &str) -> Policy {
    parse(tasks).unwrap_or_else(|e| panic!("loads: {e}"))
}

/// The load error for `tasks`, as text.
fn error(tasks: &str) -> String {
    parse(tasks).expect_err("refused at load").to_string()
}

/// A read task whose one parameter `p` maps to Get-Mailbox's `parameter`.
fn read_task_with(parameter: &str, extra: &str) -> String {
    format!(
        "[[task]]\nid = \"t\"\ntitle = \"T\"\ngrant = \"read\"\napproval = \"never\"\ndelegates = [\"user:a@contoso.com\"]\n[[task.parameter]]\nname = \"p\"\ncmdlet = \"Get-Mailbox\"\nparameter = \"{parameter}\"\n{extra}"
    )
}

fn field_of(parameter: &str) -> FormField {
    policy(&read_task_with(parameter, "")).tasks()[0].parameters[0]
        .field
        .clone()
}

/// The rename task: two parameters on one Set-Mailbox call, approved by a lead.
const RENAME: &str = r#"
[[task]]
id = "rename"
title = "Rename a mailbox"
grant = "write"
approval = "writes"
approvers = ["user:lead@contoso.com", "group:00000000-0000-0000-0000-0000000000bb"]
delegates = ["user:helpdesk@contoso.com", "group:Helpdesk", "group:00000000-0000-0000-0000-0000000000aa", "role:Warden.Operator", "user:11111111-2222-3333-4444-555555555555"]
[[task.parameter]]
name = "identity"
label = "Mailbox"
cmdlet = "Set-Mailbox"
parameter = "Identity"
[[task.parameter]]
name = "display_name"
label = "New name"
cmdlet = "Set-Mailbox"
parameter = "DisplayName"
help = "Letters and spaces"
[[task.parameter]]
name = "quota"
cmdlet = "Set-Mailbox"
parameter = "IssueWarningQuota"
required = false
"#;

fn rename() -> (Policy, Task) {
    let policy = policy(RENAME);
    let task = policy.tasks()[0].clone();
    (policy, task)
}

fn values(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn person(upn: &str) -> Person {
    Person {
        oid: format!("oid-of-{upn}"),
        upn: upn.to_owned(),
        ..Person::default()
    }
}

/// The field errors of a refused submission, as (parameter, message).
fn refused(task: &Task, v: Value) -> Vec<(String, String)> {
    task.check_values(&values(v))
        .expect_err("refused")
        .into_iter()
        .map(|e| (e.parameter, e.message))
        .collect()
}

// ----- parsing -----

#[test]
fn a_task_parses_with_its_fields_defaults_and_what_it_runs() {
    let (_, task) = rename();
    assert_eq!(task.id, "rename");
    assert_eq!(task.title, "Rename a mailbox");
    assert_eq!(task.description, "");
    assert_eq!(task.grant, "write");
    assert_eq!(task.approval, Approval::Writes);
    assert_eq!(task.approval_expires_after, Duration::from_secs(24 * 3600));
    assert!(task.writes && task.needs_approval());
    assert_eq!(
        task.runs,
        warden_policy::TaskRuns::Script {
            path: Path::new("/etc/warden/write.rhai").to_owned()
        }
    );
    let names: Vec<(&str, &str, bool, &str, &str)> = task
        .parameters
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.label.as_str(),
                p.required,
                p.cmdlet.as_str(),
                p.parameter.as_str(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("identity", "Mailbox", true, "Set-Mailbox", "Identity"),
            (
                "display_name",
                "New name",
                true,
                "Set-Mailbox",
                "DisplayName"
            ),
            // No label: the name; required = false kept.
            ("quota", "quota", false, "Set-Mailbox", "IssueWarningQuota"),
        ]
    );
    assert_eq!(
        task.parameters[1].help.as_deref(),
        Some("Letters and spaces")
    );
    // The API's JSON: no delegates, approvers or paths of other people.
    let json = serde_json::to_value(&task).unwrap();
    assert_eq!(json["needs_approval"], true);
    assert_eq!(json["approval"], "writes");
    assert_eq!(json["approval_expires_after"], 86400);
    assert_eq!(json["parameters"][0]["field"]["kind"], "address");
    for private in ["delegates", "approvers", "runs", "calls"] {
        assert!(json.get(private).is_none(), "{private}: {json}");
    }
    assert!(!json.to_string().contains("helpdesk@"), "{json}");
}

#[test]
fn a_plugin_task_names_its_component_and_an_expiry_is_read() {
    let policy = policy(
        "[[task]]\nid = \"p\"\ntitle = \"P\"\ngrant = \"plugin\"\ncomponent = \"plugins/report.wasm\"\napproval = \"always\"\napprovers = [\"role:Approver\"]\napproval_expires_after = \"90m\"\n",
    );
    let task = &policy.tasks()[0];
    assert_eq!(
        task.runs,
        warden_policy::TaskRuns::Plugin {
            name: "report".into(),
            component: Path::new("/etc/warden/plugins/report.wasm").to_owned()
        }
    );
    assert_eq!(task.approval_expires_after, Duration::from_secs(90 * 60));
    assert!(task.parameters.is_empty());
}

// ----- each field kind, derived from the constraint -----

#[test]
fn one_of_gives_a_choice() {
    assert_eq!(
        field_of("RecipientTypeDetails"),
        FormField::Choice {
            options: vec![json!("UserMailbox"), json!("SharedMailbox")]
        }
    );
}

#[test]
fn equals_gives_a_choice_of_one() {
    assert_eq!(
        field_of("Archive"),
        FormField::Choice {
            options: vec![json!(true)]
        }
    );
}

#[test]
fn boolean_gives_a_checkbox() {
    assert_eq!(field_of("IncludeInactiveMailbox"), FormField::Checkbox);
}

#[test]
fn range_gives_an_integer() {
    let policy = policy(
        "[[task]]\nid = \"q\"\ntitle = \"Q\"\ngrant = \"write\"\napproval = \"always\"\napprovers = [\"user:lead@contoso.com\"]\n[[task.parameter]]\nname = \"quota\"\ncmdlet = \"Set-Mailbox\"\nparameter = \"IssueWarningQuota\"\n",
    );
    assert_eq!(
        policy.tasks()[0].parameters[0].field,
        FormField::Integer { min: 1, max: 100 }
    );
}

#[test]
fn max_result_size_gives_an_integer_up_to_it() {
    assert_eq!(
        field_of("ResultSize"),
        FormField::Integer { min: 1, max: 50 }
    );
}

#[test]
fn domain_gives_an_address() {
    assert_eq!(
        field_of("Identity"),
        FormField::Address {
            domains: vec!["contoso.com".into()]
        }
    );
}

#[test]
fn length_gives_text_with_bounds() {
    assert_eq!(
        field_of("Anr"),
        FormField::Text {
            min_length: Some(2),
            max_length: Some(20),
            pattern: None
        }
    );
}

#[test]
fn pattern_gives_text_with_the_pattern() {
    assert_eq!(
        field_of("Filter"),
        FormField::Text {
            min_length: None,
            max_length: None,
            pattern: Some("Name -eq '[a-z]+'".into())
        }
    );
}

#[test]
fn any_gives_plain_text() {
    assert_eq!(
        field_of("OrganizationalUnit"),
        FormField::Text {
            min_length: None,
            max_length: None,
            pattern: None
        }
    );
}

#[test]
fn a_form_submission_becomes_typed_values() {
    let policy = policy(
        "[[task]]\nid = \"f\"\ntitle = \"F\"\ngrant = \"read\"\napproval = \"never\"\n\
         [[task.parameter]]\nname = \"kind\"\ncmdlet = \"Get-Mailbox\"\nparameter = \"RecipientTypeDetails\"\nrequired = false\n\
         [[task.parameter]]\nname = \"inactive\"\ncmdlet = \"Get-Mailbox\"\nparameter = \"IncludeInactiveMailbox\"\n\
         [[task.parameter]]\nname = \"size\"\ncmdlet = \"Get-Mailbox\"\nparameter = \"ResultSize\"\n",
    );
    let task = &policy.tasks()[0];
    let v = task.values_from_form([("kind", ""), ("size", "7"), ("csrf", "x")]);
    assert_eq!(
        Value::Object(v.clone()),
        json!({"inactive": false, "size": 7})
    );
    assert_eq!(task.check_values(&v).unwrap(), ["inactive=false", "size=7"]);
    let v = task.values_from_form([
        ("kind", "SharedMailbox"),
        ("inactive", "on"),
        ("size", "x7"),
    ]);
    assert_eq!(
        Value::Object(v.clone()),
        json!({"kind": "SharedMailbox", "inactive": true, "size": "x7"})
    );
    assert_eq!(refused(task, Value::Object(v))[0].0, "size");
}

// ----- check_values -----

#[test]
fn check_values_accepts_and_gives_the_guests_arguments_in_order() {
    let (_, task) = rename();
    let args = task
        .check_values(&values(
            json!({"display_name": "Ann Lee", "identity": "ann@contoso.com"}),
        ))
        .unwrap();
    assert_eq!(args, ["identity=ann@contoso.com", "display_name=Ann Lee"]);
    let args = task
        .check_values(&values(
            json!({"quota": 5, "display_name": "Ann", "identity": "ann@contoso.com"}),
        ))
        .unwrap();
    assert_eq!(
        args,
        ["identity=ann@contoso.com", "display_name=Ann", "quota=5"]
    );
    // null is "left out" for an optional parameter.
    assert!(
        task.check_values(&values(
            json!({"quota": null, "display_name": "Ann", "identity": "ann@contoso.com"})
        ))
        .is_ok()
    );
}

#[test]
fn check_values_refuses_an_unknown_name() {
    let (_, task) = rename();
    // Names are exact: `Identity` is not `identity`.
    let errors = refused(
        &task,
        json!({"Identity": "ann@contoso.com", "identity": "ann@contoso.com", "display_name": "Ann"}),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "Identity");
    assert!(
        errors[0].1.contains("has no parameter Identity")
            && errors[0].1.contains("identity, display_name, quota"),
        "{errors:?}"
    );
}

#[test]
fn check_values_refuses_an_extra_field_and_runs_nothing_of_the_rest() {
    let (_, task) = rename();
    let errors = refused(
        &task,
        json!({"identity": "ann@contoso.com", "display_name": "Ann", "Confirm": false}),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "Confirm");
}

#[test]
fn check_values_refuses_a_missing_required_value() {
    let (_, task) = rename();
    for given in [
        json!({"identity": "ann@contoso.com"}),
        json!({"identity": "ann@contoso.com", "display_name": null}),
    ] {
        let errors = refused(&task, given);
        assert_eq!(
            errors,
            [("display_name".to_owned(), "New name is required".to_owned())]
        );
    }
}

#[test]
fn check_values_refuses_a_value_of_the_wrong_type() {
    let (_, task) = rename();
    let errors = refused(
        &task,
        json!({"identity": "ann@contoso.com", "display_name": "Ann", "quota": "5"}),
    );
    assert_eq!(errors[0].0, "quota");
    assert!(errors[0].1.contains("an integer is expected"), "{errors:?}");
    let errors = refused(
        &task,
        json!({"identity": ["ann@contoso.com"], "display_name": "Ann"}),
    );
    assert!(errors[0].1.contains("a list is not accepted"), "{errors:?}");
}

#[test]
fn check_values_refuses_a_value_outside_its_constraint_without_quoting_it() {
    let (_, task) = rename();
    for (given, parameter, why) in [
        (
            json!({"identity": "ann@evil.com", "display_name": "Ann"}),
            "identity",
            "accepted domain",
        ),
        (
            json!({"identity": "ann@contoso.com", "display_name": "Ann99"}),
            "display_name",
            "pattern",
        ),
        (
            json!({"identity": "ann@contoso.com", "display_name": "A".repeat(21)}),
            "display_name",
            "21 characters",
        ),
        (
            json!({"identity": "ann@contoso.com", "display_name": "Ann", "quota": 101}),
            "quota",
            "outside 1..=100",
        ),
        // The broker's text rule: an invisible edge, refused before any constraint.
        (
            json!({"identity": "ann@contoso.com", "display_name": "Ann\u{200b}"}),
            "display_name",
            "invisible",
        ),
        // A deny rule on the parameter refuses before the run is queued.
        (
            json!({"identity": "admin@contoso.com", "display_name": "Ann"}),
            "identity",
            "administrators are renamed by hand",
        ),
    ] {
        let errors = refused(&task, given.clone());
        assert_eq!(errors.len(), 1, "{given}: {errors:?}");
        assert_eq!(errors[0].0, parameter, "{given}");
        assert!(errors[0].1.contains(why), "{given}: {errors:?}");
        assert!(
            !errors[0].1.contains("evil") && !errors[0].1.contains("Ann99"),
            "{errors:?}"
        );
        // Only a deny rule's refusal is marked as naming a rule (a delegate is not shown it).
        let by_deny_rule = task.check_values(&values(given.clone())).unwrap_err()[0].by_deny_rule;
        assert_eq!(by_deny_rule, why.starts_with("administrators"), "{given}");
    }
}

/// The form's check is the broker's: for every value, `check_values` accepts exactly when
/// the grant admits the call the script makes with it.
#[test]
fn check_values_and_the_broker_never_disagree() {
    let (policy, task) = rename();
    let grant = policy
        .grant_for(
            &Principal::Script {
                path: Some("/etc/warden/write.rhai".into()),
                sha256: "2".repeat(64),
            },
            None,
        )
        .unwrap();
    let identities = [
        "ann@contoso.com",
        "ann@fabrikam.com",
        "admin@contoso.com",
        "ADMIN@contoso.com",
        "smtp:bo@contoso.com",
        " ann@contoso.com",
        "ann@contoso.com.evil",
        "@contoso.com",
    ];
    let names = [
        json!("Ann"),
        json!(""),
        json!("Ann 2"),
        json!(5),
        json!(null),
        json!(true),
        json!("Ann\u{202e}"),
        json!("A".repeat(20)),
    ];
    for identity in identities {
        for name in &names {
            let form =
                task.check_values(&values(json!({"identity": identity, "display_name": name})));
            let call = grant.check(
                "Set-Mailbox",
                &json!({"Identity": identity, "DisplayName": name}).to_string(),
            );
            assert_eq!(
                form.is_ok(),
                call.allowed,
                "{identity} / {name}: form {form:?}, broker {} {}",
                call.rule,
                call.reason
            );
        }
    }
}

#[test]
fn values_one_entry_admits_only_together_are_refused_together() {
    // Identity in fabrikam.com is admitted by identity-only, HiddenFromAddressListsEnabled
    // too; but a task passing Identity and DisplayName needs the writer entry, which admits
    // only contoso.com: the form refuses what no single entry admits.
    let (_, task) = rename();
    let errors = refused(
        &task,
        json!({"identity": "ann@fabrikam.com", "display_name": "Ann"}),
    );
    assert_eq!(errors[0].0, "identity");
    assert!(errors[0].1.contains("accepted domain"), "{errors:?}");
}

// ----- delegates -----

#[test]
fn tasks_for_a_user_by_upn_compares_case_insensitively() {
    let (policy, _) = rename();
    for upn in ["helpdesk@contoso.com", "HelpDesk@Contoso.COM"] {
        let tasks = policy.tasks_for(&person(upn));
        assert_eq!(tasks.len(), 1, "{upn}");
        assert!(policy.task_for(&person(upn), "rename").is_some());
    }
    // Unicode folding is not ASCII case: the Kelvin sign is not K.
    assert!(
        policy
            .tasks_for(&person("helpdes\u{212a}@contoso.com"))
            .is_empty()
    );
}

#[test]
fn tasks_for_a_user_by_object_id_compares_exactly() {
    let (policy, _) = rename();
    let by_id = |oid: &str| Person {
        oid: oid.into(),
        upn: "someone@contoso.com".into(),
        ..Person::default()
    };
    assert_eq!(
        policy
            .tasks_for(&by_id("11111111-2222-3333-4444-555555555555"))
            .len(),
        1
    );
    assert!(
        policy
            .tasks_for(&by_id("11111111-2222-3333-4444-55555555555"))
            .is_empty()
    );
    assert!(
        policy
            .tasks_for(&by_id("11111111-2222-3333-4444-555555555555 "))
            .is_empty()
    );
}

#[test]
fn tasks_for_a_group_by_name() {
    let (policy, _) = rename();
    let member = Person {
        group_names: vec!["helpdesk".into()],
        ..person("x@contoso.com")
    };
    assert_eq!(policy.tasks_for(&member).len(), 1);
    let other = Person {
        group_names: vec!["Helpdesk2".into()],
        ..person("x@contoso.com")
    };
    assert!(policy.tasks_for(&other).is_empty());
}

#[test]
fn tasks_for_a_group_by_object_id() {
    let (policy, _) = rename();
    let member = Person {
        groups: vec!["00000000-0000-0000-0000-0000000000aa".into()],
        ..person("x@contoso.com")
    };
    assert_eq!(policy.tasks_for(&member).len(), 1);
    // An id is not a name, and case matters for ids.
    let named = Person {
        group_names: vec!["00000000-0000-0000-0000-0000000000aa".into()],
        groups: vec!["00000000-0000-0000-0000-0000000000AA".into()],
        ..person("x@contoso.com")
    };
    assert!(policy.tasks_for(&named).is_empty());
}

#[test]
fn tasks_for_an_app_role() {
    let (policy, _) = rename();
    let operator = Person {
        roles: vec!["Warden.Operator".into()],
        ..person("x@contoso.com")
    };
    assert_eq!(policy.tasks_for(&operator).len(), 1);
    let lower = Person {
        roles: vec!["warden.operator".into()],
        ..person("x@contoso.com")
    };
    assert!(policy.tasks_for(&lower).is_empty());
}

#[test]
fn a_person_no_entry_names_gets_no_task_and_the_same_answer_as_for_none() {
    let (policy, _) = rename();
    let outsider = person("outsider@contoso.com");
    assert!(policy.tasks_for(&outsider).is_empty());
    assert!(policy.task_for(&outsider, "rename").is_none());
    assert!(policy.task_for(&outsider, "no-such-task").is_none());
    // Empty claims match nothing.
    assert!(policy.tasks_for(&Person::default()).is_empty());
}

// ----- approval -----

#[test]
fn approval_modes_follow_the_grants_writes() {
    let task = |grant: &str, approval: &str| {
        let policy = policy(&format!(
            "[[task]]\nid = \"t\"\ntitle = \"T\"\ngrant = \"{grant}\"\napproval = \"{approval}\"\napprovers = [\"user:lead@contoso.com\"]\n"
        ));
        let task = policy.tasks()[0].clone();
        (task.writes, task.needs_approval())
    };
    assert_eq!(task("read", "never"), (false, false));
    assert_eq!(task("read", "writes"), (false, false));
    assert_eq!(task("read", "always"), (false, true));
    assert_eq!(task("write", "never"), (true, false));
    assert_eq!(task("write", "writes"), (true, true));
    assert_eq!(task("write", "always"), (true, true));
}

#[test]
fn only_approvers_approve_and_never_their_own_run() {
    let (policy, task) = rename();
    let helpdesk = person("helpdesk@contoso.com");
    let lead = person("lead@contoso.com");
    // A delegate who is no approver can never approve.
    assert!(!policy.may_approve(&helpdesk, &task));
    assert!(!policy.may_approve_run(&helpdesk, &task, "oid-of-someone"));
    assert!(policy.may_approve(&lead, &task));
    assert!(policy.may_approve_run(&lead, &task, &helpdesk.oid));
    // Nobody approves their own run, and an empty id is nobody's.
    assert!(!policy.may_approve_run(&lead, &task, &lead.oid));
    assert!(!policy.may_approve_run(&lead, &task, ""));
    let no_oid = Person {
        oid: String::new(),
        ..lead.clone()
    };
    assert!(!policy.may_approve_run(&no_oid, &task, ""));
    // Approvers by group id.
    let group = Person {
        groups: vec!["00000000-0000-0000-0000-0000000000bb".into()],
        ..person("x@contoso.com")
    };
    assert!(policy.may_approve(&group, &task));
}

// ----- load errors, each named with its task, field and fix -----

/// A complete valid task with `replace` applied to its text.
fn task_with(from: &str, to: &str) -> String {
    let valid = "[[task]]\nid = \"t\"\ntitle = \"T\"\ngrant = \"write\"\napproval = \"writes\"\napprovers = [\"user:lead@contoso.com\"]\ndelegates = [\"user:a@contoso.com\"]\n[[task.parameter]]\nname = \"identity\"\ncmdlet = \"Set-Mailbox\"\nparameter = \"Identity\"\n";
    assert!(valid.contains(from), "{from}");
    valid.replacen(from, to, 1)
}

fn assert_error(tasks: &str, expected: &[&str]) {
    let message = error(tasks);
    assert!(message.starts_with("/etc/warden/tasks.toml:"), "{message}");
    for part in expected {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
}

#[test]
fn load_error_missing_id() {
    assert_error(
        &task_with("id = \"t\"\n", ""),
        &["task #1: id is missing", "give id = "],
    );
}

#[test]
fn load_error_bad_id() {
    assert_error(
        &task_with("id = \"t\"", "id = \"a b\""),
        &["task a b: id:", "task id \"a b\" must be 1–64"],
    );
}

#[test]
fn load_error_duplicate_id() {
    let twice = format!("{}{}", task_with("", ""), task_with("", ""));
    assert_error(
        &twice,
        &[
            "task t: id \"t\" is used twice",
            "give each task its own id",
        ],
    );
}

#[test]
fn load_error_missing_title() {
    assert_error(
        &task_with("title = \"T\"\n", ""),
        &["task t: title is missing"],
    );
}

#[test]
fn load_error_unknown_key() {
    assert_error(
        &task_with("title = \"T\"", "title = \"T\"\ntitel = \"x\""),
        &["task t:", "unknown field `titel`"],
    );
}

#[test]
fn load_error_wrong_type() {
    assert_error(
        &task_with("title = \"T\"", "title = 5"),
        &["task t:", "invalid type"],
    );
}

#[test]
fn load_error_unknown_grant() {
    assert_error(
        &task_with("grant = \"write\"", "grant = \"nope\""),
        &[
            "task t: grant = \"nope\" names no [[grant]]",
            "read, write, plugin, inline, adhoc",
            "fix:",
        ],
    );
}

#[test]
fn load_error_grant_that_pins_no_file() {
    for grant in ["inline", "adhoc"] {
        assert_error(
            &task_with("grant = \"write\"", &format!("grant = \"{grant}\"")),
            &["task t:", "pins no file", "name a grant with script"],
        );
    }
}

#[test]
fn load_error_plugin_grant_without_component() {
    assert_error(
        "[[task]]\nid = \"p\"\ntitle = \"P\"\ngrant = \"plugin\"\napproval = \"never\"\n",
        &[
            "task p: grant plugin pins plugin report",
            "give component = \"path/to/report.wasm\"",
        ],
    );
}

#[test]
fn load_error_component_on_a_script_grant() {
    assert_error(
        &task_with(
            "grant = \"write\"",
            "grant = \"write\"\ncomponent = \"x.wasm\"",
        ),
        &[
            "task t: component is for a plugin grant",
            "leave component out",
        ],
    );
}

#[test]
fn load_error_missing_approval() {
    assert_error(
        &task_with("approval = \"writes\"\n", ""),
        &["task t: approval is missing", "\"never\", \"writes\""],
    );
}

#[test]
fn load_error_bad_approval() {
    assert_error(
        &task_with("approval = \"writes\"", "approval = \"sometimes\""),
        &["task t: approval = \"sometimes\": write \"never\""],
    );
}

#[test]
fn load_error_bad_expiry() {
    for bad in ["24", "1.5h", "0m", "59s", "31d", "-1h", "h"] {
        assert_error(
            &task_with(
                "approval = \"writes\"",
                &format!("approval = \"writes\"\napproval_expires_after = \"{bad}\""),
            ),
            &[
                "task t: approval_expires_after = ",
                "like \"30m\", \"24h\" or \"7d\"",
            ],
        );
    }
}

#[test]
fn load_error_approval_needed_without_approvers() {
    assert_error(
        &task_with("approvers = [\"user:lead@contoso.com\"]\n", ""),
        &[
            "task t: approval = \"writes\" needs an approver",
            "allow the write Set-Mailbox",
            "fix: list who may approve",
        ],
    );
    assert_error(
        "[[task]]\nid = \"r\"\ntitle = \"R\"\ngrant = \"read\"\napproval = \"always\"\n",
        &["task r: approval = \"always\" needs an approver"],
    );
}

#[test]
fn load_error_delegate_without_prefix() {
    assert_error(
        &task_with(
            "[\"user:a@contoso.com\"]",
            "[\"user:a@contoso.com\", \"helpdesk@contoso.com\"]",
        ),
        &[
            "task t: delegates[1] = \"helpdesk@contoso.com\" has no prefix",
            "write user:UPN",
        ],
    );
}

#[test]
fn load_error_approver_with_an_unknown_prefix() {
    assert_error(
        &task_with(
            "[\"user:lead@contoso.com\"]",
            "[\"person:lead@contoso.com\"]",
        ),
        &[
            "task t: approvers[0] = \"person:lead@contoso.com\": the prefix must be user:, group: or role:",
        ],
    );
}

#[test]
fn load_error_user_neither_upn_nor_object_id() {
    assert_error(
        &task_with("[\"user:a@contoso.com\"]", "[\"user:helpdesk\"]"),
        &[
            "task t: delegates[0] = \"user:helpdesk\" is neither a UPN",
            "nor an object id",
        ],
    );
}

#[test]
fn load_error_object_id_in_uppercase() {
    assert_error(
        &task_with(
            "[\"user:a@contoso.com\"]",
            "[\"group:00000000-0000-0000-0000-0000000000AA\"]",
        ),
        &[
            "task t: delegates[0] = ",
            "compared exactly",
            "write 00000000-0000-0000-0000-0000000000aa",
        ],
    );
}

#[test]
fn load_error_empty_member_name() {
    assert_error(
        &task_with("[\"user:a@contoso.com\"]", "[\"role: x\"]"),
        &[
            "task t: delegates[0] = \"role: x\": the name after role: must be 1–256 characters without spaces",
        ],
    );
}

#[test]
fn load_error_parameter_on_a_cmdlet_the_grant_does_not_allow() {
    assert_error(
        &task_with("cmdlet = \"Set-Mailbox\"", "cmdlet = \"Set-User\""),
        &[
            "task t: parameter identity names Set-User, which no role of grant write allows",
            "fix: name a cmdlet the grant allows",
        ],
    );
}

#[test]
fn load_error_parameter_the_entry_does_not_list() {
    assert_error(
        &task_with("parameter = \"Identity\"", "parameter = \"Alias\""),
        &[
            "task t: parameter identity names Set-Mailbox Alias, which no role entry of grant write lists",
            "fix:",
        ],
    );
}

#[test]
fn load_error_parameters_no_single_entry_lists_together() {
    // DisplayName is in `writer`, HiddenFromAddressListsEnabled in `identity-only`.
    let tasks = task_with(
        "parameter = \"Identity\"\n",
        "parameter = \"DisplayName\"\n[[task.parameter]]\nname = \"hidden\"\ncmdlet = \"Set-Mailbox\"\nparameter = \"HiddenFromAddressListsEnabled\"\n",
    );
    assert_error(
        &tasks,
        &[
            "task t: no single role entry of grant write lists DisplayName, HiddenFromAddressListsEnabled for Set-Mailbox together",
            "roles never merge",
        ],
    );
}

#[test]
fn load_error_parameter_whose_constraint_is_a_list() {
    assert_error(
        "[[task]]\nid = \"l\"\ntitle = \"L\"\ngrant = \"read\"\napproval = \"never\"\n[[task.parameter]]\nname = \"kinds\"\ncmdlet = \"Get-Recipient\"\nparameter = \"RecipientTypeDetails\"\n",
        &[
            "task l: parameter kinds: Get-Recipient/RecipientTypeDetails (role:lists/Get-Recipient): it admits a list, and a task parameter is one value",
        ],
    );
}

#[test]
fn load_error_parameter_listed_twice() {
    let tasks = task_with(
        "parameter = \"Identity\"\n",
        "parameter = \"Identity\"\n[[task.parameter]]\nname = \"Identity\"\ncmdlet = \"Set-Mailbox\"\nparameter = \"DisplayName\"\n",
    );
    assert_error(&tasks, &["task t: parameter Identity is listed twice"]);
}

#[test]
fn load_error_parameter_name_not_an_argument_name() {
    assert_error(
        &task_with("name = \"identity\"", "name = \"id=x\""),
        &["task t: parameter \"id=x\": a name is an ASCII letter"],
    );
}

#[test]
fn load_error_parameter_without_cmdlet() {
    assert_error(
        &task_with("cmdlet = \"Set-Mailbox\"\n", ""),
        &["task t: parameter identity has no cmdlet", "give cmdlet = "],
    );
}

#[test]
fn load_errors_name_the_line_of_their_task() {
    let text = format!(
        "{BASE}\n{}{}",
        task_with("", ""),
        task_with("grant = \"write\"", "grant = \"x\"").replace("id = \"t\"", "id = \"u\"")
    );
    let err = Policy::parse(&text, Path::new("p.toml")).unwrap_err();
    let warden_policy::PolicyError::Invalid { line, reason, .. } = err else {
        panic!("invalid")
    };
    let second = text.match_indices("[[task]]").nth(1).unwrap().0;
    assert_eq!(line, text[..second].lines().count() + 1, "{reason}");
}

#[test]
fn legal_but_doubtful_tasks_get_warnings() {
    let doubtful = policy(&format!(
        "{}\n[[task]]\nid = \"n\"\ntitle = \"N\"\ngrant = \"read\"\napproval = \"never\"\napprovers = [\"user:lead@contoso.com\"]\ndelegates = [\"group:Helpdesk\"]\n",
        task_with("approval = \"writes\"", "approval = \"never\"")
            .replace("approvers = [\"user:lead@contoso.com\"]\n", "")
    ));
    let warnings = doubtful.warnings().join("\n");
    for expected in [
        "task t (line", // approval never on a writing task
        "has approval = \"never\" but grant write's roles allow the write Set-Mailbox",
        "task n (line",
        "lists approvers but no run of it waits for one",
        "names group:Helpdesk by its display name",
    ] {
        assert!(warnings.contains(expected), "{expected}: {warnings}");
    }
    let none =
        policy("[[task]]\nid = \"e\"\ntitle = \"E\"\ngrant = \"read\"\napproval = \"never\"\n");
    assert!(
        none.warnings().join("\n").contains("task e (line"),
        "{:?}",
        none.warnings()
    );
    assert!(
        none.warnings()
            .join("\n")
            .contains("has no delegates: nobody can run it")
    );
}

// ----- the shipped demo tasks -----

fn shipped() -> (Policy, std::path::PathBuf) {
    let path = repo_root().join("scripts/tasks/policy.toml");
    (Policy::load(&path).unwrap(), path)
}

#[test]
fn the_shipped_task_policy_pins_its_scripts_and_names_the_demo_people() {
    let (policy, _) = shipped();
    assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());
    for task in policy.tasks() {
        let warden_policy::TaskRuns::Script { path } = &task.runs else {
            panic!("a script task")
        };
        let principal = Principal::script_file(path.clone(), &std::fs::read(path).unwrap());
        let grant = policy
            .grant_for(&principal, None)
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(grant.id(), task.grant);
    }
    let helpdesk = person("helpdesk@contoso.onmicrosoft.com");
    let lead = person("lead@contoso.onmicrosoft.com");
    let ids = |who: &Person| -> Vec<String> {
        policy.tasks_for(who).iter().map(|t| t.id.clone()).collect()
    };
    assert_eq!(ids(&helpdesk), ["list-mailboxes", "rename-mailbox"]);
    assert!(ids(&person("outsider@contoso.onmicrosoft.com")).is_empty());
    assert!(ids(&lead).is_empty());
    let list = policy.task_for(&helpdesk, "list-mailboxes").unwrap();
    let rename = policy.task_for(&helpdesk, "rename-mailbox").unwrap();
    assert!(!list.needs_approval() && rename.needs_approval());
    assert!(policy.may_approve_run(&lead, rename, &helpdesk.oid));
    assert!(!policy.may_approve(&helpdesk, rename));
}

/// The shipped task scripts, run as `warden serve` will run them: the values judged by
/// `check_values`, its arguments handed to the script, the grant found from the script's own
/// bytes, through the broker to exosim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_task_scripts_run_with_the_arguments_check_values_gives() {
    use warden_audit::{AuditKey, AuditTrail};
    use warden_runtime::{RunRequest, RuntimeLimits, ScriptHost};
    let emu = Emulator::start().await;
    let (policy, _) = shipped();
    let policy = Arc::new(policy);
    let audit = Arc::new(
        AuditTrail::open(
            &emu.dir.path().join("audit.jsonl"),
            AuditKey::from_bytes([5; 32]),
        )
        .unwrap(),
    );
    let broker = warden_broker::Broker::new(
        policy.clone(),
        Arc::new(admin_session(&emu)),
        audit,
        Duration::from_secs(30),
    );
    let scripts = ScriptHost::new(RuntimeLimits::default());
    let helpdesk = person("helpdesk@contoso.onmicrosoft.com");
    let run = |id: &'static str, given: Value| {
        let task = policy.task_for(&helpdesk, id).unwrap().clone();
        let scripts = &scripts;
        let broker = &broker;
        async move {
            let args = task.check_values(&values(given)).unwrap();
            let warden_policy::TaskRuns::Script { path } = &task.runs else {
                panic!("a script task")
            };
            let source = std::fs::read(path).unwrap();
            let compiled = scripts
                .compile(
                    &path.display().to_string(),
                    std::str::from_utf8(&source).unwrap(),
                )
                .unwrap();
            let request = RunRequest {
                args,
                observer: Arc::new(Recorder::default()),
                interrupt: Default::default(),
                delegation: None,
            };
            let report = scripts
                .run(
                    &compiled,
                    Principal::script_file(path.clone(), &source),
                    broker,
                    request,
                )
                .await
                .unwrap();
            output_json(&report)
        }
    };
    let shared = run("list-mailboxes", json!({"kind": "SharedMailbox"})).await;
    let rows = shared.as_array().unwrap();
    assert!(!rows.is_empty(), "{shared}");
    assert!(
        rows.iter()
            .all(|r| r["RecipientTypeDetails"] == "SharedMailbox"),
        "{shared}"
    );
    let all = run("list-mailboxes", json!({})).await;
    let target = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["RecipientTypeDetails"] == "UserMailbox"
                && !r["PrimarySmtpAddress"]
                    .as_str()
                    .unwrap()
                    .starts_with("admin")
        })
        .unwrap()["PrimarySmtpAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let renamed = run(
        "rename-mailbox",
        json!({"identity": target, "display_name": "Renamed By Task"}),
    )
    .await;
    assert_eq!(renamed[0]["DisplayName"], "Renamed By Task", "{renamed}");
    let sets = calls_of(&emu, "Set-Mailbox");
    assert_eq!(sets.len(), 1);
    assert!(sets[0].applied, "{:?}", sets[0]);
    let mut sent = sets[0].parameter_names.clone();
    sent.sort();
    assert_eq!(sent, ["DisplayName", "Identity"]);
    // A value the policy refuses never becomes a run: nothing more reaches exosim.
    let task = policy.task_for(&helpdesk, "rename-mailbox").unwrap();
    for refused in [
        json!({"identity": "admin@contoso.onmicrosoft.com", "display_name": "X"}),
        json!({"identity": target, "display_name": "Bad<script>"}),
        json!({"identity": "x@fabrikam.com", "display_name": "X"}),
    ] {
        assert!(task.check_values(&values(refused)).is_err());
    }
    assert_eq!(calls_of(&emu, "Set-Mailbox").len(), 1);
}

// ----- the CLI -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_lists_tasks_and_refuses_a_bad_one() {
    let shipped = repo_root().join("scripts/tasks/policy.toml");
    let shipped = shipped.to_str().unwrap();
    let check = warden(&["policy", "check", shipped], &[]).await;
    let (out, err) = text(&check);
    assert!(check.status.success(), "{err}");
    for expected in [
        "tasks (2):",
        "rename-mailbox (line",
        "approval writes (every run waits for an approver)",
        "delegates: user:helpdesk@contoso.onmicrosoft.com",
        "approvers: user:lead@contoso.onmicrosoft.com",
        "identity → Set-Mailbox/Identity (address, required)",
        "kind → Get-Mailbox/RecipientTypeDetails (choice)",
    ] {
        assert!(out.contains(expected), "{expected}: {out}");
    }
    let json = warden(&["policy", "check", "--output", "json", shipped], &[]).await;
    let summary: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(summary["tasks"][1]["id"], "rename-mailbox", "{summary}");
    assert_eq!(summary["tasks"][1]["needs_approval"], true);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text_of_bad = std::fs::read_to_string(repo_root().join("scripts/tasks/policy.toml"))
        .unwrap()
        .replace(
            "delegates = [\"user:helpdesk@contoso.onmicrosoft.com\"]\napproval_expires_after",
            "delegates = [\"helpdesk@contoso.onmicrosoft.com\"]\napproval_expires_after",
        );
    std::fs::write(&bad, text_of_bad).unwrap();
    let check = warden(&["policy", "check", bad.to_str().unwrap()], &[]).await;
    let (_, err) = text(&check);
    assert_eq!(check.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.toml:") && err.contains("task rename-mailbox: delegates[0] = \"helpdesk@contoso.onmicrosoft.com\" has no prefix"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_explain_says_whether_a_person_may_run_and_approve_a_task() {
    let shipped = repo_root().join("scripts/tasks/policy.toml");
    let shipped = shipped.to_str().unwrap();
    let explain = |person: &'static str, task: &'static str, extra: &'static [&'static str]| async move {
        let mut args = vec![
            "policy", "explain", "--policy", shipped, "--person", person, "--task", task,
        ];
        args.extend_from_slice(extra);
        warden(&args, &[]).await
    };
    let helpdesk = explain(
        "user:HelpDesk@contoso.onmicrosoft.com",
        "rename-mailbox",
        &[],
    )
    .await;
    let (out, err) = text(&helpdesk);
    assert!(helpdesk.status.success(), "{out}{err}");
    assert!(
        out.starts_with(
            "ALLOWED: user:HelpDesk@contoso.onmicrosoft.com may run task rename-mailbox"
        ),
        "{out}"
    );
    assert!(
        out.contains("as delegate user:helpdesk@contoso.onmicrosoft.com"),
        "{out}"
    );
    assert!(out.contains("every run waits for an approver"), "{out}");
    assert!(out.contains("may approve: no"), "{out}");

    let lead = explain(
        "user:lead@contoso.onmicrosoft.com",
        "rename-mailbox",
        &["--output", "json"],
    )
    .await;
    assert_eq!(lead.status.code(), Some(2), "{}", text(&lead).1);
    let answer: Value = serde_json::from_slice(&lead.stdout).unwrap();
    assert_eq!(answer["may_run"], false, "{answer}");
    assert_eq!(answer["may_approve"], true, "{answer}");
    assert_eq!(answer["approver_as"], "user:lead@contoso.onmicrosoft.com");

    let outsider = explain(
        "user:outsider@contoso.onmicrosoft.com",
        "list-mailboxes",
        &[],
    )
    .await;
    assert_eq!(outsider.status.code(), Some(2));
    assert!(
        text(&outsider).0.contains("DENIED"),
        "{}",
        text(&outsider).0
    );

    let none = explain("user:helpdesk@contoso.onmicrosoft.com", "no-such", &[]).await;
    assert_eq!(none.status.code(), Some(2));
    assert!(
        text(&none).0.contains("no task no-such"),
        "{}",
        text(&none).0
    );

    let bad = explain("helpdesk@contoso.onmicrosoft.com", "list-mailboxes", &[]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).1.contains("fix: write --person user:"),
        "{}",
        text(&bad).1
    );

    // A group by name, given on the command line.
    let dir = tempfile::tempdir().unwrap();
    let by_group = dir.path().join("group.toml");
    let body = std::fs::read_to_string(shipped)
        .unwrap()
        .replace("script = \"", &format!("script = \"{}/", repo_root().join("scripts/tasks").display()))
        .replace("delegates = [\"user:helpdesk@contoso.onmicrosoft.com\"]\n[[task.parameter]]\nname = \"kind\"", "delegates = [\"group:Helpdesk\"]\n[[task.parameter]]\nname = \"kind\"");
    std::fs::write(&by_group, body).unwrap();
    let by_group = by_group.to_str().unwrap().to_owned();
    let output = warden(
        &[
            "policy",
            "explain",
            "--policy",
            &by_group,
            "--person",
            "user:x@contoso.onmicrosoft.com",
            "--group",
            "helpdesk",
            "--task",
            "list-mailboxes",
        ],
        &[],
    )
    .await;
    assert!(
        output.status.success(),
        "{}{}",
        text(&output).0,
        text(&output).1
    );
    assert!(
        text(&output).0.contains("as delegate group:Helpdesk"),
        "{}",
        text(&output).0
    );
}
