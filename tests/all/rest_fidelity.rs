//! Issue 15's REST leftovers against exosim over real HTTPS: filter booleans rewritten by the
//! policy's own OPATH reading (on InvokeCommand and on the `Get-EXO*` entity sets), and the
//! entity path's `PropertySets`, `Properties` and `ResultSize` read as the module reads them
//! (docs/fidelity.md). REST only: Remote PowerShell sends filters unchanged and has no entity
//! sets.

use crate::fidelity_exo::{call, s};
use crate::support::*;
use std::collections::BTreeMap;
use warden_exchange::{ExchangeError, ParamValue};

/// How many of the tenant's mailboxes are hidden from address lists, and how many are not.
async fn hidden_counts(emu: &Emulator) -> BTreeMap<bool, usize> {
    let all = operator_invoke(
        emu,
        "Get-Mailbox",
        serde_json::json!({"ResultSize": "Unlimited"}),
    )
    .await;
    let mut counts = BTreeMap::new();
    for mailbox in all {
        *counts
            .entry(mailbox["HiddenFromAddressListsEnabled"] == true)
            .or_insert(0) += 1;
    }
    counts
}

/// Fails with the old rewrite: it cut words at spaces only, so `-eq$true` went out unrewritten
/// (exosim refuses it, as the service has no variable to resolve), and `'x'$true` became the
/// one string `'x''True'` (a different filter, silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_booleans_are_rewritten_where_the_policys_reading_finds_them() {
    let emu = Emulator::start().await;
    let counts = hidden_counts(&emu).await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rest);
    let unlimited = ("ResultSize", ParamValue::ResultSize(None));
    for (filter, hidden) in [
        ("HiddenFromAddressListsEnabled -eq$true", true),
        ("(HiddenFromAddressListsEnabled -eq$FALSE)", false),
        (
            "(HiddenFromAddressListsEnabled -ne $TRUE)-and(Name -like '*')",
            false,
        ),
    ] {
        for cmdlet in ["Get-Mailbox", "Get-EXOMailbox"] {
            let found = invoke_all(
                runner.as_ref(),
                call(cmdlet, &[("Filter", s(filter)), unlimited.clone()]),
            )
            .await
            .unwrap_or_else(|e| panic!("{cmdlet} {filter}: {e}"));
            assert_eq!(
                found.len(),
                counts.get(&hidden).copied().unwrap_or(0),
                "{cmdlet} {filter}"
            );
        }
    }
    // On the entity path the rewritten text is the `$filter` query option.
    let gets = calls_of(&emu, "Get-EXOMailbox");
    assert!(
        gets.iter().all(|r| r
            .query
            .as_deref()
            .is_some_and(|q| q.contains("%27True%27") || q.contains("%27False%27"))),
        "{gets:?}"
    );
    // Set apart from the string before it: two values, which Exchange refuses, never the one
    // string `x'True`.
    let error = invoke_all(
        runner.as_ref(),
        call(
            "Get-Mailbox",
            &[("Filter", s("Name -eq 'x'$true")), unlimited.clone()],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), "remote", "{error}");
    assert!(
        error.to_string().contains("Invalid filter syntax"),
        "{error}"
    );
}

/// A `$true` in a filter the reading refuses (a backtick escape, a typographic quote, text
/// outside printable ASCII) is refused before sending: where it stands is not known, and the
/// old rewrite changed it inside what PowerShell reads as a string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boolean_in_a_filter_the_reading_refuses_is_refused_before_sending() {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rest);
    for filter in [
        "Name -eq \"a`\" -or HiddenFromAddressListsEnabled -eq $true -or Name -eq `\"b\"",
        "Name -eq 'a\u{2019} -or HiddenFromAddressListsEnabled -eq $true -or Name -eq \u{2018}b'",
        "Name -eq 'M\u{fc}ller' -and HiddenFromAddressListsEnabled -eq $False",
    ] {
        for cmdlet in ["Get-Mailbox", "Get-EXOMailbox"] {
            let error = invoke_all(runner.as_ref(), call(cmdlet, &[("Filter", s(filter))]))
                .await
                .unwrap_err();
            assert!(
                matches!(error, ExchangeError::Invalid(_))
                    && error.to_string().contains("write 'True' or 'False'"),
                "{cmdlet} {filter}: {error}"
            );
        }
    }
    assert!(calls_of(&emu, "Get-Mailbox").is_empty(), "nothing sent");
    assert!(calls_of(&emu, "Get-EXOMailbox").is_empty(), "nothing sent");
    // Nothing to rewrite: a filter with other letters goes as written.
    let (runner, _) = runner_for(&emu, 0, Transport::Rest);
    invoke_all(
        runner.as_ref(),
        call("Get-Mailbox", &[("Filter", s("Name -eq 'M\u{fc}ller'"))]),
    )
    .await
    .unwrap();
}

