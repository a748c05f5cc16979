//! Interoperability with psrpcore, an independent sans-IO PSRP client and server (MIT; see
//! `vectors/psrpcore/README.md`): the fragment streams its client and server wrote must decode
//! with our parsers to what it was asked to send. The other direction (psrpcore consuming
//! ours) is `vectors/psrpcore/interop.py`, run by hand against the files
//! `write_messages_for_psrpcore` (ignored here) writes.

use uuid::Uuid;
use warden_psrp::pipeline::{self, *};
use warden_psrp::{Defragmenter, Destination, Message, MessageType, PsValue, clixml, fragment};

fn read(name: &str) -> Vec<Message> {
    let path = format!(
        "{}/tests/vectors/psrpcore/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let data = std::fs::read(path).unwrap();
    let mut d = Defragmenter::new(1 << 20);
    let out: Vec<Message> = d
        .push(&data)
        .unwrap()
        .iter()
        .map(|m| Message::decode(m).unwrap())
        .collect();
    assert!(!d.is_partial());
    out
}

fn types(msgs: &[Message]) -> Vec<MessageType> {
    msgs.iter().map(|m| m.message_type).collect()
}

#[test]
fn psrpcore_client_messages() {
    let open = read("theirs_client_open.bin");
    assert_eq!(
        types(&open),
        vec![
            MessageType::SESSION_CAPABILITY,
            MessageType::INIT_RUNSPACEPOOL
        ]
    );
    assert!(open.iter().all(|m| m.destination == Destination::Server));
    assert_eq!(
        pipeline::parse_session_capability(&open[0].data).unwrap(),
        SessionCapability::default()
    );
    assert_eq!(
        pipeline::parse_init_runspace_pool(&open[1].data).unwrap(),
        (1, 1)
    );

    let create = read("theirs_client_pipeline.bin");
    assert_eq!(types(&create), vec![MessageType::CREATE_PIPELINE]);
    assert!(create[0].pipeline_id.is_some());
    assert_eq!(create[0].runspace_pool_id, open[0].runspace_pool_id);
    assert_eq!(
        pipeline::parse_create_pipeline(&create[0].data).unwrap(),
        vec![Command {
            name: "Get-Mailbox".into(),
            is_script: false,
            parameters: vec![
                ("Identity".into(), PsValue::String("x@y".into())),
                ("ResultSize".into(), PsValue::I32(5)),
                ("Force".into(), PsValue::Bool(true)),
            ],
        }]
    );
}

#[test]
fn psrpcore_server_messages() {
    let open = read("theirs_server_open.bin");
    assert_eq!(
        types(&open),
        vec![
            MessageType::SESSION_CAPABILITY,
            MessageType::APPLICATION_PRIVATE_DATA,
            MessageType::RUNSPACEPOOL_STATE
        ]
    );
    assert!(open.iter().all(|m| m.destination == Destination::Client));
    assert_eq!(
        pipeline::parse_session_capability(&open[0].data)
            .unwrap()
            .protocol_version,
        "2.3"
    );
    assert_eq!(
        pipeline::parse_application_private_data(&open[1].data).unwrap(),
        serde_json::json!({"PSVersionTable": {"PSRemotingProtocolVersion": "2.3", "SerializationVersion": "1.1.0.1"}})
    );
    assert_eq!(
        pipeline::parse_runspace_pool_state(&open[2].data).unwrap(),
        (RunspacePoolState::Opened, None)
    );

    let run = read("theirs_server_pipeline.bin");
    assert_eq!(
        types(&run),
        vec![
            MessageType::PIPELINE_STATE,
            MessageType::PIPELINE_OUTPUT,
            MessageType::PIPELINE_OUTPUT,
            MessageType::WARNING_RECORD,
            MessageType::ERROR_RECORD,
            MessageType::PIPELINE_STATE
        ]
    );
    assert_eq!(
        pipeline::parse_pipeline_state(&run[0].data).unwrap(),
        (PipelineState::Running, None)
    );
    assert_eq!(
        pipeline::parse_pipeline_output(&run[1].data).unwrap(),
        PsValue::String("hello".into())
    );
    assert_eq!(
        clixml::to_json(&pipeline::parse_pipeline_output(&run[2].data).unwrap()),
        serde_json::json!({"a": 1})
    );
    assert_eq!(
        pipeline::parse_informational_record(&run[3].data).unwrap(),
        "warn!"
    );
    assert_eq!(
        pipeline::parse_error_record(&run[4].data).unwrap(),
        ErrorInfo {
            message: "bad value".into(),
            fully_qualified_error_id: "BadValue,Fuzz".into(),
            exception_type: "System.Exception".into(),
            category: 6,
            reason: "NETException".into(),
            target_name: "tgt".into(),
            target_object: Some("tgt".into()),
        }
    );
    assert_eq!(
        pipeline::parse_pipeline_state(&run[5].data).unwrap(),
        (PipelineState::Completed, None)
    );
}

/// Writes our client's and our server's messages for `interop.py` to feed psrpcore:
/// `PSRP_INTEROP_DIR=/tmp/x cargo test -p warden-psrp --test psrpcore -- --ignored`.
#[test]
#[ignore = "writes files for the by-hand psrpcore check"]
fn write_messages_for_psrpcore() {
    let dir = std::env::var("PSRP_INTEROP_DIR").expect("PSRP_INTEROP_DIR");
    let rpid = Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888);
    let pid = Some(Uuid::from_u128(0xaaaa_bbbb_cccc_dddd_eeee_ffff_0000_1111));
    let msg = |destination, message_type, pipeline_id, data: String| {
        Message {
            destination,
            message_type,
            runspace_pool_id: rpid,
            pipeline_id,
            data,
        }
        .encode()
    };
    let (s, c) = (Destination::Server, Destination::Client);
    let write = |name: &str, first: u64, msgs: &[Vec<u8>]| {
        std::fs::write(
            format!("{dir}/{name}"),
            fragment::fragment_all(first, msgs, 32_000),
        )
        .unwrap();
    };
    write(
        "ours_client_creation.bin",
        1,
        &[
            msg(
                s,
                MessageType::SESSION_CAPABILITY,
                None,
                session_capability(&SessionCapability::default()),
            ),
            msg(
                s,
                MessageType::INIT_RUNSPACEPOOL,
                None,
                init_runspace_pool(1, 1),
            ),
        ],
    );
    let cmds = vec![Command {
        name: "Get-Mailbox".into(),
        is_script: false,
        parameters: vec![
            (
                "Identity".into(),
                PsValue::String("john@contoso.com".into()),
            ),
            ("ResultSize".into(), PsValue::I32(10)),
            ("Force".into(), PsValue::Bool(true)),
            (
                "Props".into(),
                clixml::from_json(&serde_json::json!(["A", "B"])),
            ),
            (
                "Hash".into(),
                clixml::from_json(&serde_json::json!({"k": 1})),
            ),
        ],
    }];
    write(
        "ours_client_create_pipeline.bin",
        3,
        &[msg(
            s,
            MessageType::CREATE_PIPELINE,
            pid,
            create_pipeline(&cmds),
        )],
    );
    write(
        "ours_server_open.bin",
        1,
        &[
            msg(
                c,
                MessageType::SESSION_CAPABILITY,
                None,
                session_capability(&SessionCapability::default()),
            ),
            msg(
                c,
                MessageType::APPLICATION_PRIVATE_DATA,
                None,
                application_private_data(),
            ),
            msg(
                c,
                MessageType::RUNSPACEPOOL_STATE,
                None,
                runspace_pool_state(RunspacePoolState::Opened, None),
            ),
        ],
    );
    let err = ErrorInfo {
        message: "Couldn't find object \"nobody\".".into(),
        fully_qualified_error_id:
            "[Server=X] 9F3A7B21,Microsoft.Exchange.Management.RecipientTasks.GetMailbox".into(),
        exception_type: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
            .into(),
        category: 13,
        reason: "ManagementObjectNotFoundException".into(),
        target_name: "nobody".into(),
        target_object: Some("nobody".into()),
    };
    let output = serde_json::json!({"Name": "John", "Count": 3, "Aliases": ["j", "jj"], "Nested": {"x": null}});
    write(
        "ours_server_pipeline.bin",
        4,
        &[
            msg(
                c,
                MessageType::PIPELINE_OUTPUT,
                pid,
                pipeline_output(&clixml::from_json(&output)),
            ),
            msg(
                c,
                MessageType::PIPELINE_OUTPUT,
                pid,
                pipeline_output(&PsValue::String("plain\r\ntext _x0041_".into())),
            ),
            msg(
                c,
                MessageType::WARNING_RECORD,
                pid,
                informational_record("careful"),
            ),
            msg(
                c,
                MessageType::VERBOSE_RECORD,
                pid,
                informational_record_for(MessageType::VERBOSE_RECORD, "verbose"),
            ),
            msg(c, MessageType::ERROR_RECORD, pid, error_record(&err)),
            msg(
                c,
                MessageType::PIPELINE_STATE,
                pid,
                pipeline_state(PipelineState::Failed, Some(&err)),
            ),
        ],
    );
}
