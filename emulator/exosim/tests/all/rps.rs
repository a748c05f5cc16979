//! The Remote PowerShell endpoint over real HTTPS, driven by warden-psrp's client side: pool
//! handshake, results equal to InvokeCommand's, writes visible through REST, fragmentation both
//! ways, PSRP errors (cmdlet failure, script text, RBAC trimming), 401 and AccessDenied,
//! unknown shells and commands, Signal, Delete, timeouts, the shell cap, faults, on-premises
//! Basic and partner (DelegatedOrg) access.

use std::time::{Duration, Instant};

use base64::Engine as _;
use exosim::{
    DEMO_CLIENT_ID, DEMO_DOMAIN, DEMO_NO_ROLE_CLIENT_ID, DEMO_NO_WIDS_CLIENT_ID,
    DEMO_READER_CLIENT_ID, DEMO_TENANT_ID, ExchangeFault, ExosimOptions, OnPremBasic,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;
use warden_psrp::pipeline::{self, Command, ErrorInfo, PipelineState, RunspacePoolState};
use warden_psrp::wsman::{self, CommandState, Fault, Header, Response};
use warden_psrp::{Defragmenter, Destination, Message, MessageType, PsValue, clixml, fragment};

use crate::support::{EXO_SCOPE, Env, demo, run};

const RESOURCE: &str = "http://schemas.microsoft.com/powershell/Microsoft.Exchange";

async fn token_for(env: &Env, client_id: &str) -> String {
    let secret = env
        .app_by_id(client_id)
        .client_secret
        .clone()
        .expect("secret");
    let resp = env.secret_token(client_id, &secret, EXO_SCOPE).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.json["access_token"].as_str().unwrap().to_owned()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn live_id(env: &Env) -> String {
    format!(
        "{}/powershell-liveid?BasicAuthToOAuthConversion=true",
        env.url()
    )
}

/// One HTTP answer.
#[derive(Debug)]
struct Http {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Http {
    #[track_caller]
    fn parsed(&self) -> Response {
        wsman::parse_response(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.body))
            .1
    }

    #[track_caller]
    fn fault(&self) -> Fault {
        assert_eq!(self.status, 500, "{}", self.body);
        match self.parsed() {
            Response::Fault(f) => f,
            other => panic!("expected a fault, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_unauthorized(&self) {
        assert_eq!(self.status, 401, "{}", self.body);
        assert_eq!(
            self.headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"WSMAN\"")
        );
        assert_eq!(self.body, "");
    }
}

async fn post(env: &Env, url: &str, authorization: Option<&str>, xml: String) -> Http {
    let mut request = env
        .client
        .post(url)
        .header("content-type", wsman::CONTENT_TYPE)
        .body(xml);
    if let Some(auth) = authorization {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.expect("RPS request");
    Http {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

/// What one pipeline produced.
#[derive(Debug, Default)]
struct Outcome {
    output: Vec<PsValue>,
    warnings: Vec<String>,
    errors: Vec<ErrorInfo>,
    state: Option<(PipelineState, Option<ErrorInfo>)>,
    /// Receives it took.
    receives: usize,
    /// Largest number of PSRP messages started in one Receive answer.
    most_messages_in_one: usize,
    /// Whether some message spanned two Receive answers.
    split_across: bool,
    done: bool,
}

impl Outcome {
    fn json(&self) -> Vec<Value> {
        self.output.iter().map(clixml::to_json).collect()
    }

    #[track_caller]
    fn failed(&self) -> &ErrorInfo {
        match &self.state {
            Some((PipelineState::Failed, Some(error))) => error,
            other => panic!("expected Failed with an error, got {other:?}"),
        }
    }
}

/// A Remote PowerShell client built from warden-psrp's requests.
struct Client<'a> {
    env: &'a Env,
    url: String,
    auth: String,
    shell: Uuid,
    rpid: Uuid,
    max_envelope: u32,
    timeout: Duration,
    object_ids: u64,
}

impl<'a> Client<'a> {
    fn new(env: &'a Env, url: String, auth: String) -> Self {
        Client {
            env,
            url,
            auth,
            shell: Uuid::new_v4(),
            rpid: Uuid::new_v4(),
            max_envelope: wsman::DEFAULT_MAX_ENVELOPE_SIZE,
            timeout: Duration::from_secs(20),
            object_ids: 0,
        }
    }

    /// A client of the demo app on `/powershell-liveid` (as pypsrp spells it).
    async fn admin(env: &'a Env) -> Client<'a> {
        let token = token_for(env, DEMO_CLIENT_ID).await;
        Client::new(
            env,
            live_id(env),
            basic(
                &format!("OAuthUser@{DEMO_TENANT_ID}"),
                &format!("Bearer {token}"),
            ),
        )
    }

    fn header(&self, action: &str) -> Header {
        let mut h = Header::new(&self.url, RESOURCE, action);
        h.shell_id = Some(self.shell);
        h.max_envelope_size = self.max_envelope;
        h.operation_timeout = self.timeout;
        h
    }

    async fn send(&self, xml: String) -> Http {
        post(self.env, &self.url, Some(&self.auth), xml).await
    }

    fn fragments(&mut self, message: &Message, max: usize) -> Vec<u8> {
        self.object_ids += 1;
        fragment::fragment_message(self.object_ids, &message.encode(), max).concat()
    }

    fn to_server(&self, t: MessageType, pid: Option<Uuid>, data: String) -> Message {
        Message {
            destination: Destination::Server,
            message_type: t,
            runspace_pool_id: self.rpid,
            pipeline_id: pid,
            data,
        }
    }

    /// Create only.
    async fn create(&mut self) -> Http {
        let cap = self.to_server(
            MessageType::SESSION_CAPABILITY,
            None,
            pipeline::session_capability(&Default::default()),
        );
        let init = self.to_server(
            MessageType::INIT_RUNSPACEPOOL,
            None,
            pipeline::init_runspace_pool(1, 1),
        );
        let mut data = self.fragments(&cap, 32_000);
        data.extend(self.fragments(&init, 32_000));
        let mut header = self.header(wsman::action::CREATE);
        header.shell_id = None;
        header
            .options
            .push(("protocolversion".to_owned(), "2.3".to_owned()));
        self.send(wsman::create_shell(&header, self.shell, &data))
            .await
    }

    /// Create, then Receive until the pool is Opened; returns the pool messages in order.
    async fn open(&mut self) -> Vec<Message> {
        let created = self.create().await;
        assert_eq!(created.status, 200, "{}", created.body);
        assert_eq!(
            created.parsed(),
            Response::Created {
                shell_id: self.shell
            }
        );
        let mut defrag = Defragmenter::new(1 << 24);
        let mut messages = Vec::new();
        while !messages.iter().any(|m: &Message| {
            m.message_type == MessageType::RUNSPACEPOOL_STATE
                && pipeline::parse_runspace_pool_state(&m.data).unwrap().0
                    == RunspacePoolState::Opened
        }) {
            let got = self
                .send(wsman::receive(&self.header(wsman::action::RECEIVE), None))
                .await;
            let Response::Received { streams, state } = got.parsed() else {
                panic!("{}", got.body)
            };
            assert_eq!(state, None, "no command state on the pool's stream");
            for s in streams {
                for m in defrag.push(&s.data).unwrap() {
                    messages.push(Message::decode(&m).unwrap());
                }
            }
        }
        messages
    }

    /// Sends a Command carrying a CREATE_PIPELINE of `commands`, cut into fragments of at most
    /// `max_fragment` bytes: the first in the Command, the rest with Send (as pypsrp does).
    async fn start(&mut self, commands: &[Command], max_fragment: usize) -> (Uuid, Http) {
        let pid = Uuid::new_v4();
        let message = self.to_server(
            MessageType::CREATE_PIPELINE,
            Some(pid),
            pipeline::create_pipeline(commands),
        );
        self.object_ids += 1;
        let mut fragments =
            fragment::fragment_message(self.object_ids, &message.encode(), max_fragment)
                .into_iter();
        let first = fragments.next().unwrap();
        let answer = self
            .send(wsman::command(
                &self.header(wsman::action::COMMAND),
                pid,
                &first,
            ))
            .await;
        if answer.status != 200 {
            return (pid, answer);
        }
        assert_eq!(
            answer.parsed(),
            Response::CommandCreated { command_id: pid },
            "the proposed CommandId"
        );
        for rest in fragments {
            let sent = self
                .send(wsman::send_stream(
                    &self.header(wsman::action::SEND),
                    Some(pid),
                    "stdin",
                    &rest,
                ))
                .await;
            assert_eq!(sent.parsed(), Response::Sent, "{}", sent.body);
        }
        (pid, answer)
    }

    /// One Receive of a pipeline.
    async fn receive(&self, pid: Uuid) -> Http {
        self.send(wsman::receive(
            &self.header(wsman::action::RECEIVE),
            Some(pid),
        ))
        .await
    }

    /// Receives until `CommandState Done`, collecting what the pipeline sent.
    async fn collect(&self, pid: Uuid) -> Outcome {
        self.collect_with(pid, &mut Defragmenter::new(1 << 24), Outcome::default())
            .await
    }

    /// Like [`Client::collect`], continuing with a pipeline's reassembler and what it had.
    async fn collect_with(
        &self,
        pid: Uuid,
        defrag: &mut Defragmenter,
        mut out: Outcome,
    ) -> Outcome {
        while !out.done {
            let got = self.receive(pid).await;
            let Response::Received { streams, state } = got.parsed() else {
                panic!("{}", got.body)
            };
            out.receives += 1;
            let mut started = 0;
            for s in &streams {
                assert_eq!(s.command_id, Some(pid));
                started += fragment::split_fragments(&s.data)
                    .unwrap()
                    .iter()
                    .filter(|f| f.start)
                    .count();
                for m in defrag.push(&s.data).unwrap() {
                    let m = Message::decode(&m).unwrap();
                    assert_eq!(m.pipeline_id, Some(pid));
                    assert_eq!(m.runspace_pool_id, self.rpid);
                    match m.message_type {
                        MessageType::PIPELINE_OUTPUT => {
                            out.output.push(clixml::deserialize(&m.data).unwrap())
                        }
                        MessageType::WARNING_RECORD => out
                            .warnings
                            .push(pipeline::parse_informational_record(&m.data).unwrap()),
                        MessageType::ERROR_RECORD => out
                            .errors
                            .push(pipeline::parse_error_record(&m.data).unwrap()),
                        MessageType::PIPELINE_STATE => {
                            out.state = Some(pipeline::parse_pipeline_state(&m.data).unwrap())
                        }
                        other => panic!("unexpected {}", other.name()),
                    }
                }
            }
            out.most_messages_in_one = out.most_messages_in_one.max(started);
            out.split_across |= defrag.is_partial();
            let state: CommandState = state.expect("a pipeline's receive carries its state");
            assert_eq!(state.command_id, pid);
            out.done = state.is_done();
            assert_eq!(out.done, out.state.is_some(), "Done exactly with the state");
        }
        out
    }

    async fn run(&mut self, commands: &[Command]) -> Outcome {
        let (pid, answer) = self.start(commands, 32_000).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        self.collect(pid).await
    }

    async fn cmd(&mut self, name: &str, parameters: Value) -> Outcome {
        self.run(&[command(name, parameters)]).await
    }

    async fn signal(&self, pid: Uuid, code: &str) -> Http {
        self.send(wsman::signal(
            &self.header(wsman::action::SIGNAL),
            pid,
            code,
        ))
        .await
    }

    async fn delete(&self) -> Http {
        self.send(wsman::delete(&self.header(wsman::action::DELETE)))
            .await
    }
}

/// A command with JSON parameters (`null` is a switch).
fn command(name: &str, parameters: Value) -> Command {
    let parameters = match parameters {
        Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| {
                let value = if v.is_null() {
                    PsValue::Null
                } else {
                    clixml::from_json(&v)
                };
                (k, value)
            })
            .collect(),
        _ => Vec::new(),
    };
    Command {
        name: name.to_owned(),
        is_script: false,
        parameters,
    }
}

/// REST InvokeCommand's `value`, annotations removed.
async fn rest(env: &Env, token: &str, cmdlet: &str, parameters: Value) -> (u16, Value) {
    let url = format!(
        "{}/adminapi/beta/{DEMO_TENANT_ID}/InvokeCommand",
        env.exosim.exchange_url()
    );
    let response = env
        .client
        .post(url)
        .bearer_auth(token)
        .json(&json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let plain = |o: &Value| {
        Value::Object(
            o.as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !k.contains('@'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Map<_, _>>(),
        )
    };
    match body["value"].as_array() {
        Some(values) => (status, Value::Array(values.iter().map(plain).collect())),
        None => (status, body),
    }
}

async fn private(options: impl FnOnce(ExosimOptions) -> ExosimOptions) -> Env {
    Env::start(|dir| options(ExosimOptions::demo(dir))).await
}

#[test]
fn the_pool_opens_and_get_mailbox_equals_rest() {
    let env = demo();
    run(async {
        let before = env.exosim.counters();
        let mut client = Client::admin(env).await;
        let pool = client.open().await;
        let types: Vec<MessageType> = pool.iter().map(|m| m.message_type).collect();
        assert_eq!(
            types,
            [
                MessageType::SESSION_CAPABILITY,
                MessageType::APPLICATION_PRIVATE_DATA,
                MessageType::RUNSPACEPOOL_STATE
            ]
        );
        let capability = pipeline::parse_session_capability(&pool[0].data).unwrap();
        assert_eq!(capability.protocol_version, "2.3");
        assert_eq!(pool[2].runspace_pool_id, client.rpid);

        let out = client.cmd("Get-Mailbox", json!({"ResultSize": 5})).await;
        assert_eq!(out.state, Some((PipelineState::Completed, None)));
        assert_eq!(out.output.len(), 5);
        let token = token_for(env, DEMO_CLIENT_ID).await;
        let (status, expected) = rest(env, &token, "Get-Mailbox", json!({"ResultSize": 5})).await;
        assert_eq!(status, 200);
        assert_eq!(Value::Array(out.json()), expected);
        let PsValue::Object(first) = &out.output[0] else {
            panic!("an object")
        };
        assert_eq!(
            first.type_names.first().map(String::as_str),
            Some("Microsoft.Exchange.Data.Directory.Management.Mailbox")
        );
        assert_eq!(
            first.type_names.last().map(String::as_str),
            Some("System.Object")
        );
        assert_eq!(first.to_string.as_deref(), expected[0]["Identity"].as_str());
        // ResultSize cut it short: the service's warning, at the end.
        assert_eq!(
            out.warnings,
            [
                "There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter."
            ]
        );

        // The request log and counters see the RPS call like a REST one.
        let log = env.exosim.exchange_log();
        let commands: Vec<_> = log
            .iter()
            .filter(|r| {
                r.action.as_deref() == Some("Command") && r.header("authorization").is_some()
            })
            .filter(|r| r.path == "/powershell-liveid")
            .collect();
        let last = commands.last().expect("the Command is logged");
        assert_eq!(last.cmdlet.as_deref(), Some("Get-Mailbox"));
        assert_eq!(last.parameter_names, ["ResultSize"]);
        assert_eq!(last.header("authorization"), Some("Basic [redacted]"));
        assert_eq!(
            last.query.as_deref(),
            Some("BasicAuthToOAuthConversion=true")
        );
        assert_eq!((last.status, last.applied), (200, false));
        let after = env.exosim.counters();
        assert!(after.rps_requests >= before.rps_requests + 4);
        assert!(
            after.cmdlets["Get-Mailbox"] > before.cmdlets.get("Get-Mailbox").copied().unwrap_or(0)
        );

        let deleted = client.delete().await;
        assert_eq!(deleted.parsed(), Response::Deleted);
    });
}

#[test]
fn writes_change_state_visible_through_rest_and_large_parameters_arrive_in_fragments() {
    run(async {
        let env = private(|o| ExosimOptions { mailboxes: 5, ..o }).await;
        let mut client = Client::admin(&env).await;
        client.open().await;
        let out = client
            .cmd("New-Mailbox", json!({"Name": "rps-shared", "Shared": null}))
            .await;
        assert_eq!(out.state, Some((PipelineState::Completed, None)), "{out:?}");
        assert_eq!(out.output.len(), 1);
        let created = &out.json()[0];
        assert_eq!(created["Name"], "rps-shared");
        assert_eq!(created["RecipientTypeDetails"], "SharedMailbox");
        let token = token_for(&env, DEMO_CLIENT_ID).await;
        let (_, via_rest) = rest(
            &env,
            &token,
            "Get-Mailbox",
            json!({"Identity": "rps-shared"}),
        )
        .await;
        assert_eq!(via_rest, json!([created]));
        let logged = env.exosim.exchange_log();
        let write = logged
            .iter()
            .rfind(|r| r.cmdlet.as_deref() == Some("New-Mailbox"))
            .unwrap();
        assert!(write.applied);
        assert_eq!(write.action.as_deref(), Some("Command"));
        assert_eq!(env.exosim.counters().writes_applied, 1);

        // A display name far larger than a fragment: CREATE_PIPELINE goes out as a Command and
        // many Sends, and only the Send that completes it runs the cmdlet.
        let long: String = "Ä-long display name ".repeat(1000);
        let (pid, answer) = client
            .start(
                &[command(
                    "Set-Mailbox",
                    json!({"Identity": "rps-shared", "DisplayName": long}),
                )],
                2_000,
            )
            .await;
        assert_eq!(answer.status, 200);
        let out = client.collect(pid).await;
        assert_eq!(out.state, Some((PipelineState::Completed, None)), "{out:?}");
        let mailbox = env.exosim.mailbox(DEMO_DOMAIN, "rps-shared").unwrap();
        assert_eq!(mailbox["DisplayName"], long.as_str());
        let sends = env
            .exosim
            .exchange_log()
            .iter()
            .filter(|r| r.action.as_deref() == Some("Send"))
            .count();
        assert!(sends >= 10, "{sends} Sends");
        let applied = env
            .exosim
            .exchange_log()
            .iter()
            .rfind(|r| r.applied)
            .cloned()
            .unwrap();
        assert_eq!(
            (applied.action.as_deref(), applied.cmdlet.as_deref()),
            (Some("Send"), Some("Set-Mailbox"))
        );
        // A hashtable parameter (Add/Remove) binds like REST's object.
        let out = client
            .cmd(
                "Set-Mailbox",
                json!({"Identity": "rps-shared", "EmailAddresses": {"Add": ["smtp:extra@contoso.onmicrosoft.com"]}}),
            )
            .await;
        assert_eq!(out.state, Some((PipelineState::Completed, None)), "{out:?}");
        let (_, after) = rest(
            &env,
            &token,
            "Get-Mailbox",
            json!({"Identity": "rps-shared"}),
        )
        .await;
        let addresses = after[0]["EmailAddresses"].as_array().unwrap();
        assert!(
            addresses
                .iter()
                .any(|a| a == "smtp:extra@contoso.onmicrosoft.com"),
            "{addresses:?}"
        );
    });
}

#[test]
fn a_large_read_streams_in_pages_and_fragments() {
    run(async {
        let env = private(|o| ExosimOptions {
            mailboxes: 1200,
            ..o
        })
        .await;
        let token = token_for(&env, DEMO_CLIENT_ID).await;
        let mut client = Client::admin(&env).await;
        client.open().await;
        // A small envelope (under 1 KB of fragments each): every object is cut in pieces.
        client.max_envelope = 5_120;
        let small = client.cmd("Get-Mailbox", json!({"ResultSize": 40})).await;
        assert_eq!(small.output.len(), 40);
        assert!(small.receives >= 20, "{} receives", small.receives);
        assert!(small.split_across, "a message spans two answers");
        // The service's envelope: many messages per answer, everything once, in order.
        client.max_envelope = 512_000;
        let all = client
            .cmd("Get-Mailbox", json!({"ResultSize": "Unlimited"}))
            .await;
        assert_eq!(all.state, Some((PipelineState::Completed, None)));
        assert_eq!(all.output.len(), 1200);
        assert!(
            all.most_messages_in_one > 50,
            "{}",
            all.most_messages_in_one
        );
        assert!(all.receives > 3, "{} receives", all.receives);
        assert!(all.warnings.is_empty());
        let guids: Vec<Value> = all.json().iter().map(|m| m["Guid"].clone()).collect();
        let mut unique = guids.clone();
        unique.sort_by_key(|g| g.to_string());
        unique.dedup();
        assert_eq!(unique.len(), 1200);
        let (_, first) = rest(&env, &token, "Get-Mailbox", json!({"ResultSize": 1})).await;
        assert_eq!(all.json()[0], first[0]);
    });
}

#[test]
fn cmdlet_failures_are_failed_pipelines_with_the_rest_error() {
    let env = demo();
    run(async {
        let mut client = Client::admin(env).await;
        client.open().await;
        let out = client
            .cmd("Get-Mailbox", json!({"Identity": "nobody-here"}))
            .await;
        let error = out.failed();
        assert_eq!(
            error.exception_type,
            "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
        );
        assert_eq!(
            error.message,
            "The operation couldn't be performed because object 'nobody-here' couldn't be found on 'EXOSIM01MB0001.namprd00.PROD.OUTLOOK.COM'."
        );
        assert!(
            error
                .fully_qualified_error_id
                .starts_with("[Server=EXOSIM01MB0001,RequestId="),
            "{}",
            error.fully_qualified_error_id
        );
        assert!(error.fully_qualified_error_id.ends_with(
            "] [FailureCategory=Cmdlet-ManagementObjectNotFoundException] Ex6F9304,Microsoft.Exchange.Management.RecipientTasks.GetMailbox"
        ));
        assert_eq!(error.reason, "ManagementObjectNotFoundException");
        assert!(out.output.is_empty());
        // Logged like REST's x-ExceptionType, on the Command that ran it.
        assert!(env.exosim.exchange_log().iter().any(|r| {
            r.action.as_deref() == Some("Command")
                && r.cmdlet.as_deref() == Some("Get-Mailbox")
                && r.parameter_names == ["Identity"]
                && r.exception_type.as_deref() == Some("ManagementObjectNotFoundException")
        }));

        // The same text as REST's details.
        let token = token_for(env, DEMO_CLIENT_ID).await;
        let (status, body) = rest(
            env,
            &token,
            "Get-Mailbox",
            json!({"Identity": "nobody-here"}),
        )
        .await;
        assert_eq!(status, 404);
        let details = body["error"]["details"][0]["message"].as_str().unwrap();
        assert!(details.ends_with(&error.message), "{details}");

        // Binding errors are PowerShell's, without the service decoration.
        let out = client.cmd("Get-Mailbox", json!({"Bogus": 1})).await;
        let error = out.failed();
        assert_eq!(
            error.fully_qualified_error_id,
            "NamedParameterNotFound,Microsoft.Exchange.Management.RecipientTasks.GetMailbox"
        );
        assert_eq!(
            error.message,
            "A parameter cannot be found that matches parameter name 'Bogus'."
        );
    });
}

#[test]
fn script_text_and_pipelines_are_refused() {
    let env = demo();
    run(async {
        let mut client = Client::admin(env).await;
        client.open().await;
        let mut script = command("Get-Mailbox | Remove-Mailbox", json!({}));
        script.is_script = true;
        for commands in [
            vec![script],
            vec![
                command("Get-Mailbox", json!({})),
                command("Get-MailboxStatistics", json!({})),
            ],
        ] {
            let out = client.run(&commands).await;
            let error = out.failed();
            assert_eq!(
                error.message,
                "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode."
            );
            assert_eq!(error.fully_qualified_error_id, "ScriptsNotAllowed");
            assert_eq!(
                error.exception_type,
                "System.Management.Automation.ParseException"
            );
            assert!(out.output.is_empty());
        }
    });
}

#[test]
fn rbac_trims_the_runspace() {
    let env = demo();
    run(async {
        let token = token_for(env, DEMO_READER_CLIENT_ID).await;
        let mut client = Client::new(
            env,
            live_id(env),
            basic(
                &format!("OAuthUser@{DEMO_DOMAIN}"),
                &format!("Bearer {token}"),
            ),
        );
        client.open().await;
        let read = client.cmd("Get-Mailbox", json!({"ResultSize": 1})).await;
        assert_eq!(read.state, Some((PipelineState::Completed, None)));
        for name in ["Set-Mailbox", "Invoke-Expression"] {
            let out = client.cmd(name, json!({"Identity": "x"})).await;
            let error = out.failed();
            assert_eq!(
                error.message,
                format!(
                    "The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
                )
            );
            assert_eq!(
                error.exception_type,
                "System.Management.Automation.CommandNotFoundException"
            );
            assert_eq!(error.fully_qualified_error_id, "CommandNotFoundException");
            assert!(env.exosim.exchange_log().iter().any(|r| {
                r.cmdlet.as_deref() == Some(name)
                    && r.exception_type.as_deref() == Some("CommandNotFoundException")
            }));
        }
        assert_eq!(env.exosim.mailbox(DEMO_DOMAIN, "x"), None);
    });
}

#[test]
fn credentials_are_checked_on_every_request() {
    let env = demo();
    run(async {
        let admin = token_for(env, DEMO_CLIENT_ID).await;
        let no_role = token_for(env, DEMO_NO_ROLE_CLIENT_ID).await;
        let no_wids = token_for(env, DEMO_NO_WIDS_CLIENT_ID).await;
        let user = format!("OAuthUser@{DEMO_TENANT_ID}");
        let bearer = |t: &str| format!("Bearer {t}");
        let mut tampered = admin.clone();
        tampered.pop();
        let cases: Vec<(String, Option<String>)> = vec![
            (live_id(env), None),
            (live_id(env), Some(format!("Bearer {admin}"))),
            (live_id(env), Some(basic(&user, &admin))),
            (live_id(env), Some(basic(&user, &bearer(&tampered)))),
            (live_id(env), Some(basic(&user, &bearer(&no_role)))),
            (
                live_id(env),
                Some(basic("OAuthUser@fabrikam.example", &bearer(&admin))),
            ),
            (
                format!("{}/PowerShell-LiveID", env.url()),
                Some(basic(&user, &bearer(&admin))),
            ),
            (
                format!("{}/PowerShell", env.url()),
                Some(basic("administrator", "P@ssw0rd")),
            ),
        ];
        for (url, auth) in &cases {
            let mut client = Client::new(env, url.clone(), auth.clone().unwrap_or_default());
            let answer = match auth {
                Some(_) => client.create().await,
                None => {
                    let mut h = client.header(wsman::action::CREATE);
                    h.shell_id = None;
                    post(env, url, None, wsman::create_shell(&h, Uuid::new_v4(), &[])).await
                }
            };
            answer.assert_unauthorized();
        }

        // A token without a supported directory role: authenticated, access denied.
        let mut client = Client::new(env, live_id(env), basic(&user, &bearer(&no_wids)));
        let fault = client.create().await.fault();
        assert_eq!(fault.subcode.as_deref(), Some("w:AccessDenied"));
        assert_eq!(fault.wsman_code, Some(5));
        let message = fault.message.unwrap();
        assert!(
            message.starts_with(&format!("The role assigned to application {DEMO_NO_WIDS_CLIENT_ID} isn't supported in this scenario.")),
            "{message}"
        );

        // Any UPN of the tenant's domain works, on any spelling and with a trailing slash.
        let mut client = Client::new(
            env,
            format!(
                "{}/PowerShell-LiveID/?BasicAuthToOAuthConversion=true&email=SystemMailbox%7bbb558c35-97f1-4cb9-8ff7-d53741dc928c%7d%40{DEMO_DOMAIN}",
                env.url()
            ),
            basic(&format!("admin@{DEMO_DOMAIN}"), &bearer(&admin)),
        );
        client.open().await;
        // The shell is the app's: another app cannot use it, even with a valid token.
        let reader = token_for(env, DEMO_READER_CLIENT_ID).await;
        let mut other = Client::new(env, live_id(env), basic(&user, &bearer(&reader)));
        other.shell = client.shell;
        let fault = other
            .send(wsman::receive(&other.header(wsman::action::RECEIVE), None))
            .await
            .fault();
        assert_eq!(fault.subcode.as_deref(), Some("w:InvalidSelectors"));
        assert_eq!(fault.wsman_code, Some(2_150_858_843));
        // And Basic is per request: the owner's next request without it is refused.
        post(
            env,
            &client.url,
            None,
            wsman::receive(&client.header(wsman::action::RECEIVE), None),
        )
        .await
        .assert_unauthorized();
        client.delete().await;
    });
}

#[test]
fn unknown_shells_commands_and_configurations_are_faults() {
    let env = demo();
    run(async {
        let mut client = Client::admin(env).await;
        let shell = client.shell;
        client.shell = Uuid::new_v4();
        let fault = client.receive(Uuid::new_v4()).await.fault();
        assert_eq!(
            (
                fault.code.as_str(),
                fault.subcode.as_deref(),
                fault.wsman_code
            ),
            ("s:Sender", Some("w:InvalidSelectors"), Some(2_150_858_843))
        );
        assert!(
            fault.message.as_deref().unwrap().contains(&format!(
                "ShellId {} failed because the shell was not found",
                client.shell.to_string().to_uppercase()
            )),
            "{fault:?}"
        );
        client.shell = shell;
        client.open().await;
        let fault = client.receive(Uuid::new_v4()).await.fault();
        assert_eq!(fault.wsman_code, Some(2_150_858_843));
        assert!(
            fault
                .message
                .unwrap()
                .starts_with("The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist.")
        );
        let fault = client
            .signal(Uuid::new_v4(), wsman::signal_code::TERMINATE)
            .await
            .fault();
        assert_eq!(fault.subcode.as_deref(), Some("w:InvalidSelectors"));

        // Nothing queued for the pool: WinRM's TimedOut after the OperationTimeout.
        client.timeout = Duration::from_millis(700);
        let started = Instant::now();
        let fault = client
            .send(wsman::receive(&client.header(wsman::action::RECEIVE), None))
            .await
            .fault();
        assert!(fault.is_timeout(), "{fault:?}");
        assert_eq!(fault.wsman_code, Some(2_150_858_793));
        assert!(started.elapsed() >= Duration::from_millis(650));
        client.delete().await;

        // Another configuration than Microsoft.Exchange.
        let mut client = Client::admin(env).await;
        let mut header = client.header(wsman::action::CREATE);
        header.resource_uri = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell".into();
        header.shell_id = None;
        let fault = client
            .send(wsman::create_shell(&header, Uuid::new_v4(), &[]))
            .await
            .fault();
        assert_eq!(fault.subcode.as_deref(), Some("w:InvalidResourceURI"));
        assert!(
            fault.message.unwrap().contains(
                "Cannot find the Microsoft.PowerShell session configuration in the WSMan: drive on the localhost computer."
            )
        );
        client.rpid = Uuid::new_v4();
    });
}

#[test]
fn signal_stops_and_delete_closes() {
    run(async {
        let env = private(|o| ExosimOptions {
            mailboxes: 600,
            ..o
        })
        .await;
        let mut client = Client::admin(&env).await;
        client.open().await;
        client.max_envelope = 16_384;
        let (pid, _) = client
            .start(
                &[command("Get-Mailbox", json!({"ResultSize": "Unlimited"}))],
                32_000,
            )
            .await;
        let first = client.receive(pid).await;
        let Response::Received { state, streams } = first.parsed() else {
            panic!("{}", first.body)
        };
        assert_eq!(state.unwrap().state, wsman::command_state::RUNNING);
        let mut defrag = Defragmenter::new(1 << 24);
        let mut out = Outcome::default();
        for m in defrag.push(&streams[0].data).unwrap() {
            out.output
                .push(clixml::deserialize(&Message::decode(&m).unwrap().data).unwrap());
        }
        let signaled = client.signal(pid, wsman::signal_code::PS_CRTL_C).await;
        assert_eq!(signaled.parsed(), Response::Signaled);
        // A message already partly sent is finished; nothing new starts; then Stopped.
        let rest = client.collect_with(pid, &mut defrag, out).await;
        match &rest.state {
            Some((PipelineState::Stopped, Some(error))) => {
                assert_eq!(error.fully_qualified_error_id, "PipelineStopped");
                assert_eq!(error.message, "The pipeline has been stopped.");
            }
            other => panic!("expected Stopped, got {other:?}"),
        }
        assert!(rest.output.len() < 600, "stopped before the end");
        // Terminate releases the command.
        assert_eq!(
            client
                .signal(pid, wsman::signal_code::TERMINATE)
                .await
                .parsed(),
            Response::Signaled
        );
        assert_eq!(
            client.receive(pid).await.fault().wsman_code,
            Some(2_150_858_843)
        );

        let open = env.exosim.rps_shell_count();
        assert_eq!(client.delete().await.parsed(), Response::Deleted);
        assert_eq!(env.exosim.rps_shell_count(), open - 1);
        let fault = client
            .send(wsman::receive(&client.header(wsman::action::RECEIVE), None))
            .await
            .fault();
        assert_eq!(fault.subcode.as_deref(), Some("w:InvalidSelectors"));
    });
}

#[test]
fn shell_cap_faults_and_throttling() {
    run(async {
        let env = private(|o| ExosimOptions {
            mailboxes: 3,
            rps_max_shells: 2,
            ..o
        })
        .await;
        let mut a = Client::admin(&env).await;
        let mut b = Client::admin(&env).await;
        let mut c = Client::admin(&env).await;
        a.open().await;
        b.open().await;
        let fault = c.create().await.fault();
        assert_eq!(
            fault.message.as_deref(),
            Some(
                "Fail to create a runspace because you have exceeded the maximum number of connections allowed : 2 for the policy party : MaxConcurrency. Please close existing runspace and try again."
            )
        );
        b.delete().await;
        c.open().await;

        // Throttling: 503 with a whole-second Retry-After; nothing was registered, so the
        // identical Command succeeds when re-sent.
        env.exosim.exchange_faults().push_for(
            "Get-Mailbox",
            ExchangeFault::TooManyRequests {
                retry_after_secs: 0.2,
            },
        );
        let commands = [command("Get-Mailbox", json!({}))];
        let message = a.to_server(
            MessageType::CREATE_PIPELINE,
            Some(Uuid::new_v4()),
            pipeline::create_pipeline(&commands),
        );
        let pid = message.pipeline_id.unwrap();
        let data = a.fragments(&message, 32_000);
        let xml = wsman::command(&a.header(wsman::action::COMMAND), pid, &data);
        let refused = a.send(xml.clone()).await;
        assert_eq!(refused.status, 503);
        assert_eq!(
            refused
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let accepted = a.send(xml).await;
        assert_eq!(
            accepted.parsed(),
            Response::CommandCreated { command_id: pid }
        );
        assert_eq!(a.collect(pid).await.output.len(), 3);

        // A transient failure is a failed pipeline.
        env.exosim
            .exchange_faults()
            .push_for("Get-Mailbox", ExchangeFault::TransientServerError);
        let out = a.cmd("Get-Mailbox", json!({})).await;
        assert_eq!(
            out.failed().exception_type,
            "Microsoft.Exchange.Data.Storage.StorageTransientException"
        );

        // Reset after apply: the connection breaks, the write happened.
        env.exosim
            .exchange_faults()
            .push_for("New-Mailbox", ExchangeFault::ResetAfterApply);
        let commands = [command(
            "New-Mailbox",
            json!({"Name": "after-reset", "Shared": null}),
        )];
        let message = a.to_server(
            MessageType::CREATE_PIPELINE,
            Some(Uuid::new_v4()),
            pipeline::create_pipeline(&commands),
        );
        let pid = message.pipeline_id.unwrap();
        let data = a.fragments(&message, 32_000);
        let broken = env
            .client
            .post(&a.url)
            .header("content-type", wsman::CONTENT_TYPE)
            .header("authorization", &a.auth)
            .body(wsman::command(
                &a.header(wsman::action::COMMAND),
                pid,
                &data,
            ))
            .send()
            .await;
        assert!(broken.is_err(), "{broken:?}");
        assert!(env.exosim.mailbox(DEMO_DOMAIN, "after-reset").is_some());
        let logged = env
            .exosim
            .exchange_log()
            .into_iter()
            .rfind(|r| r.cmdlet.as_deref() == Some("New-Mailbox"))
            .unwrap();
        assert_eq!(
            (logged.status, logged.applied, logged.fault.as_deref()),
            (0, true, Some("reset_after_apply"))
        );
    });
}

#[test]
fn on_premises_basic_and_partner_access() {
    run(async {
        let env = private(|o| ExosimOptions {
            mailboxes: 3,
            onprem_basic: Some(OnPremBasic {
                user: "CONTOSO\\exadmin".into(),
                password: "Pa55w.rd".into(),
            }),
            ..o
        })
        .await;
        let url = format!("{}/PowerShell/", env.url());
        let mut client = Client::new(&env, url.clone(), basic("CONTOSO\\exadmin", "Pa55w.rd"));
        client.open().await;
        let out = client.cmd("Get-Mailbox", json!({})).await;
        assert_eq!(out.output.len(), 3);
        Client::new(&env, url, basic("CONTOSO\\exadmin", "wrong"))
            .create()
            .await
            .assert_unauthorized();

        // Partner access: the tenant is DelegatedOrg's, whatever the user's domain; the token
        // must be the customer tenant's.
        let token = token_for(&env, DEMO_CLIENT_ID).await;
        let partner = |org: &str| {
            format!(
                "{}/PowerShell-LiveID?DelegatedOrg={org}&BasicAuthToOAuthConversion=true",
                env.url()
            )
        };
        let mut client = Client::new(
            &env,
            partner(DEMO_DOMAIN),
            basic("OAuthUser@partner.example", &format!("Bearer {token}")),
        );
        client.open().await;
        assert_eq!(client.cmd("Get-Mailbox", json!({})).await.output.len(), 3);
        Client::new(
            &env,
            partner("unknown.example"),
            basic(
                &format!("OAuthUser@{DEMO_DOMAIN}"),
                &format!("Bearer {token}"),
            ),
        )
        .create()
        .await
        .assert_unauthorized();
    });
}

#[test]
fn more_faults_and_a_restart() {
    run(async {
        let env = private(|o| ExosimOptions {
            mailboxes: 3,
            throttle: Some(exosim::Throttle {
                per_second: 0.5,
                burst: 2,
            }),
            ..o
        })
        .await;
        let mut client = Client::admin(&env).await;
        client.open().await;
        let faults = env.exosim.exchange_faults();

        // `after` counts matching Commands: the first New-Mailbox passes, the second is dropped
        // before anything runs.
        faults.queue(&exosim::QueuedExchangeFault::for_cmdlet(
            "New-Mailbox",
            1,
            ExchangeFault::ResetBeforeApply,
        ));
        let out = client
            .cmd("New-Mailbox", json!({"Name": "first", "Shared": null}))
            .await;
        assert_eq!(out.state, Some((PipelineState::Completed, None)));
        let commands = [command(
            "New-Mailbox",
            json!({"Name": "second", "Shared": null}),
        )];
        let message = client.to_server(
            MessageType::CREATE_PIPELINE,
            Some(Uuid::new_v4()),
            pipeline::create_pipeline(&commands),
        );
        let pid = message.pipeline_id.unwrap();
        let data = client.fragments(&message, 32_000);
        let broken = env
            .client
            .post(&client.url)
            .header("content-type", wsman::CONTENT_TYPE)
            .header("authorization", &client.auth)
            .body(wsman::command(
                &client.header(wsman::action::COMMAND),
                pid,
                &data,
            ))
            .send()
            .await;
        assert!(broken.is_err(), "{broken:?}");
        assert!(env.exosim.mailbox(DEMO_DOMAIN, "second").is_none());
        // Nothing was registered: the pipeline is unknown.
        assert_eq!(
            client.receive(pid).await.fault().wsman_code,
            Some(2_150_858_843)
        );

        // The configured throttle (burst 2, both used) refuses the next Command with 503.
        let (_, answer) = client
            .start(&[command("Get-Mailbox", json!({}))], 32_000)
            .await;
        assert_eq!(answer.status, 503);
        let retry: u64 = answer.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        let logged = env.exosim.exchange_log().into_iter().last().unwrap();
        assert_eq!(logged.fault.as_deref(), Some("throttled"));
        // Every authenticated request names its tenant, throttled or not, whatever its action.
        let log = env.exosim.exchange_log();
        let untold: Vec<_> = log
            .iter()
            .filter(|r| r.status != 401 && r.tenant_id.as_deref() != Some(DEMO_TENANT_ID))
            .map(|r| (r.action.clone(), r.status, r.fault.clone()))
            .collect();
        assert!(untold.is_empty(), "{untold:?}");
        assert!(log.iter().any(|r| r.action.as_deref() == Some("Receive")));

        // A slow answer comes late, after the cmdlet ran.
        faults.clear();
        tokio::time::sleep(Duration::from_secs(2)).await;
        faults.push_for("Get-Mailbox", ExchangeFault::SlowAnswer { delay_ms: 400 });
        let started = Instant::now();
        let (pid, answer) = client
            .start(&[command("Get-Mailbox", json!({}))], 32_000)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(client.collect(pid).await.output.len(), 4);

        // An expired token: 401, and every token issued so far is dead.
        tokio::time::sleep(Duration::from_secs(2)).await;
        faults.push_for("Get-Mailbox", ExchangeFault::TokenExpired);
        let (_, answer) = client
            .start(&[command("Get-Mailbox", json!({}))], 32_000)
            .await;
        answer.assert_unauthorized();
        client
            .send(wsman::receive(&client.header(wsman::action::RECEIVE), None))
            .await
            .assert_unauthorized();

        // A restarted service has no shells.
        let mut fresh = Client::admin(&env).await;
        fresh.open().await;
        env.exosim.stop().await;
        env.exosim.restart().await.unwrap();
        assert_eq!(env.exosim.rps_shell_count(), 0);
        let fault = fresh
            .send(wsman::receive(&fresh.header(wsman::action::RECEIVE), None))
            .await
            .fault();
        assert_eq!(fault.subcode.as_deref(), Some("w:InvalidSelectors"));
    });
}

#[test]
fn delete_hands_closed_to_a_waiting_receive() {
    run(async {
        // Its own exosim: the request counter below must count this test's requests only.
        let env = &private(|o| o).await;
        let mut client = Client::admin(env).await;
        client.open().await;
        let before = env.exosim.counters().rps_requests;
        let waiting = {
            let xml = wsman::receive(&client.header(wsman::action::RECEIVE), None);
            let (url, auth) = (client.url.clone(), client.auth.clone());
            let http = env.client.clone();
            tokio::spawn(async move {
                http.post(url)
                    .header("content-type", wsman::CONTENT_TYPE)
                    .header("authorization", auth)
                    .body(xml)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            })
        };
        // The Receive must wait before the Delete comes: it has arrived once exosim counted
        // it (its connection and TLS handshake can take long on a loaded machine), and from
        // there it reaches its wait in microseconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while env.exosim.counters().rps_requests == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the Receive never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(client.delete().await.parsed(), Response::Deleted);
        let body = waiting.await.unwrap();
        let Response::Received { streams, .. } = wsman::parse_response(&body).unwrap().1 else {
            panic!("{body}")
        };
        let mut defrag = Defragmenter::new(1 << 20);
        let messages = defrag.push(&streams[0].data).unwrap();
        let closed = Message::decode(&messages[0]).unwrap();
        assert_eq!(closed.message_type, MessageType::RUNSPACEPOOL_STATE);
        assert_eq!(
            pipeline::parse_runspace_pool_state(&closed.data).unwrap().0,
            RunspacePoolState::Closed
        );
    });
}

/// A Remote PowerShell runspace keeps PowerShell's rule ($ConfirmPreference = High): a
/// ConfirmImpact-High cmdlet prompts, i.e. fails with HostException and changes nothing, unless
/// it is called with `-Confirm:$false`; `-WhatIf` only describes. (Over REST only
/// `Confirm: true` prompts: the module's flow.)
#[test]
fn a_high_impact_cmdlet_prompts_over_rps_unless_confirm_is_false() {
    run(async {
        let env = private(|o| ExosimOptions { mailboxes: 5, ..o }).await;
        let mut client = Client::admin(&env).await;
        client.open().await;
        let out = client
            .cmd("New-Mailbox", json!({"Name": "rps-prompt", "Shared": null}))
            .await;
        assert_eq!(out.state, Some((PipelineState::Completed, None)), "{out:?}");
        for parameters in [
            json!({"Identity": "rps-prompt"}),
            json!({"Identity": "rps-prompt", "Confirm": true}),
        ] {
            let out = client.cmd("Remove-Mailbox", parameters.clone()).await;
            let error = out.failed();
            assert!(
                error.exception_type.ends_with("HostException")
                    && error.message.contains("request confirmation"),
                "{parameters}: {error:?}"
            );
            assert!(env.exosim.mailbox(DEMO_DOMAIN, "rps-prompt").is_some());
        }
        let out = client
            .cmd(
                "Remove-Mailbox",
                json!({"Identity": "rps-prompt", "WhatIf": true}),
            )
            .await;
        assert_eq!(out.state, Some((PipelineState::Completed, None)), "{out:?}");
        assert!(env.exosim.mailbox(DEMO_DOMAIN, "rps-prompt").is_some());
        let out = client
            .cmd(
                "Remove-Mailbox",
                json!({"Identity": "rps-prompt", "Confirm": false}),
            )
            .await;
        assert_eq!(out.state, Some((PipelineState::Completed, None)), "{out:?}");
        assert!(env.exosim.mailbox(DEMO_DOMAIN, "rps-prompt").is_none());
    });
}