/// `PropertySets`/`Properties` as the module reads them: one string is one name (a comma in it
/// is refused, as PowerShell refuses it for the PropertySet enum; before, it was split after
/// the policy had judged the whole string), and the Minimum set comes with whatever is asked
/// (before, `Properties` alone sent no set and exosim answered without the Minimum set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_sets_and_properties_are_read_as_the_module_reads_them() {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rest);
    let three = ("ResultSize", ParamValue::ResultSize(Some(3)));
    for name in ["PropertySets", "Properties"] {
        let error = invoke_all(
            runner.as_ref(),
            call(
                "Get-EXOMailbox",
                &[(name, s("Minimum,Archive")), three.clone()],
            ),
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().contains("pass a list instead"),
            "{name}: {error}"
        );
    }
    assert!(calls_of(&emu, "Get-EXOMailbox").is_empty(), "nothing sent");

    let listed = invoke_all(
        runner.as_ref(),
        call(
            "Get-EXOMailbox",
            &[
                (
                    "PropertySets",
                    ParamValue::Array(vec![s("Minimum"), s("Archive")]),
                ),
                three.clone(),
            ],
        ),
    )
    .await
    .unwrap();
    assert!(listed.iter().all(|m| m.contains_key("ArchiveStatus")));

    let properties = invoke_all(
        runner.as_ref(),
        call(
            "Get-EXOMailbox",
            &[
                (
                    "Properties",
                    ParamValue::Array(vec![s("ProhibitSendQuota")]),
                ),
                three.clone(),
            ],
        ),
    )
    .await
    .unwrap();
    for mailbox in &properties {
        assert!(mailbox.contains_key("ProhibitSendQuota"), "{mailbox:?}");
        assert!(
            mailbox.contains_key("PrimarySmtpAddress"),
            "Minimum: {mailbox:?}"
        );
    }
    let queries: Vec<String> = calls_of(&emu, "Get-EXOMailbox")
        .into_iter()
        .filter_map(|r| r.query)
        .collect();
    assert_eq!(
        queries,
        [
            "PropertySet=Minimum%2CArchive",
            "PropertySet=Minimum&Properties=ProhibitSendQuota"
        ]
    );
}

/// `ResultSize` is not sent on the entity path, so warden judges it as the binder judges it on
/// InvokeCommand; before, a value Exchange refuses read as "no limit" and every mailbox came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_sets_result_size_is_judged_as_invoke_command_judges_it() {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rest);
    for bad in [
        s("lots"),
        ParamValue::Int(-1),
        ParamValue::Int(0),
        ParamValue::Bool(true),
    ] {
        let exo = invoke_all(
            runner.as_ref(),
            call("Get-EXOMailbox", &[("ResultSize", bad.clone())]),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(exo, ExchangeError::Invalid(_)) && exo.to_string().contains("'ResultSize'"),
            "{bad:?}: {exo}"
        );
        // InvokeCommand's binder refuses the same values.
        let classic = invoke_all(
            runner.as_ref(),
            call("Get-Mailbox", &[("ResultSize", bad.clone())]),
        )
        .await
        .unwrap_err();
        assert_eq!(classic.kind(), "remote", "{bad:?}: {classic}");
    }
    assert!(calls_of(&emu, "Get-EXOMailbox").is_empty(), "nothing sent");
    let two = invoke_all(
        runner.as_ref(),
        call("Get-EXOMailbox", &[("ResultSize", s(" 2 "))]),
    )
    .await
    .unwrap();
    assert_eq!(two.len(), 2);
}
