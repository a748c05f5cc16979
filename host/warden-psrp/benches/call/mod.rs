//! One small Remote PowerShell call (`Get-Mailbox -ResultSize 10`) as both sides' codec work,
//! without I/O: what a client builds and parses (Command, CommandResponse, Receive,
//! ReceiveResponse with ten mailboxes, the "more results" warning and the Completed state) and
//! what a server parses and builds for it. Shared by the `codec` bench and the `small_call`
//! example that `bench/callgrind/rps.sh` counts.

use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;
use warden_psrp::clixml::{self, PsValue};
use warden_psrp::fragment::{FLAG_END, FLAG_START, write_fragment};
use warden_psrp::pipeline::{self, PipelineState};
use warden_psrp::wsman::{self, CommandState, Header, RequestBody, Response, StreamChunk};
use warden_psrp::{Defragmenter, Destination, Message, MessageType, fragment_message};

/// The type names exosim gives a mailbox (most derived first).
const MAILBOX_TYPES: &[&str] = &[
    "Microsoft.Exchange.Data.Directory.Management.Mailbox",
    "Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson",
    "Microsoft.Exchange.Data.Directory.Management.MailEnabledRecipient",
    "Microsoft.Exchange.Data.Directory.ADPresentationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
];

/// A mailbox as exosim's REST answer holds it (plain JSON, annotations stripped).
fn mailbox(i: usize) -> Value {
    json!({
        "Identity": format!("user{i}"), "Name": format!("user{i}"), "Alias": format!("user{i}"),
        "DisplayName": format!("User {i} <Contoso & Partners>"),
        "PrimarySmtpAddress": format!("user{i}@contoso.onmicrosoft.com"),
        "UserPrincipalName": format!("user{i}@contoso.onmicrosoft.com"),
        "EmailAddresses": [format!("SMTP:user{i}@contoso.onmicrosoft.com"), format!("smtp:u{i}@contoso.com")],
        "ExchangeGuid": "8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d",
        "ExternalDirectoryObjectId": "1e2f3a4b-5c6d-4f6a-9c7d-8d3f5c1a2b4e",
        "Guid": "2b4e8d3f-5c1a-4f6a-9c7d-1e2f3a4b5c6d",
        "WhenChanged": "2024-04-10T08:56:22.0000000+00:00",
        "WhenCreated": "2023-01-02T10:00:00.0000000+00:00",
        "RecipientType": "UserMailbox", "RecipientTypeDetails": "UserMailbox",
        "HiddenFromAddressListsEnabled": false, "LitigationHoldEnabled": false,
        "ForwardingSmtpAddress": null, "DeliverToMailboxAndForward": false,
        "ProhibitSendQuota": "99 GB (106,300,440,576 bytes)",
        "ProhibitSendReceiveQuota": "100 GB (107,374,182,400 bytes)",
        "IssueWarningQuota": "98 GB (105,226,698,752 bytes)",
        "MaxSendSize": "35 MB (36,700,160 bytes)", "MaxReceiveSize": "36 MB (37,748,736 bytes)",
        "ArchiveStatus": "None", "AuditEnabled": true, "AuditLogAgeLimit": "90.00:00:00",
        "GrantSendOnBehalfTo": [], "AcceptMessagesOnlyFrom": [],
        "CustomAttribute1": "", "Department": "Sales", "Office": "Building 4",
        "RetentionPolicy": "Default MRM Policy", "RecoverableItemsQuota": "30 GB (32,212,254,720 bytes)",
        "UsageLocation": "Germany", "IsMailboxEnabled": true, "MessageCopyForSentAsEnabled": false,
        "DistinguishedName": format!("CN=user{i},OU=contoso.onmicrosoft.com,OU=Microsoft Exchange Hosted Organizations,DC=EURPR01A001,DC=prod,DC=outlook,DC=com"),
    })
}

/// What both sides need: the ids, headers and the data of the answers.
pub struct Fixture {
    rpid: Uuid,
    pipeline_id: Uuid,
    command_id: Uuid,
    command_header: Header,
    receive_header: Header,
    mailboxes: Vec<Value>,
    /// What the client's Command carries.
    commands: Vec<pipeline::Command>,
    /// The server's answers, for the client side.
    command_response: String,
    receive_response: String,
    /// The client's requests, for the server side.
    command_request: String,
    receive_request: String,
}

impl Fixture {
    pub fn new() -> Self {
        let shell_id = Uuid::from_u128(0x5eed);
        let header = |action: &str| {
            let mut h = Header::new(
                "https://outlook.office365.com/powershell-liveid?BasicAuthToOAuthConversion=true",
                "http://schemas.microsoft.com/powershell/Microsoft.Exchange",
                action,
            );
            h.session_id = Some(Uuid::from_u128(0x5e55));
            h.shell_id = Some(shell_id);
            h.operation_timeout = Duration::from_secs(20);
            h
        };
        let mut fixture = Self {
            rpid: Uuid::from_u128(0x1234),
            pipeline_id: Uuid::from_u128(0x9876),
            command_id: Uuid::from_u128(0x9876),
            command_header: header(wsman::action::COMMAND),
            receive_header: header(wsman::action::RECEIVE),
            mailboxes: (0..10).map(mailbox).collect(),
            commands: vec![pipeline::Command {
                name: "Get-Mailbox".into(),
                is_script: false,
                parameters: vec![("ResultSize".into(), PsValue::I32(10))],
            }],
            command_response: String::new(),
            receive_response: String::new(),
            command_request: String::new(),
            receive_request: String::new(),
        };
        fixture.command_request = fixture.client_command();
        fixture.receive_request = wsman::receive(&fixture.receive_header, Some(fixture.command_id));
        let (command_response, receive_response) = fixture.server();
        fixture.command_response = command_response;
        fixture.receive_response = receive_response;
        fixture
    }

