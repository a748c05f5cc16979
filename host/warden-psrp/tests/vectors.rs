//! Recorded exchanges between pypsrp and real Windows PowerShell endpoints (see
//! `vectors/README.md`): every request must parse with `parse_request`, every answer with
//! `parse_response`, and the PSRP messages inside must decode to the values the files hold.

use std::time::Duration;
use uuid::Uuid;
use warden_psrp::pipeline::{self, PipelineState, RunspacePoolState, SessionCapability};
use warden_psrp::wsman::{self, RequestBody, Response, action, command_state};
use warden_psrp::{Defragmenter, Destination, Message, MessageType, clixml};

/// One recorded request/answer pair.
struct Exchange {
    request: String,
    response: String,
}

/// The `messages:` list of a pypsrp fixture. The files use only single-line (or folded,
/// indented-continuation) plain scalars for `request:` and `response:`; other keys
/// (`transport_error:` and its children) are skipped.
fn load(name: &str) -> Vec<Exchange> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out: Vec<Exchange> = Vec::new();
    // Which field continuation lines fold into: 1 request, 2 response, 0 none.
    let mut field = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("- request: ") {
            out.push(Exchange {
                request: rest.to_owned(),
                response: String::new(),
            });
            field = 1;
        } else if let Some(rest) = line.strip_prefix("  response: ") {
            out.last_mut().unwrap().response = rest.to_owned();
            field = 2;
        } else if line.starts_with("    ") && field != 0 {
            let last = out.last_mut().unwrap();
            let target = if field == 1 {
                &mut last.request
            } else {
                &mut last.response
            };
            target.push(' ');
            target.push_str(line.trim());
        } else {
            field = 0;
        }
    }
    for e in &out {
        assert!(
            e.request.ends_with("</s:Envelope>"),
            "{name}: request not whole"
        );
        assert!(
            e.response.ends_with("</s:Envelope>"),
            "{name}: response not whole"
        );
    }
    out
}

fn uuid(s: &str) -> Uuid {
    Uuid::parse_str(s).unwrap()
}

/// The messages reassembled from answers' streams, in order (one reassembler for the whole
/// conversation: a message may span several Receives).
fn received_messages(defrag: &mut Defragmenter, response: &Response) -> Vec<Message> {
    let Response::Received { streams, .. } = response else {
        panic!("not a ReceiveResponse: {response:?}")
    };
    let mut out = Vec::new();
    for s in streams {
        assert_eq!(s.name, "stdout");
        for m in defrag.push(&s.data).unwrap() {
            out.push(Message::decode(&m).unwrap());
        }
    }
    out
}

fn request_messages(data: &[u8]) -> Vec<Message> {
    let mut d = Defragmenter::new(1 << 20);
    let out: Vec<Message> = d
        .push(data)
        .unwrap()
        .iter()
        .map(|m| Message::decode(m).unwrap())
        .collect();
    assert!(!d.is_partial());
    out
}

