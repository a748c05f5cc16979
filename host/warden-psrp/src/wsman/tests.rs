use super::*;
use crate::fragment::{Defragmenter, fragment_message};

const TO: &str = "https://outlook.office365.com/powershell-liveid?BasicAuthToOAuthConversion=true&DelegatedOrg=contoso.onmicrosoft.com";

fn resource() -> String {
    format!("{RESOURCE_URI_PREFIX}{EXCHANGE_CONFIGURATION}")
}

fn header(action: &str) -> Header {
    let mut h = Header::new(TO, &resource(), action);
    h.session_id = Some(Uuid::from_u128(0xaaaa));
    h.shell_id = Some(Uuid::from_u128(0x5151));
    h
}

#[test]
fn create_request_round_trip() {
    let mut h = header(action::CREATE);
    h.shell_id = None;
    h.options = vec![("protocolversion".into(), "2.3".into())];
    let shell = Uuid::parse_str("76056a84-51dc-4f24-9262-ca2a55464b2b").unwrap();
    let xml = create_shell(&h, shell, b"\x00\x01fragments");
    assert!(xml.contains(r#"<wsman:OptionSet s:mustUnderstand="true"><wsman:Option MustComply="true" Name="protocolversion">2.3</wsman:Option></wsman:OptionSet>"#));
    assert!(xml.contains("<wsman:OperationTimeout>PT20.000S</wsman:OperationTimeout>"));
    assert!(xml.contains(r#"<rsp:Shell ShellId="76056A84-51DC-4F24-9262-CA2A55464B2B"><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams><creationXml xmlns="http://schemas.microsoft.com/powershell">AAFmcmFnbWVudHM=</creationXml></rsp:Shell>"#));
    assert!(xml.contains(&format!(
        "<wsa:MessageID>uuid:{}</wsa:MessageID>",
        upper(h.message_id)
    )));
    assert!(xml.contains(r#"<wsman:Locale s:mustUnderstand="false" xml:lang="en-US" />"#));
    assert!(xml.contains("<wsa:To>https://outlook.office365.com/powershell-liveid?BasicAuthToOAuthConversion=true&amp;DelegatedOrg=contoso.onmicrosoft.com</wsa:To>"));
    let r = parse_request(&xml).unwrap();
    assert_eq!(r.header, h);
    assert_eq!(
        r.body,
        RequestBody::Create {
            shell_id: Some(shell),
            input_streams: "stdin pr".into(),
            output_streams: "stdout".into(),
            creation_fragments: b"\x00\x01fragments".to_vec(),
        }
    );
}

#[test]
fn other_requests_round_trip() {
    let cmd = Uuid::from_u128(0xc0c0);
    let cases: Vec<(String, &str, RequestBody)> = vec![
        (
            command(&header(action::COMMAND), cmd, b"args"),
            action::COMMAND,
            RequestBody::Command {
                command_id: Some(cmd),
                command: String::new(),
                arguments: b"args".to_vec(),
            },
        ),
        (
            receive(&header(action::RECEIVE), None),
            action::RECEIVE,
            RequestBody::Receive {
                command_id: None,
                stream: "stdout".into(),
            },
        ),
        (
            receive(&header(action::RECEIVE), Some(cmd)),
            action::RECEIVE,
            RequestBody::Receive {
                command_id: Some(cmd),
                stream: "stdout".into(),
            },
        ),
        (
            send(&header(action::SEND), Some(cmd), b"host response"),
            action::SEND,
            RequestBody::Send {
                streams: vec![StreamChunk {
                    name: "pr".into(),
                    command_id: Some(cmd),
                    data: b"host response".to_vec(),
                    end: false,
                }],
            },
        ),
        (
            send_stream(&header(action::SEND), None, "stdin", b"input"),
            action::SEND,
            RequestBody::Send {
                streams: vec![StreamChunk {
                    name: "stdin".into(),
                    command_id: None,
                    data: b"input".to_vec(),
                    end: false,
                }],
            },
        ),
        (
            signal(&header(action::SIGNAL), cmd, signal_code::PS_CRTL_C),
            action::SIGNAL,
            RequestBody::Signal {
                command_id: Some(cmd),
                code: signal_code::PS_CRTL_C.into(),
            },
        ),
        (
            delete(&header(action::DELETE)),
            action::DELETE,
            RequestBody::Delete,
        ),
    ];
    for (xml, act, body) in cases {
        let r = parse_request(&xml).unwrap_or_else(|e| panic!("{act}: {e}"));
        assert_eq!(
            r.header,
            header(act).clone_with_id(r.header.message_id),
            "{act}"
        );
        assert_eq!(r.body, body, "{act}");
        assert!(xml.contains(r#"<wsman:SelectorSet><wsman:Selector Name="ShellId">00000000-0000-0000-0000-000000005151</wsman:Selector></wsman:SelectorSet>"#));
    }
    assert!(command(&header(action::COMMAND), cmd, b"a").contains(
        r#"<rsp:CommandLine CommandId="00000000-0000-0000-0000-00000000C0C0"><rsp:Command /><rsp:Arguments>YQ==</rsp:Arguments></rsp:CommandLine>"#
    ));
    assert!(delete(&header(action::DELETE)).ends_with("<s:Body /></s:Envelope>"));
}

impl Header {
    fn clone_with_id(&self, id: Uuid) -> Header {
        Header {
            message_id: id,
            ..self.clone()
        }
    }
}

#[test]
fn responses_round_trip() {
    let req = header(action::RECEIVE);
    let shell = Uuid::from_u128(0x5151);
    let cmd = Uuid::from_u128(0xc0c0);
    let rel = Some(req.message_id);

    let xml = create_response(&req, shell);
    assert!(xml.contains(r#"<w:SelectorSet><w:Selector Name="ShellId">00000000-0000-0000-0000-000000005151</w:Selector></w:SelectorSet>"#));
    assert_eq!(
        parse_response(&xml).unwrap(),
        (rel, Response::Created { shell_id: shell })
    );
    assert_eq!(
        parse_response(&command_response(&req, cmd)).unwrap(),
        (rel, Response::CommandCreated { command_id: cmd })
    );
    assert_eq!(
        parse_response(&send_response(&req)).unwrap(),
        (rel, Response::Sent)
    );
    assert_eq!(
        parse_response(&signal_response(&req)).unwrap(),
        (rel, Response::Signaled)
    );
    assert_eq!(
        parse_response(&delete_response(&req)).unwrap(),
        (rel, Response::Deleted)
    );

    let streams = vec![
        StreamChunk {
            name: "stdout".into(),
            command_id: Some(cmd),
            data: vec![1, 2, 3],
            end: false,
        },
        StreamChunk {
            name: "stdout".into(),
            command_id: Some(cmd),
            data: vec![],
            end: true,
        },
    ];
    let state = CommandState {
        command_id: cmd,
        state: command_state::DONE.into(),
        exit_code: Some(0),
    };
    let xml = receive_response(&req, &streams, Some(&state));
    assert!(xml.contains(r#"<rsp:CommandState CommandId="00000000-0000-0000-0000-00000000C0C0" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"><rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>"#));
    let (r, resp) = parse_response(&xml).unwrap();
    assert_eq!(r, rel);
    match resp {
        Response::Received {
            streams: s,
            state: Some(st),
        } => {
            assert_eq!(s, streams);
            assert!(st.is_done());
            assert_eq!(st, state);
        }
        other => panic!("{other:?}"),
    }
    let running = CommandState {
        command_id: cmd,
        state: command_state::RUNNING.into(),
        exit_code: None,
    };
    let (_, resp) = parse_response(&receive_response(&req, &[], Some(&running))).unwrap();
    assert_eq!(
        resp,
        Response::Received {
            streams: vec![],
            state: Some(running)
        }
    );
    let (_, resp) = parse_response(&receive_response(&req, &[], None)).unwrap();
    assert_eq!(
        resp,
        Response::Received {
            streams: vec![],
            state: None
        }
    );
}

#[test]
fn faults_round_trip() {
    let f = Fault {
        code: "s:Receiver".into(),
        subcode: Some("w:TimedOut".into()),
        reason: "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.".into(),
        wsman_code: Some(2_150_858_793),
        message: Some("The WS-Management service cannot complete the operation <in time> & more.".into()),
    };
    let id = Uuid::from_u128(77);
    let xml = fault(Some(id), &f);
    assert!(
        xml.contains(r#"<a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action>"#)
    );
    assert!(xml.contains(r#"<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858793""#));
    let (rel, resp) = parse_response(&xml).unwrap();
    assert_eq!(rel, Some(id));
    let Response::Fault(back) = resp else {
        panic!("not a fault")
    };
    assert_eq!(back, f);
    assert!(back.is_timeout());

    let plain = Fault {
        code: "s:Sender".into(),
        subcode: Some("w:AccessDenied".into()),
        reason: "Access is denied.".into(),
        wsman_code: None,
        message: None,
    };
    let Response::Fault(back) = parse_response(&fault(None, &plain)).unwrap().1 else {
        panic!()
    };
    assert_eq!(back, plain);
    assert!(!back.is_timeout());
}

#[test]
fn parsers_ignore_prefixes_and_whitespace() {
    let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"
    xmlns:addr="http://schemas.xmlsoap.org/ws/2004/08/addressing">
  <env:Header>
    <addr:Action>  http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse </addr:Action>
    <addr:RelatesTo> uuid:0a455e99-a26f-41b6-8a5a-97d17e889d4a </addr:RelatesTo>
  </env:Header>
  <env:Body>
    <CommandResponse xmlns="http://schemas.microsoft.com/wbem/wsman/1/windows/shell">
      <CommandId>
        309F7D49-62AD-4ED4-AB02-174DC96A46EC
      </CommandId>
    </CommandResponse>
  </env:Body>
</env:Envelope>"#;
    let (rel, resp) = parse_response(xml).unwrap();
    assert_eq!(
        rel,
        Some(Uuid::parse_str("0a455e99-a26f-41b6-8a5a-97d17e889d4a").unwrap())
    );
    assert_eq!(
        resp,
        Response::CommandCreated {
            command_id: Uuid::parse_str("309f7d49-62ad-4ed4-ab02-174dc96a46ec").unwrap()
        }
    );
    // The right local name in the wrong namespace is not the element.
    let wrong = xml.replace("windows/shell\">", "windows/shellX\">");
    assert!(parse_response(&wrong).is_err());
}

#[test]
fn refusals() {
    let dtd = r#"<!DOCTYPE s:Envelope [<!ENTITY x "y">]><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>"#;
    assert!(matches!(parse_response(dtd), Err(PsrpError::Xml(m)) if m.contains("DTD")));
    assert!(matches!(parse_request(dtd), Err(PsrpError::Xml(_))));
    let soap11 =
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>"#;
    assert!(matches!(parse_response(soap11), Err(PsrpError::Wsman(_))));
    let mut h = header("http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate");
    h.shell_id = None;
    let xml = delete(&h);
    assert!(matches!(parse_request(&xml), Err(PsrpError::Wsman(m)) if m.contains("Enumerate")));
    let bad_b64 = command(&header(action::COMMAND), Uuid::nil(), b"x").replace("eA==", "!!!");
    assert!(matches!(parse_request(&bad_b64), Err(PsrpError::Wsman(m)) if m.contains("base64")));
    let no_body = receive(&header(action::RECEIVE), None)
        .replace("<rsp:Receive>", "<rsp:Other>")
        .replace("</rsp:Receive>", "</rsp:Other>");
    assert!(parse_request(&no_body).is_err());
}

#[test]
fn durations() {
    assert_eq!(format_duration(Duration::from_secs(20)), "PT20.000S");
    assert_eq!(format_duration(Duration::from_millis(1500)), "PT1.500S");
    assert_eq!(format_duration(Duration::from_micros(1500)), "PT0.0015S");
    assert_eq!(
        parse_duration("PT0.0015S").unwrap(),
        Duration::from_micros(1500)
    );
    assert_eq!(parse_duration("PT20S").unwrap(), Duration::from_secs(20));
    assert_eq!(
        parse_duration("PT20.000S").unwrap(),
        Duration::from_secs(20)
    );
    assert_eq!(
        parse_duration("PT0.5S").unwrap(),
        Duration::from_millis(500)
    );
    assert_eq!(
        parse_duration("P1DT2H3M4S").unwrap(),
        Duration::from_secs(86_400 + 7_200 + 180 + 4)
    );
    assert_eq!(parse_duration("P0DT0H0M0S").unwrap(), Duration::ZERO);
    for bad in [
        "",
        "P",
        "PT",
        "20",
        "PT1.5M",
        "PT5S3M",
        "P1Y",
        "-PT1S",
        "PTS",
        "PT99999999999999999999S",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn max_fragment_fits_the_envelope() {
    for size in [8_192u32, DEFAULT_MAX_ENVELOPE_SIZE, 512_000] {
        let n = max_fragment_len(size);
        let frag = fragment_message(1, &vec![0xab; n * 2], n).remove(0);
        assert_eq!(frag.len(), n);
        let h = Header {
            max_envelope_size: size,
            ..header(action::COMMAND)
        };
        let req = command(&h, Uuid::from_u128(1), &frag);
        assert!(req.len() <= size as usize, "{size}: command {}", req.len());
        let chunk = StreamChunk {
            name: "stdout".into(),
            command_id: Some(Uuid::from_u128(1)),
            data: frag.clone(),
            end: false,
        };
        let state = CommandState {
            command_id: Uuid::from_u128(1),
            state: command_state::DONE.into(),
            exit_code: Some(0),
        };
        let resp = receive_response(&h, &[chunk], Some(&state));
        assert!(
            resp.len() <= size as usize,
            "{size}: receive {}",
            resp.len()
        );
        // And it is a big fraction of the envelope (not a needlessly tiny fragment).
        assert!(req.len() > size as usize * 9 / 10 - ENVELOPE_OVERHEAD);
        let RequestBody::Command { arguments, .. } = parse_request(&req).unwrap().body else {
            panic!()
        };
        assert_eq!(
            Defragmenter::new(1 << 20).push(&arguments).unwrap().len(),
            0
        );
    }
    assert_eq!(max_fragment_len(100), crate::fragment::HEADER_LEN + 1);
    assert_eq!(
        max_fragment_len(DEFAULT_MAX_ENVELOPE_SIZE),
        (153_600 - 4096) / 4 * 3
    );
}
