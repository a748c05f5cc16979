//! A toy Remote PowerShell endpoint over stdin/stdout, to check real clients accept what this
//! crate writes (`tests/vectors/pypsrp/loopback.py` drives pypsrp through it). Not an emulator:
//! no HTTP, no auth, one shell, and every command "succeeds" by echoing its name and parameters
//! as one output object plus a warning — except `Fail-Me`, which fails with an ErrorRecord.
//!
//! Framing: each request and answer is a 4-byte big-endian length and that many bytes of XML.

use std::collections::HashMap;
use std::io::{Read, Write};
use uuid::Uuid;
use warden_psrp::pipeline::{self, ErrorInfo, PipelineState, RunspacePoolState, SessionCapability};
use warden_psrp::wsman::{self, CommandState, Fault, RequestBody, StreamChunk};
use warden_psrp::{Defragmenter, Destination, Message, MessageType, PsValue, clixml, fragment};

#[derive(Default)]
struct Shell {
    rpid: Uuid,
    next_object: u64,
    /// Messages waiting for a Receive, by pipeline (None: the pool).
    queued: HashMap<Option<Uuid>, Vec<Vec<u8>>>,
    /// CommandId → pipeline id.
    commands: HashMap<Uuid, Uuid>,
}

impl Shell {
    fn queue(&mut self, command: Option<Uuid>, pid: Option<Uuid>, t: MessageType, data: String) {
        let rpid = if t == MessageType::SESSION_CAPABILITY {
            Uuid::nil()
        } else {
            self.rpid
        };
        let m = Message {
            destination: Destination::Client,
            message_type: t,
            runspace_pool_id: rpid,
            pipeline_id: pid,
            data,
        };
        self.queued.entry(command).or_default().push(m.encode());
    }
}

fn client_messages(data: &[u8]) -> Result<Vec<Message>, warden_psrp::PsrpError> {
    let mut d = Defragmenter::new(16 << 20);
    d.push(data)?.iter().map(|m| Message::decode(m)).collect()
}

