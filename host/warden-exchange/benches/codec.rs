//! The session's hot paths besides the network: decoding a full 1000-object page (with the
//! annotations Exchange sends, stripped), into objects or as a wasm guest's JSON, and encoding
//! a request body.
//! Run: `cargo bench -p warden-exchange --bench codec`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::hint::black_box;
use warden_exchange::params::cmdlet_input;
use warden_exchange::response::{parse_answer_text, parse_page};
use warden_exchange::{ParamValue, Parameters};

fn page(objects: usize) -> Vec<u8> {
    let value: Vec<Value> = (0..objects)
        .map(|i| {
            json!({
                "DisplayName": format!("User {i}"), "Alias": format!("user{i}"),
                "PrimarySmtpAddress": format!("user{i}@contoso.onmicrosoft.com"),
                "EmailAddresses@odata.type": "#Collection(String)", "EmailAddresses": [format!("SMTP:user{i}@contoso.onmicrosoft.com"), format!("smtp:u{i}@contoso.com")],
                "ExchangeGuid@data.type": "System.Guid", "ExchangeGuid@odata.type": "#Guid", "ExchangeGuid": "8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d",
                "WhenChanged@data.type": "System.DateTime", "WhenChanged": "2024-04-10T08:56:22.0000000+00:00",
                "RecipientTypeDetails": "UserMailbox", "HiddenFromAddressListsEnabled@data.type": "System.Boolean", "HiddenFromAddressListsEnabled": false,
                "ProhibitSendQuota": "99 GB (106,300,440,576 bytes)",
            })
        })
        .collect();
    serde_json::to_vec(&json!({"@odata.context": "https://x/adminapi/beta/t/$metadata#Collection(Exchange.GenericHashTable)", "@adminapi.warnings": [], "value": value, "@odata.nextLink": "https://x/adminapi/beta/t/InvokeCommand?$skiptoken=1"})).unwrap()
}

fn codec(c: &mut Criterion) {
    let body = page(1000);
    let mut group = c.benchmark_group("decode page");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000 mailboxes, annotations stripped", |b| {
        b.iter(|| black_box(parse_page(black_box(&body), false).unwrap()))
    });
    group.bench_function("1000 mailboxes, annotations kept", |b| {
        b.iter(|| black_box(parse_page(black_box(&body), true).unwrap()))
    });
    // What a wasm guest's unshaped call does: the page written as its JSON while parsed.
    group.bench_function("1000 mailboxes, as the guest's JSON", |b| {
        b.iter(|| black_box(parse_answer_text(black_box(&body), false).unwrap()))
    });
    group.finish();

    let parameters: Parameters = BTreeMap::from([
        (
            "Identity".to_owned(),
            ParamValue::String("user1@contoso.onmicrosoft.com".into()),
        ),
        (
            "GrantSendOnBehalfTo".to_owned(),
            ParamValue::HashTable(BTreeMap::from([(
                "Add".to_owned(),
                ParamValue::Array(vec![ParamValue::String("a@contoso.com".into())]),
            )])),
        ),
        (
            "HiddenFromAddressListsEnabled".to_owned(),
            ParamValue::Switch(true),
        ),
        ("ResultSize".to_owned(), ParamValue::ResultSize(None)),
    ]);
    c.bench_function("encode Set-Mailbox body", |b| {
        b.iter(|| {
            black_box(
                serde_json::to_vec(&cmdlet_input("Set-Mailbox", black_box(&parameters))).unwrap(),
            )
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
