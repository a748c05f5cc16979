//! A fixed number of allowed `Get-Mailbox -ResultSize 10` calls, host side only, for
//! `valgrind --tool=callgrind`, whose instruction counts repeat on a busy machine: P1 of
//! BENCHMARKS.md as instructions per call. `bench/callgrind/call.sh` runs it;
//! `bench/callgrind/README.md` has the numbers.
//!
//! ```sh
//! cargo build --profile bench --example calls -p warden-broker
//! target/release/examples/calls call|shaped|session|decode|plain N [objects]
//! ```
//!
//! Every call goes through the real code down to the HTTP transport, which answers at once
//! with the same canned page (`objects` mailboxes shaped like exosim's, 10 by default, with
//! Exchange's `@odata.type` / `@data.type` annotations; ≈ 24 KB for 10), so what is counted is
//! what the host does per call besides the network (no TLS, no socket):
//!
//! - `call`: `Broker::invoke_json` as a wasm guest makes it: budgets, `Grant::check`, the
//!   decision line and the call line (a real trail file, MAC-chained), the REST session
//!   (request body, headers, token cache, retry pipeline), the page written as the guest's
//!   JSON while it is parsed, annotations stripped (`Broker::stream_json`), and its
//!   `output_bytes`;
//! - `shaped`: the same with a grant that lets the guest see 3 properties (`output`);
//! - `session`: the REST session alone (`RestSession::stream` and its pages), decoding
//!   included — what the broker calls;
//! - `decode`: decoding the page into objects alone (`response::parse_page`);
//! - `text`: decoding the page into the guest's JSON alone (`response::parse_answer_text`);
//! - `plain`: what a plain client does with the same answer: `serde_json::from_slice` into a
//!   `Value`.
//!
//! Only `measured` is meant to be counted (`--toggle-collect=*measured*`); the difference of
//! two counts with different N, over the difference of N, is the cost of one: setup and
//! first-use costs cancel.

#![recursion_limit = "512"]

use async_trait::async_trait;
use serde_json::{Value, json};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_auth::credential::CredentialKind;
use warden_auth::endpoint::EndpointVersion;
use warden_auth::{
    Cloud, Credential, HttpRequest, HttpResponse, HttpTransport, Secret, SendFailure, TokenProvider,
};
use warden_broker::{Broker, Run, RunEnd};
use warden_exchange::{Invocation, ParamValue, Parameters, RestSession, SessionConfig};
use warden_policy::{Policy, Principal};

/// Calls per run: a run's lines stay a small part of the count.
const CALLS_PER_RUN: u64 = 500;

const POLICY: &str = r#"
version = 1