#[test]
fn open_runspace() {
    let x = load("test_psrp_open_runspace.yml");
    assert_eq!(x.len(), 4);

    // Create: header, shell, and the two creation messages.
    let req = wsman::parse_request(&x[0].request).unwrap();
    assert_eq!(req.header.action, action::CREATE);
    assert_eq!(
        req.header.resource_uri,
        "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
    );
    assert_eq!(req.header.to, "https://127.0.0.1:55986/wsman");
    assert_eq!(
        req.header.message_id,
        uuid("F249DBE7-0E83-4F39-AE4A-28324CF61227")
    );
    assert_eq!(
        req.header.session_id,
        Some(uuid("AECF49AF-7164-43E6-B10A-E38E8C4986AD"))
    );
    assert_eq!(req.header.max_envelope_size, 153_600);
    assert_eq!(req.header.operation_timeout, Duration::from_secs(20));
    assert_eq!(req.header.locale, "en-US");
    assert_eq!(req.header.shell_id, None);
    assert_eq!(
        req.header.options,
        vec![("protocolversion".to_owned(), "2.3".to_owned())]
    );
    let RequestBody::Create {
        shell_id,
        input_streams,
        output_streams,
        creation_fragments,
    } = req.body
    else {
        panic!("not a Create")
    };
    assert_eq!(shell_id, Some(uuid("76056A84-51DC-4F24-9262-CA2A55464B2B")));
    assert_eq!(
        (input_streams.as_str(), output_streams.as_str()),
        ("stdin pr", "stdout")
    );
    let msgs = request_messages(&creation_fragments);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].message_type, MessageType::SESSION_CAPABILITY);
    assert_eq!(msgs[0].destination, Destination::Server);
    assert_eq!(msgs[0].pipeline_id, None);
    // pypsrp's runspace-pool id, in .NET byte order (not the ShellId string: don't tie them).
    let rpid = uuid("846a0576-dc51-244f-9262-ca2a55464b2b");
    assert_eq!(msgs[0].runspace_pool_id, rpid);
    assert_eq!(
        pipeline::parse_session_capability(&msgs[0].data).unwrap(),
        SessionCapability::default()
    );
    // Our builder writes byte for byte what pypsrp sent.
    assert_eq!(
        msgs[0].data,
        pipeline::session_capability(&SessionCapability::default())
    );
    assert_eq!(msgs[1].message_type, MessageType::INIT_RUNSPACEPOOL);
    assert_eq!(
        pipeline::parse_init_runspace_pool(&msgs[1].data).unwrap(),
        (1, 1)
    );

    let (rel, resp) = wsman::parse_response(&x[0].response).unwrap();
    assert_eq!(rel, Some(uuid("F249DBE7-0E83-4F39-AE4A-28324CF61227")));
    assert_eq!(
        resp,
        Response::Created {
            shell_id: uuid("76056A84-51DC-4F24-9262-CA2A55464B2B")
        }
    );

    // Receive on the shell: SESSION_CAPABILITY + APPLICATION_PRIVATE_DATA, then Opened.
    let mut defrag = Defragmenter::new(1 << 20);
    let req = wsman::parse_request(&x[1].request).unwrap();
    assert_eq!(
        req.body,
        RequestBody::Receive {
            command_id: None,
            stream: "stdout".into()
        }
    );
    assert_eq!(
        req.header.shell_id,
        Some(uuid("76056A84-51DC-4F24-9262-CA2A55464B2B"))
    );
    assert_eq!(
        req.header.options,
        vec![(
            "WSMAN_CMDSHELL_OPTION_KEEPALIVE".to_owned(),
            "True".to_owned()
        )]
    );
    let (rel, resp) = wsman::parse_response(&x[1].response).unwrap();
    assert_eq!(rel, Some(req.header.message_id));
    let msgs = received_messages(&mut defrag, &resp);
    assert_eq!(
        msgs.iter().map(|m| m.message_type).collect::<Vec<_>>(),
        vec![
            MessageType::SESSION_CAPABILITY,
            MessageType::APPLICATION_PRIVATE_DATA
        ]
    );
    assert_eq!(msgs[0].destination, Destination::Client);
    // The server's capability carries a nil runspace-pool id; the rest carry the pool's.
    assert_eq!(msgs[0].runspace_pool_id, Uuid::nil());
    assert_eq!(msgs[1].runspace_pool_id, rpid);
    // The server's body starts with a BOM on the wire; decode dropped it.
    assert!(msgs[0].data.starts_with("<Obj RefId=\"0\">"));
    assert_eq!(
        pipeline::parse_session_capability(&msgs[0].data)
            .unwrap()
            .protocol_version,
        "2.3"
    );
    let private = pipeline::parse_application_private_data(&msgs[1].data).unwrap();
    assert_eq!(private["PSVersionTable"]["PSVersion"], "5.1.14393.2248");
    assert_eq!(private["PSVersionTable"]["PSEdition"], "Desktop");
    assert_eq!(
        private["PSVersionTable"]["PSCompatibleVersions"][5],
        "5.1.14393.2248"
    );
    assert_eq!(
        private["PSVersionTable"]["PSRemotingProtocolVersion"],
        "2.3"
    );

    let (_, resp) = wsman::parse_response(&x[2].response).unwrap();
    let msgs = received_messages(&mut defrag, &resp);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].message_type, MessageType::RUNSPACEPOOL_STATE);
    assert_eq!(
        pipeline::parse_runspace_pool_state(&msgs[0].data).unwrap(),
        (RunspacePoolState::Opened, None)
    );
    assert!(!defrag.is_partial());

    let req = wsman::parse_request(&x[3].request).unwrap();
    assert_eq!(req.body, RequestBody::Delete);
    assert_eq!(
        wsman::parse_response(&x[3].response).unwrap().1,
        Response::Deleted
    );
}

