//! Issue 15, `exo` part, against exosim over real HTTPS: the `Get-EXO*` cmdlets are GETs of the
//! REST entity sets with property sets (REST only: the module defines them for REST connections
//! only, so over Remote PowerShell they are refused naming REST), policy and output shaping
//! apply to them like any cmdlet, and `$batch` (see docs/fidelity.md).

use crate::support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_exchange::{Invocation, ParamValue, Parameters};
use warden_policy::{Policy, Principal};

/// `cmdlet` with these parameters (shared with `rest_fidelity`).
pub(crate) fn call(cmdlet: &str, pairs: &[(&str, ParamValue)]) -> Invocation {
    let parameters: Parameters = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Invocation::new(cmdlet, parameters)
}

/// A string parameter value.
pub(crate) fn s(value: &str) -> ParamValue {
    ParamValue::String(value.to_owned())
}

/// Requests exosim logged for `cmdlet` with `method`.
fn logged(emu: &Emulator, cmdlet: &str, method: &str) -> Vec<exosim::ExchangeRequestRecord> {
    calls_of(emu, cmdlet)
        .into_iter()
        .filter(|r| r.method == method)
        .collect()
}

/// Fails with the old client: it POSTed `Get-EXOMailbox` to InvokeCommand, which exosim (as
/// the service, where Get-EXO* are not server cmdlets) answers with CommandNotFoundException.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_exo_mailbox_is_a_get_of_the_mailbox_entity_set_with_the_minimum_set() {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rest);
    let objects = invoke_all(
        runner.as_ref(),
        call(
            "Get-EXOMailbox",
            &[("ResultSize", ParamValue::ResultSize(Some(3)))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(objects.len(), 3);
    for object in &objects {
        assert!(object.contains_key("PrimarySmtpAddress"), "{object:?}");
        assert!(
            object.contains_key("ExternalDirectoryObjectId"),
            "{object:?}"
        );
        // Not in the Minimum property set: the whole mailbox is not sent.
        for absent in ["Database", "ProhibitSendQuota", "WhenCreated"] {
            assert!(!object.contains_key(absent), "{absent} in {object:?}");
        }
    }
    let gets = logged(&emu, "Get-EXOMailbox", "GET");
    assert_eq!(gets.len(), 1, "one GET: {gets:?}");
    assert!(gets[0].path.ends_with("/Mailbox"), "{:?}", gets[0].path);
    assert_eq!(gets[0].query.as_deref(), Some("PropertySet=Minimum"));
    assert!(
        logged(&emu, "Get-EXOMailbox", "POST").is_empty(),
        "no InvokeCommand"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_exo_mailbox_pages_by_get_of_next_link_and_every_mailbox_arrives_once() {
    let emu = Emulator::start_with(|o| o.mailboxes = 2300).await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rest);
    let mut stream = runner.start(call(
        "Get-EXOMailbox",
        &[
            ("ResultSize", ParamValue::ResultSize(None)),
            (
                "PropertySets",
                ParamValue::Array(vec![s("Minimum"), s("Quota")]),
            ),
        ],
    ));
    let (mut seen, mut pages) = (BTreeSet::new(), 0);
    while let Some(page) = stream.next_page().await.unwrap() {
        pages += 1;
        for object in page.objects {
            assert!(object.contains_key("ProhibitSendQuota"), "the Quota set");
            let id = object["ExternalDirectoryObjectId"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(seen.insert(id), "each mailbox once");
        }
    }
    assert_eq!(seen.len(), emu.exosim.mailbox_count(&emu.tenant_id()));
    assert!(pages >= 3, "{pages} pages");
    let gets = logged(&emu, "Get-EXOMailbox", "GET");
    assert_eq!(gets.len(), pages);
    assert!(
        gets[1..].iter().all(|r| r
            .query
            .as_deref()
            .is_some_and(|q| q.contains("%24skiptoken="))),
        "later pages are the nextLinks, fetched with GET"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_entity_sets_return_one_entity_and_property_sets_choose_its_properties() {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rest);
    let address = operator_invoke(&emu, "Get-Mailbox", serde_json::json!({"ResultSize": 1})).await
        [0]["PrimarySmtpAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let minimum = invoke_all(
        runner.as_ref(),
        call("Get-EXOMailboxStatistics", &[("Identity", s(&address))]),
    )
    .await
    .unwrap();
    assert_eq!(minimum.len(), 1);
    assert!(minimum[0].contains_key("ItemCount"));
    assert!(!minimum[0].contains_key("LastLogonTime"), "not in Minimum");
    let all = invoke_all(
        runner.as_ref(),
        call(
            "Get-EXOMailboxStatistics",
            &[("Identity", s(&address)), ("PropertySets", s("All"))],
        ),
    )
    .await
    .unwrap();
    assert!(all[0].contains_key("LastLogonTime"), "{:?}", all[0]);
    let gets = logged(&emu, "Get-EXOMailboxStatistics", "GET");
    assert!(
        gets[0].path.contains("/MailboxStatistics(%27"),
        "{:?}",
        gets[0].path
    );
    assert_eq!(gets[0].identity.as_deref(), Some(address.as_str()));

    // A missing mailbox is the cmdlet's typed error, not an empty answer.
    let error = invoke_all(
        runner.as_ref(),
        call(
            "Get-EXOMailbox",
            &[("Identity", s("nobody@nowhere.example"))],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), "remote", "{error}");
    // A parameter the entity set does not take is refused before sending, by name.
    let error = invoke_all(runner.as_ref(), call("Get-EXOMailbox", &[("Anr", s("x"))]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("'Anr'"), "{error}");
    assert_eq!(logged(&emu, "Get-EXOMailbox", "GET").len(), 1);
}

/// REST-only: Remote PowerShell has no Get-EXO* cmdlets; the error names REST and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_exo_cmdlets_over_remote_powershell_are_refused_naming_rest() {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rps);
    let error = invoke_all(runner.as_ref(), call("Get-EXOMailbox", &[]))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("REST") && text.contains("Get-Mailbox"),
        "{text}"
    );
    assert!(calls_of(&emu, "Get-EXOMailbox").is_empty());
}

const EXO_SCRIPT: &str = r#"exo::invoke("Get-EXOMailbox", #{ResultSize: 2})"#;

/// Policy and output shaping apply to Get-EXO* like any cmdlet: its grant names it, its
/// parameters are judged, its output is shaped, its calls audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_judges_and_shapes_get_exo_cmdlets_like_any() {
    let emu = Emulator::start().await;
    let policy_text = format!(
        r#"version = 1
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-EXOMailbox"
max_result_size = 5
output = ["DisplayName", "PrimarySmtpAddress"]
[roles.reader.cmdlet.parameters]
PropertySets = {{ one_of = ["Minimum", "Delivery"] }}

[[grant]]
id = "exo-script"
script_inline_sha256 = "{hash}"
roles = ["reader"]
"#,
        hash = Principal::inline_script(EXO_SCRIPT).sha256()
    );
    let policy_path = emu.dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy_text).unwrap();
    let policy = Arc::new(Policy::load(&policy_path).unwrap());
    let audit_path = emu.dir.path().join("audit.jsonl");
    let key = [7u8; 32];
    let audit = Arc::new(AuditTrail::open(&audit_path, AuditKey::from_bytes(key)).unwrap());
    let broker = Broker::new(
        policy,
        Arc::new(admin_session(&emu)),
        audit.clone(),
        Duration::from_secs(30),
    );
    let run = broker
        .begin(Principal::inline_script(EXO_SCRIPT), None)
        .unwrap();
    let results = broker
        .invoke(
            &run,
            "Get-EXOMailbox",
            r#"{"ResultSize":2,"PropertySets":"Minimum"}"#,
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    for object in &results {
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["DisplayName", "PrimarySmtpAddress"],
            "output shaping"
        );
    }
    let before = calls_of(&emu, "Get-EXOMailbox").len();
    for (json, kind) in [
        (r#"{"ResultSize":2,"PropertySets":"Archive"}"#, "denied"),
        (r#"{"ResultSize":2,"Filter":"Name -like '*'"}"#, "denied"),
        (r#"{"ResultSize":"Unlimited"}"#, "denied"),
    ] {
        let error = broker
            .invoke(&run, "Get-EXOMailbox", json)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), kind, "{json}: {error}");
    }
    let error = broker
        .invoke(&run, "Get-Mailbox", r#"{"ResultSize":2}"#)
        .await
        .unwrap_err();
    assert_eq!(
        error.kind(),
        "denied",
        "Get-EXOMailbox does not grant Get-Mailbox"
    );
    assert_eq!(
        calls_of(&emu, "Get-EXOMailbox").len(),
        before,
        "refusals never sent"
    );
    // Mid-run: the refusals' lines are queued; write them before reading the trail.
    audit.flush().unwrap();
    let lines: Vec<Value> = std::fs::read_to_string(&audit_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["cmdlet"] == "Get-EXOMailbox" && l["allowed"] == true),
        "{lines:?}"
    );
    assert!(
        warden_audit::verify(&audit_path, &AuditKey::from_bytes(key))
            .unwrap()
            .ok()
    );
}

/// `count` mailbox addresses of the demo tenant.
async fn addresses(emu: &Emulator, count: usize) -> Vec<String> {
    operator_invoke(
        emu,
        "Get-Mailbox",
        serde_json::json!({ "ResultSize": count }),
    )
    .await
    .iter()
    .map(|m| m["PrimarySmtpAddress"].as_str().unwrap().to_owned())
    .collect()
}

/// Fails before: there was no `$batch` (exosim had no route for it; the session no batch call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_calls_go_in_batches_of_ten_each_run_and_logged_as_its_own_call() {
    let emu = Emulator::start().await;
    let session = admin_session(&emu);
    let targets = addresses(&emu, 12).await;
    let mut calls = Vec::new();
    for address in &targets {
        calls.push(call("Get-Mailbox", &[("Identity", s(address))]));
        calls.push(call("Get-MailboxStatistics", &[("Identity", s(address))]));
    }
    let results = session.invoke_batch(&calls).await;
    assert_eq!(results.len(), 24);
    for (n, result) in results.iter().enumerate() {
        let objects = &result
            .as_ref()
            .unwrap_or_else(|e| panic!("call {n}: {e}"))
            .objects;
        assert_eq!(objects.len(), 1, "call {n}");
        if n % 2 == 0 {
            assert_eq!(
                objects[0]["PrimarySmtpAddress"],
                targets[n / 2].as_str(),
                "in order"
            );
        } else {
            assert!(objects[0].contains_key("ItemCount"), "call {n}");
        }
    }
    let batches = calls_of(&emu, "$batch");
    assert_eq!(batches.len(), 3, "10 + 10 + 4");
    for batch in &batches {
        assert!(batch.path.ends_with("/$batch"), "{:?}", batch.path);
        assert_eq!(batch.header("prefer"), Some("odata.continue-on-error"));
        assert_eq!(batch.status, 200);
    }
    let reads: Vec<_> = calls_of(&emu, "Get-Mailbox")
        .into_iter()
        .filter(|r| r.identity.is_some())
        .collect();
    assert_eq!(
        reads.len(),
        12,
        "each sub-request is its own call in exosim's log"
    );
    assert!(reads.iter().all(|r| {
        r.header("prefer")
            .is_some_and(|p| p.ends_with(";odata.continue-on-error"))
    }));
    assert_eq!(calls_of(&emu, "Get-MailboxStatistics").len(), 12);
}

/// A sub-request throttled inside the 200 did not run: it is sent again alone, and the write
/// in it is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_sub_request_is_sent_again_alone_and_a_write_applies_once() {
    let emu = Emulator::start().await;
    let session = admin_session(&emu);
    let target = addresses(&emu, 1).await.remove(0);
    emu.exosim
        .exchange_faults()
        .queue(&exosim::QueuedExchangeFault::for_cmdlet(
            "Set-Mailbox",
            0,
            exosim::ExchangeFault::TooManyRequests {
                retry_after_secs: 0.05,
            },
        ));
    let calls = [
        call(
            "Set-Mailbox",
            &[
                ("Identity", s(&target)),
                ("DisplayName", s("Renamed in a batch")),
            ],
        ),
        call("Get-Mailbox", &[("Identity", s(&target))]),
    ];
    let results = session.invoke_batch(&calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let writes = calls_of(&emu, "Set-Mailbox");
    let statuses: Vec<u16> = writes.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200], "429 inside the batch, then alone");
    assert_eq!(writes.iter().filter(|r| r.applied).count(), 1);
    assert_eq!(calls_of(&emu, "$batch").len(), 1);
    assert_eq!(
        emu.exosim.mailbox(&emu.tenant_id(), &target).unwrap()["DisplayName"],
        "Renamed in a batch"
    );
}