fn answer(shell: &mut Shell, xml: &str) -> String {
    let req = match wsman::parse_request(xml) {
        Ok(r) => r,
        Err(e) => {
            let f = Fault {
                code: "s:Sender".into(),
                subcode: Some("w:ActionNotSupported".into()),
                reason: e.to_string(),
                wsman_code: None,
                message: None,
            };
            return wsman::fault(None, &f);
        }
    };
    let h = &req.header;
    match req.body {
        RequestBody::Create {
            shell_id,
            creation_fragments,
            ..
        } => {
            let msgs = client_messages(&creation_fragments).expect("creation messages");
            assert_eq!(msgs[0].message_type, MessageType::SESSION_CAPABILITY);
            pipeline::parse_session_capability(&msgs[0].data).expect("capability");
            assert_eq!(msgs[1].message_type, MessageType::INIT_RUNSPACEPOOL);
            pipeline::parse_init_runspace_pool(&msgs[1].data).expect("init");
            shell.rpid = msgs[0].runspace_pool_id;
            shell.queue(
                None,
                None,
                MessageType::SESSION_CAPABILITY,
                pipeline::session_capability(&SessionCapability::default()),
            );
            shell.queue(
                None,
                None,
                MessageType::APPLICATION_PRIVATE_DATA,
                pipeline::application_private_data(),
            );
            shell.queue(
                None,
                None,
                MessageType::RUNSPACEPOOL_STATE,
                pipeline::runspace_pool_state(RunspacePoolState::Opened, None),
            );
            wsman::create_response(h, shell_id.unwrap_or_else(Uuid::new_v4))
        }
        RequestBody::Command {
            command_id,
            arguments,
            ..
        } => {
            let command_id = command_id.unwrap_or_else(Uuid::new_v4);
            let msgs = client_messages(&arguments).expect("command messages");
            let pid = msgs[0].pipeline_id;
            shell.commands.insert(command_id, pid.unwrap_or_default());
            let commands = pipeline::parse_create_pipeline(&msgs[0].data).expect("CREATE_PIPELINE");
            let mut failed = None;
            for c in &commands {
                if c.name == "Fail-Me" {
                    failed = Some(ErrorInfo {
                        message: format!("Couldn't find object \"{}\".", c.parameters.first().and_then(|p| p.1.display_text()).unwrap_or_default()),
                        fully_qualified_error_id: "[Server=LOOPBACK] 9F3A7B21,Fail-Me".into(),
                        exception_type: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException".into(),
                        category: 13,
                        reason: "ManagementObjectNotFoundException".into(),
                        target_name: "nobody".into(),
                        target_object: Some("nobody".into()),
                    });
                    continue;
                }
                let params: serde_json::Map<String, serde_json::Value> = c
                    .parameters
                    .iter()
                    .map(|(n, v)| (n.clone(), clixml::to_json(v)))
                    .collect();
                let out = serde_json::json!({"Command": c.name, "Parameters": params});
                shell.queue(
                    Some(command_id),
                    pid,
                    MessageType::PIPELINE_OUTPUT,
                    pipeline::pipeline_output(&clixml::from_json(&out)),
                );
                shell.queue(
                    Some(command_id),
                    pid,
                    MessageType::PIPELINE_OUTPUT,
                    pipeline::pipeline_output(&PsValue::String(format!("ran {}", c.name))),
                );
                shell.queue(
                    Some(command_id),
                    pid,
                    MessageType::WARNING_RECORD,
                    pipeline::informational_record(&format!("{} is a loopback", c.name)),
                );
            }
            match failed {
                Some(e) => {
                    shell.queue(
                        Some(command_id),
                        pid,
                        MessageType::ERROR_RECORD,
                        pipeline::error_record(&e),
                    );
                    shell.queue(
                        Some(command_id),
                        pid,
                        MessageType::PIPELINE_STATE,
                        pipeline::pipeline_state(PipelineState::Failed, Some(&e)),
                    );
                }
                None => shell.queue(
                    Some(command_id),
                    pid,
                    MessageType::PIPELINE_STATE,
                    pipeline::pipeline_state(PipelineState::Completed, None),
                ),
            }
            wsman::command_response(h, command_id)
        }
        RequestBody::Receive { command_id, .. } => {
            let msgs = shell.queued.remove(&command_id).unwrap_or_default();
            if msgs.is_empty() {
                let f = Fault { code: "s:Receiver".into(), subcode: Some("w:TimedOut".into()), reason: "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.".into(), wsman_code: Some(2_150_858_793), message: None };
                return wsman::fault(Some(h.message_id), &f);
            }
            let max = wsman::max_fragment_len(h.max_envelope_size);
            let mut streams = Vec::new();
            for m in &msgs {
                shell.next_object += 1;
                for f in fragment::fragment_message(shell.next_object, m, max) {
                    streams.push(StreamChunk {
                        name: "stdout".into(),
                        command_id,
                        data: f,
                        end: false,
                    });
                }
            }
            let state = command_id.map(|id| CommandState {
                command_id: id,
                state: wsman::command_state::DONE.into(),
                exit_code: Some(0),
            });
            wsman::receive_response(h, &streams, state.as_ref())
        }
        RequestBody::Send { .. } => wsman::send_response(h),
        RequestBody::Signal { .. } => wsman::signal_response(h),
        RequestBody::Delete => wsman::delete_response(h),
    }
}

fn main() {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut shell = Shell::default();
    loop {
        let mut len = [0u8; 4];
        if stdin.read_exact(&mut len).is_err() {
            return;
        }
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        stdin.read_exact(&mut buf).expect("request");
        let reply = answer(&mut shell, &String::from_utf8_lossy(&buf));
        stdout
            .write_all(&(reply.len() as u32).to_be_bytes())
            .expect("write");
        stdout.write_all(reply.as_bytes()).expect("write");
        stdout.flush().expect("flush");
    }
}