#[test]
fn jea_commands_output_errors_and_states() {
    let x = load("test_psrp_with_jea_configuration.yml");
    assert_eq!(x.len(), 9);
    let mut defrag = Defragmenter::new(1 << 20);
    for e in &x[1..4] {
        let (_, resp) = wsman::parse_response(&e.response).unwrap();
        received_messages(&mut defrag, &resp);
    }

    // First Command: Get-Item -Path ..., answered with its CommandId.
    let req = wsman::parse_request(&x[4].request).unwrap();
    assert_eq!(
        req.header.resource_uri,
        "http://schemas.microsoft.com/powershell/JEARole"
    );
    assert_eq!(req.header.max_envelope_size, 512_000);
    let RequestBody::Command {
        command_id,
        command,
        arguments,
    } = req.body
    else {
        panic!("not a Command")
    };
    let cmd_id = uuid("309F7D49-62AD-4ED4-AB02-174DC96A46EC");
    assert_eq!(command_id, Some(cmd_id));
    assert_eq!(command, "");
    let msgs = request_messages(&arguments);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].message_type, MessageType::CREATE_PIPELINE);
    assert_eq!(
        msgs[0].pipeline_id,
        Some(uuid("497d9f30-ad62-d44e-ab02-174dc96a46ec"))
    );
    let cmds = pipeline::parse_create_pipeline(&msgs[0].data).unwrap();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].name, "Get-Item");
    assert_eq!(cmds[0].parameters[0].0, "Path");
    assert_eq!(
        cmds[0].parameters[0].1,
        clixml::PsValue::String(r"WSMan:\localhost\Service\AllowUnencrypted".into())
    );
    assert_eq!(
        wsman::parse_response(&x[4].response).unwrap(),
        (
            Some(uuid("0A455E99-A26F-41B6-8A5A-97D17E889D4A")),
            Response::CommandCreated { command_id: cmd_id }
        )
    );

    // Its Receive: PIPELINE_OUTPUT then PIPELINE_STATE Completed, command Done.
    let req = wsman::parse_request(&x[5].request).unwrap();
    assert_eq!(
        req.body,
        RequestBody::Receive {
            command_id: Some(cmd_id),
            stream: "stdout".into()
        }
    );
    let (_, resp) = wsman::parse_response(&x[5].response).unwrap();
    let Response::Received { streams, state } = &resp else {
        panic!()
    };
    assert!(streams.iter().all(|s| s.command_id == Some(cmd_id)));
    let state = state.as_ref().unwrap();
    assert_eq!(
        (state.command_id, state.state.as_str(), state.exit_code),
        (cmd_id, command_state::DONE, Some(0))
    );
    let msgs = received_messages(&mut defrag, &resp);
    assert_eq!(
        msgs.iter().map(|m| m.message_type).collect::<Vec<_>>(),
        vec![MessageType::PIPELINE_OUTPUT, MessageType::PIPELINE_STATE]
    );
    let output = pipeline::parse_pipeline_output(&msgs[0].data).unwrap();
    let obj = output.as_object().unwrap();
    assert_eq!(
        obj.type_names[0],
        "Microsoft.WSMan.Management.WSManConfigLeafElement"
    );
    let json = clixml::to_json(&output);
    assert_eq!(json["Name"], "AllowUnencrypted");
    assert_eq!(json["Value"], "true");
    assert_eq!(json["PSChildName"], "AllowUnencrypted");
    // `<Ref N="PSDrive" RefId="2" />` resolved to the drive object seen earlier.
    assert_eq!(json["PSDrive"]["Name"], "WSMan");
    assert_eq!(
        pipeline::parse_pipeline_state(&msgs[1].data).unwrap(),
        (PipelineState::Completed, None)
    );

    // Second Command (two statements, one a script): an ERROR_RECORD and PIPELINE_STATE Failed.
    let req = wsman::parse_request(&x[6].request).unwrap();
    let RequestBody::Command { arguments, .. } = req.body else {
        panic!()
    };
    let cmds = pipeline::parse_create_pipeline(&request_messages(&arguments)[0].data).unwrap();
    assert!(cmds.iter().any(|c| c.is_script));
    let (_, resp) = wsman::parse_response(&x[7].response).unwrap();
    let msgs = received_messages(&mut defrag, &resp);
    assert_eq!(
        msgs.iter().map(|m| m.message_type).collect::<Vec<_>>(),
        vec![MessageType::ERROR_RECORD, MessageType::PIPELINE_STATE]
    );
    let err = pipeline::parse_error_record(&msgs[0].data).unwrap();
    assert_eq!(
        err.fully_qualified_error_id,
        "ProviderNotFound,Microsoft.PowerShell.Commands.GetItemCommand"
    );
    assert_eq!(err.category, 13);
    let (state, err) = pipeline::parse_pipeline_state(&msgs[1].data).unwrap();
    assert_eq!(state, PipelineState::Failed);
    let err = err.unwrap();
    assert_eq!(err.fully_qualified_error_id, "ScriptsNotAllowed");
    assert_eq!(err.reason, "ParseException");
    assert!(!defrag.is_partial());
}