/// A batch whose answer was lost after a write in it ran: the write is of unknown outcome and
/// never sent again; the read beside it is sent again alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_batch_whose_answer_was_lost_is_outcome_unknown_and_never_resent() {
    let emu = Emulator::start().await;
    let session = admin_session(&emu);
    let target = addresses(&emu, 1).await.remove(0);
    emu.exosim
        .exchange_faults()
        .queue(&exosim::QueuedExchangeFault::for_cmdlet(
            "Set-Mailbox",
            0,
            exosim::ExchangeFault::ResetAfterApply,
        ));
    let calls = [
        call(
            "Set-Mailbox",
            &[("Identity", s(&target)), ("DisplayName", s("Lost answer"))],
        ),
        call("Get-Mailbox", &[("Identity", s(&target))]),
    ];
    let results = session.invoke_batch(&calls).await;
    let error = results[0].as_ref().unwrap_err();
    assert_eq!(error.kind(), "outcome-unknown", "{error}");
    assert_eq!(
        results[1].as_ref().unwrap().objects.len(),
        1,
        "the read is sent again alone"
    );
    let writes = calls_of(&emu, "Set-Mailbox");
    assert_eq!(writes.len(), 1, "never sent again: {writes:?}");
    assert!(writes[0].applied);
}

/// A batch with a write and a read whose outer POST failed as `fault` after exosim ran both.
async fn batch_failing_after_it_ran(fault: exosim::ExchangeFault) {
    let emu = Emulator::start().await;
    let session = admin_session(&emu);
    let target = addresses(&emu, 1).await.remove(0);
    emu.exosim
        .exchange_faults()
        .queue(&exosim::QueuedExchangeFault::for_cmdlet("$batch", 0, fault));
    let calls = [
        call(
            "Set-Mailbox",
            &[
                ("Identity", s(&target)),
                ("DisplayName", s("Ran, then 5xx")),
            ],
        ),
        call("Get-Mailbox", &[("Identity", s(&target))]),
    ];
    let results = session.invoke_batch(&calls).await;
    let error = results[0].as_ref().unwrap_err();
    assert_eq!(error.kind(), "outcome-unknown", "{fault:?}: {error}");
    assert_eq!(results[1].as_ref().unwrap().objects.len(), 1, "read alone");
    let writes = calls_of(&emu, "Set-Mailbox");
    assert_eq!(writes.len(), 1, "{fault:?}: never sent again: {writes:?}");
    assert!(writes[0].applied);
    assert_eq!(
        calls_of(&emu, "Get-Mailbox").len(),
        3,
        "lookup, batched, alone"
    );
}

