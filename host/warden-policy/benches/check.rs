//! The policy decision every guest call waits on: `Grant::check` (parse the parameter JSON,
//! match the cmdlet and each parameter's constraints, deny rules) and output shaping.
//! Run: `cargo bench -p warden-policy --bench check`.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::path::Path;
use warden_policy::{Policy, Principal};

const POLICY: &str = r#"
version = 1

[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 1000
output = ["DisplayName", "PrimarySmtpAddress", "RecipientTypeDetails"]
[roles.reader.cmdlet.parameters]
Identity = { length = [1, 256] }
RecipientTypeDetails = { one_of = ["UserMailbox", "SharedMailbox", "RoomMailbox"] }
Filter = { pattern = "[A-Za-z]+ -eq '[A-Za-z0-9@._ -]+'", length = [1, 200] }

[roles.helpdesk]
[[roles.helpdesk.cmdlet]]
name = "Set-Mailbox"
[roles.helpdesk.cmdlet.parameters]
Identity = { domain = ["contoso.com"] }
DisplayName = { length = [1, 64], pattern = "[\\p{L} .'-]+" }
HiddenFromAddressListsEnabled = { boolean = true }
EmailAddresses = { keys = ["Add", "Remove"], each = { items = [1, 10], each = { pattern = "smtp:[^@\\s]+@contoso\\.com" } } }

[[deny]]
cmdlet = "Set-Mailbox"
parameter = "Identity"
when = { pattern = "(?i)admin.*@.*" }
reason = "administrator mailboxes are changed by hand only"

[[deny]]
cmdlet = "Remove-Mailbox"
reason = "no automation removes mailboxes"

[[grant]]
id = "bench"
plugin = "bench"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
roles = ["reader", "helpdesk"]
"#;

fn check(c: &mut Criterion) {
    let policy = Policy::parse(POLICY, Path::new("bench-policy.toml")).unwrap();
    let principal = Principal::Plugin {
        name: "bench".into(),
        sha256: "0".repeat(64),
        signature: None,
    };
    let grant = policy.grant_for(&principal, None).unwrap();
    let cases = [
        (
            "allowed Get-Mailbox ResultSize",
            "Get-Mailbox",
            r#"{"ResultSize":10}"#,
            true,
        ),
        (
            "allowed Set-Mailbox with patterns and a hashtable",
            "Set-Mailbox",
            r#"{"Identity":"alex@contoso.com","DisplayName":"Alex Wilber","EmailAddresses":{"Add":["smtp:a@contoso.com","smtp:b@contoso.com"]}}"#,
            true,
        ),
        (
            "refused: default deny",
            "New-Mailbox",
            r#"{"Name":"x"}"#,
            false,
        ),
        (
            "refused: deny rule",
            "Set-Mailbox",
            r#"{"Identity":"admin@contoso.com","DisplayName":"x"}"#,
            false,
        ),
        (
            "refused: parameter out of constraint",
            "Get-Mailbox",
            r#"{"RecipientTypeDetails":"DiscoveryMailbox"}"#,
            false,
        ),
    ];
    let mut group = c.benchmark_group("policy check");
    for (name, cmdlet, params, allowed) in cases {
        assert_eq!(grant.check(cmdlet, params).allowed, allowed, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(grant.check(black_box(cmdlet), black_box(params))))
        });
    }
    group.finish();

    c.bench_function("grant lookup (Policy::grant_for)", |b| {
        b.iter(|| black_box(policy.grant_for(black_box(&principal), None).unwrap()))
    });

    let mailbox: Map<String, Value> = json!({
        "DisplayName": "Alex Wilber", "Alias": "alexw", "PrimarySmtpAddress": "alexw@contoso.com",
        "EmailAddresses": ["SMTP:alexw@contoso.com", "smtp:alex@contoso.com"],
        "ExchangeGuid": "8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d", "RecipientTypeDetails": "UserMailbox",
        "WhenChanged": "2024-04-10T08:56:22Z", "HiddenFromAddressListsEnabled": false,
        "ProhibitSendQuota": "99 GB (106,300,440,576 bytes)", "Identity": "alexw",
    })
    .as_object()
    .unwrap()
    .clone();
    c.bench_function("shape one Get-Mailbox object (keep 3 of 10)", |b| {
        b.iter_batched(
            || mailbox.clone(),
            |mut object| {
                grant.shape("Get-Mailbox", &mut object);
                object
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, check);
criterion_main!(benches);