    fn client_command(&self) -> String {
        let message = Message {
            destination: Destination::Server,
            message_type: MessageType::CREATE_PIPELINE,
            runspace_pool_id: self.rpid,
            pipeline_id: Some(self.pipeline_id),
            data: pipeline::create_pipeline(&self.commands),
        }
        .encode();
        let fragments = fragment_message(1, &message, wsman::max_fragment_len(153_600));
        wsman::command(&self.command_header, self.pipeline_id, &fragments[0])
    }

    /// The client's codec work of one call; returns the objects received (as JSON).
    pub fn client(&self) -> Vec<Value> {
        let command = self.client_command();
        std::hint::black_box(&command);
        let (_, answer) = wsman::parse_response(&self.command_response).expect("CommandResponse");
        assert!(matches!(answer, Response::CommandCreated { .. }));
        let receive = wsman::receive(&self.receive_header, Some(self.command_id));
        std::hint::black_box(&receive);
        let (_, answer) = wsman::parse_response(&self.receive_response).expect("ReceiveResponse");
        let Response::Received { streams, state } = answer else {
            panic!("a ReceiveResponse")
        };
        assert!(state.is_some_and(|s| s.is_done()));
        let mut defragmenter = Defragmenter::new(64 << 20);
        let mut objects = Vec::new();
        let mut completed = false;
        for chunk in streams {
            for bytes in defragmenter.push(&chunk.data).expect("fragments") {
                let message = Message::decode(&bytes).expect("a message");
                match message.message_type {
                    MessageType::PIPELINE_OUTPUT => {
                        let value = clixml::deserialize(&message.data).expect("CLIXML");
                        objects.push(clixml::into_json(value));
                    }
                    MessageType::WARNING_RECORD => {
                        pipeline::parse_informational_record(&message.data).expect("warning");
                    }
                    MessageType::PIPELINE_STATE => {
                        let (state, _) =
                            pipeline::parse_pipeline_state(&message.data).expect("state");
                        completed = state == PipelineState::Completed;
                    }
                    _ => {}
                }
            }
        }
        assert!(completed && objects.len() == 10);
        objects
    }

    /// The server's codec work of one call: parse the Command and the Receive, answer both.
    pub fn server(&self) -> (String, String) {
        let request = wsman::parse_request(&self.command_request).expect("Command");
        let RequestBody::Command { arguments, .. } = &request.body else {
            panic!("a Command")
        };
        let mut defragmenter = Defragmenter::new(64 << 20);
        let messages = defragmenter.push(arguments).expect("fragments");
        let message = Message::decode(&messages[0]).expect("a message");
        let commands = pipeline::parse_create_pipeline(&message.data).expect("CREATE_PIPELINE");
        assert_eq!(commands.len(), 1);
        let command_response = wsman::command_response(&request.header, self.command_id);

        let request = wsman::parse_request(&self.receive_request).expect("Receive");
        let emit = |message_type, data| {
            Message {
                destination: Destination::Client,
                message_type,
                runspace_pool_id: self.rpid,
                pipeline_id: Some(self.pipeline_id),
                data,
            }
            .encode()
        };
        let mut outbox = Vec::new();
        for mailbox in &self.mailboxes {
            let mut value = clixml::from_json_value(mailbox.clone());
            if let PsValue::Object(o) = &mut value {
                o.type_names = MAILBOX_TYPES.iter().map(|t| (*t).to_owned()).collect();
                o.to_string = mailbox["Identity"].as_str().map(str::to_owned);
            }
            outbox.push(emit(
                MessageType::PIPELINE_OUTPUT,
                pipeline::pipeline_output(&value),
            ));
        }
        outbox.push(emit(
            MessageType::WARNING_RECORD,
            pipeline::informational_record(
                "There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter.",
            ),
        ));
        outbox.push(emit(
            MessageType::PIPELINE_STATE,
            pipeline::pipeline_state(PipelineState::Completed, None),
        ));
        // Whole messages, one fragment each (they fit the envelope), as exosim's outbox cuts them.
        let mut data = Vec::new();
        for (i, message) in outbox.iter().enumerate() {
            write_fragment(&mut data, i as u64 + 2, 0, FLAG_START | FLAG_END, message);
        }
        let stream = StreamChunk {
            name: "stdout".to_owned(),
            command_id: Some(self.command_id),
            data,
            end: false,
        };
        let state = CommandState {
            command_id: self.command_id,
            state: wsman::command_state::DONE.to_owned(),
            exit_code: Some(0),
        };
        let receive_response =
            wsman::receive_response(&request.header, std::slice::from_ref(&stream), Some(&state));
        (command_response, receive_response)
    }

    /// Bytes of the ReceiveResponse (for the bench's throughput).
    pub fn receive_response_len(&self) -> usize {
        self.receive_response.len()
    }
}