/// Fails before: every whole-batch error but a lost answer counted as "nothing ran", so the
/// write that had run inside the batch was sent again alone (applied twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_batch_answered_500_or_502_is_outcome_unknown_and_never_resent() {
    batch_failing_after_it_ran(exosim::ExchangeFault::ServerError).await;
    batch_failing_after_it_ran(exosim::ExchangeFault::BadGateway).await;
}

/// A batch the service refused before running it (429 until the retries ran out): the write
/// is sent again alone and applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_throttled_until_the_retries_ran_out_sends_its_write_again_alone() {
    let emu = Emulator::start().await;
    let session = admin_session(&emu);
    let target = addresses(&emu, 1).await.remove(0);
    let mut throttled = exosim::QueuedExchangeFault::for_cmdlet(
        "$batch",
        0,
        exosim::ExchangeFault::TooManyRequests {
            retry_after_secs: 0.01,
        },
    );
    throttled.count = 20;
    emu.exosim.exchange_faults().queue(&throttled);
    let calls = [call(
        "Set-Mailbox",
        &[
            ("Identity", s(&target)),
            ("DisplayName", s("Throttled batch")),
        ],
    )];
    let results = session.invoke_batch(&calls).await;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(calls_of(&emu, "$batch").iter().all(|r| r.status == 429));
    let writes = calls_of(&emu, "Set-Mailbox");
    assert_eq!(writes.len(), 1, "sent alone once: {writes:?}");
    assert!(writes[0].applied);
}