#[test]
fn every_stream_kind() {
    let x = load("test_psrp_stream_output_invocation.yml");
    let mut defrag = Defragmenter::new(1 << 20);
    let mut all = Vec::new();
    for e in &x[1..5] {
        let (_, resp) = wsman::parse_response(&e.response).unwrap();
        if matches!(resp, Response::Received { .. }) {
            all.extend(received_messages(&mut defrag, &resp));
        }
    }
    let kinds: Vec<MessageType> = all.iter().map(|m| m.message_type).collect();
    assert_eq!(
        &kinds[3..],
        &[
            MessageType::PROGRESS_RECORD,
            MessageType::DEBUG_RECORD,
            MessageType::VERBOSE_RECORD,
            MessageType::ERROR_RECORD,
            MessageType::PIPELINE_OUTPUT,
            MessageType::WARNING_RECORD,
            MessageType::INFORMATION_RECORD,
            MessageType::PIPELINE_STATE,
        ]
    );
    let body = |t: MessageType| &all.iter().find(|m| m.message_type == t).unwrap().data;
    assert_eq!(
        pipeline::parse_informational_record(body(MessageType::DEBUG_RECORD)).unwrap(),
        "debug stream"
    );
    assert_eq!(
        pipeline::parse_informational_record(body(MessageType::VERBOSE_RECORD)).unwrap(),
        "verbose stream"
    );
    assert_eq!(
        pipeline::parse_informational_record(body(MessageType::WARNING_RECORD)).unwrap(),
        "warning stream"
    );
    assert_eq!(
        pipeline::parse_pipeline_output(body(MessageType::PIPELINE_OUTPUT)).unwrap(),
        clixml::PsValue::String("output stream".into())
    );
    let info =
        clixml::to_json(&clixml::deserialize(body(MessageType::INFORMATION_RECORD)).unwrap());
    assert_eq!(info["MessageData"], "information stream");
    assert_eq!(info["TimeGenerated"], "2018-06-13T23:45:29.4583203+00:00");
    assert_eq!(
        pipeline::parse_pipeline_state(body(MessageType::PIPELINE_STATE))
            .unwrap()
            .0,
        PipelineState::Completed
    );
}

#[test]
fn receive_failure_fault() {
    let x = load("test_psrp_receive_failure.yml");
    assert_eq!(x.len(), 5);
    let req = wsman::parse_request(&x[3].request).unwrap();
    assert_eq!(req.header.action, action::RECEIVE);
    let (rel, resp) = wsman::parse_response(&x[3].response).unwrap();
    assert_eq!(rel, Some(uuid("3609FF97-81FB-4C72-944B-E563EECE9C92")));
    assert_eq!(rel, Some(req.header.message_id));
    let Response::Fault(f) = resp else {
        panic!("not a fault: {resp:?}")
    };
    assert_eq!(f.code, "s:Sender");
    assert_eq!(f.subcode.as_deref(), Some("w:InvalidSelectors"));
    assert_eq!(
        f.reason,
        "The WS-Management service cannot process the request because the request contained invalid selectors for the resource."
    );
    assert_eq!(f.wsman_code, Some(2_150_858_843));
    assert!(f.message.as_deref().unwrap().starts_with(
        "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist."
    ));
    assert!(!f.is_timeout());
}

#[test]
fn every_recorded_envelope_parses() {
    for name in [
        "test_psrp_open_runspace.yml",
        "test_psrp_with_jea_configuration.yml",
        "test_psrp_receive_failure.yml",
        "test_psrp_stream_output_invocation.yml",
    ] {
        for (i, e) in load(name).iter().enumerate() {
            let req = wsman::parse_request(&e.request)
                .unwrap_or_else(|err| panic!("{name} #{i} request: {err}"));
            let (rel, _) = wsman::parse_response(&e.response)
                .unwrap_or_else(|err| panic!("{name} #{i} response: {err}"));
            assert_eq!(rel, Some(req.header.message_id), "{name} #{i}");
        }
    }
}
