use super::*;

const RECORDED_CREATE_PIPELINE: &str =
    include_str!("../../tests/vectors/bodies/create_pipeline.xml");
const RECORDED_EXTRA_CMDS: &str =
    include_str!("../../tests/vectors/bodies/create_pipeline_extra_cmds.xml");
const RECORDED_FAILED_STATE: &str =
    include_str!("../../tests/vectors/bodies/pipeline_state_failed.xml");
const RECORDED_ERROR_RECORD: &str = include_str!("../../tests/vectors/bodies/error_record.xml");
const RECORDED_WARNING: &str = include_str!("../../tests/vectors/bodies/warning_record.xml");

#[test]
fn session_capability_is_what_powershell_sends() {
    let body = session_capability(&SessionCapability::default());
    assert_eq!(
        body,
        r#"<Obj RefId="0"><MS><Version N="protocolversion">2.3</Version><Version N="PSVersion">2.0</Version><Version N="SerializationVersion">1.1.0.1</Version></MS></Obj>"#
    );
    assert_eq!(
        parse_session_capability(&body).unwrap(),
        SessionCapability::default()
    );
    let other = r#"<Obj RefId="0"><MS><Version N="protocolversion">2.2</Version><Version N="PSVersion">2.0</Version><Version N="SerializationVersion">1.1.0.1</Version><BA N="TimeZone">AAEAAA==</BA></MS></Obj>"#;
    assert_eq!(
        parse_session_capability(other).unwrap().protocol_version,
        "2.2"
    );
    assert!(matches!(
        parse_session_capability(r#"<Obj RefId="0"><MS /></Obj>"#),
        Err(PsrpError::Clixml(m)) if m.contains("protocolversion")
    ));
}

#[test]
fn init_runspace_pool_shape() {
    let body = init_runspace_pool(1, 3);
    assert_eq!(
        body,
        concat!(
            r#"<Obj RefId="0"><MS><I32 N="MinRunspaces">1</I32><I32 N="MaxRunspaces">3</I32>"#,
            r#"<Obj N="PSThreadOptions" RefId="1"><TN RefId="0"><T>System.Management.Automation.Runspaces.PSThreadOptions</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>Default</ToString><I32>0</I32></Obj>"#,
            r#"<Obj N="ApartmentState" RefId="2"><TN RefId="1"><T>System.Threading.ApartmentState</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>Unknown</ToString><I32>2</I32></Obj>"#,
            r#"<Obj N="HostInfo" RefId="3"><MS><B N="_isHostNull">true</B><B N="_isHostUINull">true</B><B N="_isHostRawUINull">true</B><B N="_useRunspaceHost">true</B></MS></Obj>"#,
            r#"<Nil N="ApplicationArguments" /></MS></Obj>"#
        )
    );
    assert_eq!(parse_init_runspace_pool(&body).unwrap(), (1, 3));
}

#[test]
fn application_private_data_shape() {
    let body = application_private_data();
    assert_eq!(
        body,
        r#"<Obj RefId="0"><MS><Obj N="ApplicationPrivateData" RefId="1"><TN RefId="0"><T>System.Management.Automation.PSPrimitiveDictionary</T><T>System.Collections.Hashtable</T><T>System.Object</T></TN><DCT /></Obj></MS></Obj>"#
    );
    assert_eq!(
        parse_application_private_data(&body).unwrap(),
        serde_json::json!({})
    );
}

#[test]
fn create_pipeline_round_trip() {
    let commands = vec![
        Command {
            name: "Get-Mailbox".into(),
            is_script: false,
            parameters: vec![
                ("Identity".into(), PsValue::String("a&b <c>".into())),
                ("ResultSize".into(), PsValue::I32(10)),
                ("Force".into(), PsValue::Bool(true)),
                (String::new(), PsValue::String("positional".into())),
            ],
        },
        Command {
            name: "Select-Object".into(),
            is_script: false,
            parameters: vec![(
                "Property".into(),
                clixml::from_json(&serde_json::json!(["Name", "Alias"])),
            )],
        },
    ];
    let body = create_pipeline(&commands);
    assert!(body.starts_with(
        r#"<Obj RefId="0"><MS><B N="NoInput">true</B><Obj N="ApartmentState" RefId="1">"#
    ));
    assert!(body.contains(r#"<Obj N="RemoteStreamOptions" RefId="2"><TN RefId="1"><T>System.Management.Automation.RemoteStreamOptions</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>None</ToString><I32>0</I32></Obj><B N="AddToHistory">false</B>"#));
    assert!(body.contains(r#"<Obj RefId="6"><MS><S N="Cmd">Get-Mailbox</S><B N="IsScript">false</B><Nil N="UseLocalScope" /><Obj N="MergeMyResult" RefId="7"><TN RefId="3"><T>System.Management.Automation.Runspaces.PipelineResultTypes</T>"#));
    assert!(body.contains(r#"<MS><S N="N">Identity</S><S N="V">a&amp;b &lt;c&gt;</S></MS>"#));
    assert!(body.contains(r#"<MS><Nil N="N" /><S N="V">positional</S></MS>"#));
    assert!(body.ends_with(r#"<Nil N="History" /><B N="RedirectShellErrorOutputPipe">false</B></MS></Obj><B N="IsNested">false</B></MS></Obj>"#));
    assert_eq!(parse_create_pipeline(&body).unwrap(), commands);
}

#[test]
fn parses_pypsrp_create_pipeline() {
    let cmds = parse_create_pipeline(RECORDED_CREATE_PIPELINE).unwrap();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].name, "Get-Item");
    assert!(!cmds[0].is_script);
    assert_eq!(
        cmds[0].parameters,
        vec![(
            "Path".to_owned(),
            PsValue::String(r"WSMan:\localhost\Service\AllowUnencrypted".into())
        )]
    );
    // Several statements: every one is reported, script text included, so a server can refuse it.
    let cmds = parse_create_pipeline(RECORDED_EXTRA_CMDS).unwrap();
    let names: Vec<(&str, bool)> = cmds
        .iter()
        .map(|c| (c.name.as_str(), c.is_script))
        .collect();
    assert_eq!(
        names,
        vec![
            ("Get-Item", false),
            (
                r"Set-Item -Path WSMan:\localhost\Service\AllowUnencrypted -Value $false",
                true
            )
        ]
    );
}

#[test]
fn states() {
    for s in [RunspacePoolState::Opened, RunspacePoolState::Broken] {
        assert_eq!(
            parse_runspace_pool_state(&runspace_pool_state(s, None)).unwrap(),
            (s, None)
        );
    }
    assert_eq!(
        runspace_pool_state(RunspacePoolState::Opened, None),
        r#"<Obj RefId="0"><MS><I32 N="RunspaceState">2</I32></MS></Obj>"#
    );
    assert_eq!(
        pipeline_state(PipelineState::Completed, None),
        r#"<Obj RefId="0"><MS><I32 N="PipelineState">4</I32></MS></Obj>"#
    );
    assert!(matches!(
        parse_pipeline_state(r#"<Obj RefId="0"><MS><I32 N="PipelineState">42</I32></MS></Obj>"#),
        Err(PsrpError::Clixml(m)) if m.contains("42")
    ));
    assert!(parse_pipeline_state(r#"<Obj RefId="0"><MS /></Obj>"#).is_err());
    assert!(PipelineState::Failed.is_terminal());
    assert!(!PipelineState::Running.is_terminal());
}

fn sample_error() -> ErrorInfo {
    ErrorInfo {
        message: "The operation couldn't be performed because object 'nobody' couldn't be found on 'BN8PR05DC001'.".into(),
        fully_qualified_error_id: "[Server=BN8PR05MB1234,RequestId=00000000-0000-0000-0000-000000000000,TimeStamp=1/1/2026 0:00:00 AM] [FailureCategory=Cmdlet-ManagementObjectNotFoundException] 9F3A7B21,Microsoft.Exchange.Management.RecipientTasks.GetMailbox".into(),
        exception_type: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException".into(),
        category: 13,
        reason: "ManagementObjectNotFoundException".into(),
        target_name: "nobody".into(),
        target_object: Some("nobody".into()),
    }
}

#[test]
fn error_records_round_trip() {
    let e = sample_error();
    let body = error_record(&e);
    assert!(body.starts_with(r#"<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.ErrorRecord</T><T>System.Object</T></TN><ToString>The operation couldn't"#));
    assert!(body.contains(r#"<MS><B N="writeErrorStream">true</B><Obj N="Exception" RefId="1"><TN RefId="1"><T>Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException</T><T>System.Exception</T><T>System.Object</T></TN>"#));
    assert!(body.contains(r#"<S N="ErrorCategory_Message">ObjectNotFound: (nobody:String) [], ManagementObjectNotFoundException</S><B N="SerializeExtendedInfo">false</B>"#));
    assert_eq!(parse_error_record(&body).unwrap(), e);

    let (state, err) =
        parse_pipeline_state(&pipeline_state(PipelineState::Failed, Some(&e))).unwrap();
    assert_eq!(state, PipelineState::Failed);
    assert_eq!(err.as_ref(), Some(&e));
    let (state, err) =
        parse_runspace_pool_state(&runspace_pool_state(RunspacePoolState::Broken, Some(&e)))
            .unwrap();
    assert_eq!((state, err), (RunspacePoolState::Broken, Some(e.clone())));

    let minimal = ErrorInfo {
        message: "m".into(),
        ..ErrorInfo::default()
    };
    let back = parse_error_record(&error_record(&minimal)).unwrap();
    assert_eq!(back.exception_type, "System.Exception");
    assert_eq!(back.reason, "Exception");
    assert_eq!(back.target_object, None);
}

#[test]
fn parses_recorded_errors() {
    let (state, err) = parse_pipeline_state(RECORDED_FAILED_STATE).unwrap();
    assert_eq!(state, PipelineState::Failed);
    let err = err.unwrap();
    assert_eq!(err.fully_qualified_error_id, "ScriptsNotAllowed");
    assert_eq!(
        err.exception_type,
        "System.Management.Automation.ParseException"
    );
    assert_eq!(err.category, 17);
    assert_eq!(err.reason, "ParseException");
    assert_eq!(
        err.message,
        "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode."
    );
    assert_eq!(
        err.target_object.as_deref(),
        Some(r"Set-Item -Path WSMan:\localhost\Service\AllowUnencrypted -Value $false")
    );
    // The same record through parse_error_record (it looks inside the state message).
    assert_eq!(parse_error_record(RECORDED_FAILED_STATE).unwrap(), err);

    let rec = parse_error_record(RECORDED_ERROR_RECORD).unwrap();
    assert_eq!(
        rec.fully_qualified_error_id,
        "ProviderNotFound,Microsoft.PowerShell.Commands.GetItemCommand"
    );
    assert_eq!(
        rec.message,
        "Cannot find a provider with the name 'FileSystem'."
    );
    assert_eq!(
        rec.exception_type,
        "System.Management.Automation.ProviderNotFoundException"
    );
    assert_eq!((rec.category, rec.target_name.as_str()), (13, "FileSystem"));
}

#[test]
fn informational_records() {
    assert_eq!(
        parse_informational_record(RECORDED_WARNING).unwrap(),
        "warning stream"
    );
    let body = informational_record("careful <now>");
    assert_eq!(
        body,
        r#"<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.WarningRecord</T><T>System.Management.Automation.InformationalRecord</T><T>System.Object</T></TN><ToString>careful &lt;now&gt;</ToString><MS><S N="InformationalRecord_Message">careful &lt;now&gt;</S><B N="InformationalRecord_SerializeInvocationInfo">false</B></MS></Obj>"#
    );
    assert_eq!(parse_informational_record(&body).unwrap(), "careful <now>");
    let verbose = informational_record_for(MessageType::VERBOSE_RECORD, "v");
    assert!(verbose.contains("<T>System.Management.Automation.VerboseRecord</T>"));
    assert_eq!(parse_informational_record(&verbose).unwrap(), "v");
}

#[test]
fn pipeline_output_is_the_value() {
    let v = clixml::from_json(&serde_json::json!({"Name": "x", "Count": 2}));
    let body = pipeline_output(&v);
    assert_eq!(parse_pipeline_output(&body).unwrap(), v);
    assert_eq!(error_category_name(13), "ObjectNotFound");
    assert_eq!(error_category_name(99), "NotSpecified");
}