/// Fails before: a batched call's `@adminapi.warnings` were dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_calls_warnings_are_returned_with_it() {
    let emu = Emulator::start().await;
    let session = admin_session(&emu);
    let target = addresses(&emu, 1).await.remove(0);
    let calls = [
        call(
            "Set-Mailbox",
            &[
                ("Identity", s(&target)),
                ("DisplayName", s("What if")),
                ("WhatIf", ParamValue::Bool(true)),
            ],
        ),
        call("Get-Mailbox", &[("Identity", s(&target))]),
    ];
    let results = session.invoke_batch(&calls).await;
    let write = results[0].as_ref().unwrap();
    assert!(
        write.warnings.iter().any(|w| w.starts_with("What if")),
        "{write:?}"
    );
    assert!(results[1].as_ref().unwrap().warnings.is_empty());
}

/// Fails before: the key was form-encoded, so a space went as `+` and exosim (as the service,
/// where `+` in a path is a plus) looked up another name. A `+` and a quote (the siblings) must
/// arrive as themselves too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_key_with_a_space_or_a_plus_arrives_as_given() {
    let emu = Emulator::start().await;
    let session = admin_session(&emu);
    for identity in ["Nobody Here", "no+body@example.com", "o'brien here"] {
        let _ = session
            .invoke(call("Get-EXOMailbox", &[("Identity", s(identity))]))
            .await;
        let gets = logged(&emu, "Get-EXOMailbox", "GET");
        let last = gets.last().expect("a GET");
        assert_eq!(last.identity.as_deref(), Some(identity), "{:?}", last.path);
        assert_ne!(last.status, 400, "{identity}: the key parses");
    }
}

/// Fails before: any `Get-EXO…` name counted as the REST family, so a server cmdlet that only
/// begins the same way was never sent, and a family cmdlet warden has no entity set for was
/// POSTed to InvokeCommand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_modules_nine_get_exo_cmdlets_are_rest_only_and_unserved_ones_are_refused() {
    let emu = Emulator::start().await;
    let session = admin_session(&emu);
    let error = session
        .invoke(call(
            "Get-EXOMobileDeviceStatistics",
            &[("Mailbox", s("someone@example.com"))],
        ))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("not served by warden"),
        "{error}"
    );
    assert!(calls_of(&emu, "Get-EXOMobileDeviceStatistics").is_empty());
    let results = session
        .invoke_batch(&[call("Get-EXORecipientPermission", &[])])
        .await;
    assert!(results[0].is_err(), "{results:?}");
    assert!(calls_of(&emu, "$batch").is_empty(), "not batched");
    // A server cmdlet whose name only looks like the family goes to InvokeCommand.
    let _ = session
        .invoke(call("Get-ExoPhishSimOverrideRule", &[]))
        .await;
    assert_eq!(
        logged(&emu, "Get-ExoPhishSimOverrideRule", "POST").len(),
        1,
        "sent as a server cmdlet"
    );
}