[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 1000
[roles.reader.cmdlet.parameters]
Identity = { length = [1, 256] }

[roles.shaped]
[[roles.shaped.cmdlet]]
name = "Get-Mailbox"
max_result_size = 1000
output = ["DisplayName", "PrimarySmtpAddress", "RecipientTypeDetails"]

[[grant]]
id = "call"
plugin = "call"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
roles = ["reader"]
budgets = { calls = 1000000000, objects = 1000000000, output_bytes = 1000000000000 }

[[grant]]
id = "shaped"
plugin = "shaped"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
roles = ["shaped"]
budgets = { calls = 1000000000, objects = 1000000000, output_bytes = 1000000000000 }
"#;

/// `n` mailboxes as exosim answers `Get-Mailbox` (its properties, values and annotations).
fn page(n: usize) -> Vec<u8> {
    let guid = |i: usize, k: u32| format!("{k:08x}-1c2d-4e5f-8a9b-{i:012x}");
    let date = "2024-04-10T08:56:22.0000000+00:00";
    let value: Vec<Value> = (0..n)
        .map(|i| {
            let alias = format!("user{i}");
            let smtp = format!("{alias}@contoso.onmicrosoft.com");
            json!({
                "Name": alias, "Alias": alias, "DisplayName": format!("User {i}"), "Identity": alias,
                "DistinguishedName": format!("CN={alias},OU=contoso.onmicrosoft.com,OU=Microsoft Exchange Hosted Organizations,DC=NAMPR00A001,DC=PROD,DC=OUTLOOK,DC=COM"),
                "LegacyExchangeDN": format!("/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn={}-{alias}", guid(i, 2).replace('-', "")),
                "PrimarySmtpAddress": smtp, "UserPrincipalName": smtp, "WindowsEmailAddress": smtp,
                "EmailAddresses@odata.type": "#Collection(String)",
                "EmailAddresses": [format!("SMTP:{smtp}"), format!("smtp:{alias}@contoso.com")],
                "RecipientType": "UserMailbox", "RecipientTypeDetails": "UserMailbox", "ResourceType": null,
                "ExchangeGuid@data.type": "System.Guid", "ExchangeGuid@odata.type": "#Guid", "ExchangeGuid": guid(i, 1),
                "Guid@data.type": "System.Guid", "Guid@odata.type": "#Guid", "Guid": guid(i, 2),
                "ExchangeObjectId@data.type": "System.Guid", "ExchangeObjectId@odata.type": "#Guid", "ExchangeObjectId": guid(i, 2),
                "ExternalDirectoryObjectId": guid(i, 3), "Database": "NAMPR00DG001-db001",
                "WhenCreated@data.type": "System.DateTime", "WhenCreated": date,
                "WhenChanged@data.type": "System.DateTime", "WhenChanged": date,
                "WhenCreatedUTC@data.type": "System.DateTime", "WhenCreatedUTC": date,
                "WhenChangedUTC@data.type": "System.DateTime", "WhenChangedUTC": date,
                "HiddenFromAddressListsEnabled@data.type": "System.Boolean", "HiddenFromAddressListsEnabled": false,
                "ProhibitSendQuota": "99 GB (106,300,440,576 bytes)",
                "ProhibitSendReceiveQuota": "100 GB (107,374,182,400 bytes)",
                "IssueWarningQuota": "98 GB (105,226,698,752 bytes)",
                "MaxSendSize": "35 MB (36,700,160 bytes)", "MaxReceiveSize": "36 MB (37,748,736 bytes)",
                "ArchiveStatus": "None",
                "GrantSendOnBehalfTo@odata.type": "#Collection(String)", "GrantSendOnBehalfTo": [],
                "LitigationHoldEnabled@data.type": "System.Boolean", "LitigationHoldEnabled": false,
                "AuditEnabled@data.type": "System.Boolean", "AuditEnabled": true,
                "IsMailboxEnabled@data.type": "System.Boolean", "IsMailboxEnabled": true,
                "ForwardingAddress": null, "ForwardingSmtpAddress": null,
                "DeliverToMailboxAndForward@data.type": "System.Boolean", "DeliverToMailboxAndForward": false,
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "@odata.context": "https://outlook.office365.com/adminapi/beta/contoso.onmicrosoft.com/$metadata#Collection(Exchange.GenericHashTable)",
        "adminapi.warnings@odata.type": "#Collection(String)", "@adminapi.warnings": [],
        "value": value,
    }))
    .unwrap()
}

/// Answers every request at once: a token for the token endpoint, the canned page for Exchange.
#[derive(Debug)]
struct Canned(Vec<u8>);

#[async_trait]
impl HttpTransport for Canned {
    async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, SendFailure> {
        Ok(HttpResponse {
            status: 200,
            headers: vec![
                (
                    "content-type".into(),
                    "application/json;odata.metadata=minimal".into(),
                ),
                (
                    "request-id".into(),
                    "5c1e3a52-7d0f-4f0e-9a8b-2d3c4b5a6f70".into(),
                ),
            ],
            body: self.0.clone(),
        })
    }
}

fn token_transport() -> Canned {
    Canned(
        br#"{"token_type":"Bearer","expires_in":3599,"access_token":"header.payload.signature"}"#
            .to_vec(),
    )
}

fn session(body: Vec<u8>) -> RestSession {
    let credential = Credential {
        authority_host: "https://login.microsoftonline.com".into(),
        tenant: "contoso.onmicrosoft.com".into(),
        client_id: "22222222-2222-2222-2222-222222222222".into(),
        endpoint_version: EndpointVersion::V2,
        kind: CredentialKind::ClientSecret(Secret::new("bench".into())),
    };
    let tokens = TokenProvider::new(credential, Arc::new(token_transport()));
    let config = SessionConfig::new(Cloud::Public, "contoso.onmicrosoft.com");
    RestSession::new(config, tokens, Arc::new(Canned(body))).unwrap()
}

fn principal(grant: &str) -> Principal {
    Principal::Plugin {
        name: grant.into(),
        sha256: "0".repeat(64),
        signature: None,
    }
}

struct Setup {
    runtime: tokio::runtime::Runtime,
    body: Vec<u8>,
    session: RestSession,
    broker: Broker,
}

const PARAMETERS: &str = r#"{"ResultSize":10}"#;

#[inline(never)]
fn measured(what: &str, setup: &Setup, run: &Run) {
    match what {
        "call" | "shaped" => {
            let json = setup
                .runtime
                .block_on(
                    setup
                        .broker
                        .invoke_json(run, "Get-Mailbox", black_box(PARAMETERS)),
                )
                .unwrap();
            black_box(json);
        }
        "session" => {
            let parameters: Parameters = Parameters::from([(
                "ResultSize".to_owned(),
                ParamValue::from_named_json("ResultSize", &json!(10)),
            )]);
            let mut stream = setup
                .session
                .stream(Invocation::new("Get-Mailbox", parameters));
            setup.runtime.block_on(async {
                while let Some(page) = stream.next_page().await.unwrap() {
                    black_box(page);
                }
            });
        }
        "decode" => {
            black_box(
                warden_exchange::response::parse_page(black_box(&setup.body), false).unwrap(),
            );
        }
        "text" => {
            black_box(
                warden_exchange::response::parse_answer_text(black_box(&setup.body), false)
                    .unwrap(),
            );
        }
        "plain" => {
            black_box(serde_json::from_slice::<Value>(black_box(&setup.body)).unwrap());
        }
        other => panic!("unknown mode {other}: call, shaped, session, decode, text or plain"),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "call".into());
    let n: u64 = args.next().map_or(1000, |n| n.parse().expect("N"));
    let objects: usize = args.next().map_or(10, |n| n.parse().expect("objects"));
    let dir = tempfile::tempdir().unwrap();
    let body = page(objects);
    let session = session(body.clone());
    let policy = Policy::parse(POLICY, Path::new("bench-policy.toml")).unwrap();
    let audit = Arc::new(
        AuditTrail::open(
            &dir.path().join("trail.jsonl"),
            AuditKey::from_bytes([7; 32]),
        )
        .unwrap(),
    );
    let broker = Broker::new(
        Arc::new(policy),
        Arc::new(session.clone()),
        audit,
        Duration::from_secs(30),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let setup = Setup {
        runtime,
        body,
        session,
        broker,
    };
    let grant = if what == "shaped" { "shaped" } else { "call" };
    // What a guest gets, once, outside the count: the objects, stripped (and shaped).
    let run = setup.broker.begin(principal(grant), None).unwrap();
    let json = (setup.runtime)
        .block_on(setup.broker.invoke_json(&run, "Get-Mailbox", PARAMETERS))
        .unwrap();
    let got: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&json).unwrap();
    assert_eq!(got.len(), objects.min(10));
    assert!(got.iter().all(|o| !o.keys().any(|k| k.contains('@'))));
    eprintln!(
        "{} bytes answered, {} bytes to the guest, {} properties in the first object",
        setup.body.len(),
        json.len(),
        got.first().map_or(0, |o| o.len())
    );
    let mut left = n;
    while left > 0 {
        let run = setup.broker.begin(principal(grant), None).unwrap();
        let batch = left.min(CALLS_PER_RUN);
        for _ in 0..batch {
            measured(&what, &setup, &run);
        }
        setup
            .broker
            .end(&run, &RunEnd::Completed { output_bytes: 0 })
            .unwrap();
        left -= batch;
    }
}
