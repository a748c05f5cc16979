//! The Exchange Online half over real HTTPS: envelope and annotations
//! (docs/protocol/exo-protocol.md §1.6), error bodies (§1.8), bearer and RBAC checks (§3.3–3.4),
//! paging (§1.7), ResultSize, filters, writes that change state, the state file, injected faults
//! (including broken connections), throttling, strict anchor mode and a 100,000-mailbox tenant.

use std::time::Duration;

use exosim::{
    DEMO_CLIENT_ID, DEMO_DOMAIN, DEMO_NO_ROLE_CLIENT_ID, DEMO_NO_WIDS_CLIENT_ID,
    DEMO_READER_CLIENT_ID, DEMO_TENANT_ID, ExchangeFault, ExosimOptions, Throttle,
};
use serde_json::{Value, json};

use crate::support::{EXO_SCOPE, Env, demo, run};

const CONTENT_TYPE: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// An access token for Exchange from the real token endpoint.
async fn token_for(env: &Env, client_id: &str, scope: &str) -> String {
    let secret = env
        .app_by_id(client_id)
        .client_secret
        .clone()
        .expect("secret");
    let resp = env.secret_token(client_id, &secret, scope).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.json["access_token"].as_str().unwrap().to_owned()
}

async fn admin(env: &Env) -> String {
    token_for(env, DEMO_CLIENT_ID, EXO_SCOPE).await
}

fn invoke_url(env: &Env, tenant: &str) -> String {
    format!(
        "{}/adminapi/beta/{tenant}/InvokeCommand",
        env.exosim.exchange_url()
    )
}

/// A response, or the transport error (for reset faults).
struct Exo {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
    text: String,
}

impl Exo {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The results: a 2xx without `value` (a write that outputs nothing) has none.
    fn values(&self) -> &[Value] {
        match self.json.get("value") {
            None => &[],
            Some(value) => value
                .as_array()
                .unwrap_or_else(|| panic!("value is not an array: {}", self.text)),
        }
    }
    /// Asserts the §1.8 error shape and returns `details[0].message` split in three.
    #[track_caller]
    fn cmdlet_error(&self, status: u16, code: &str, exception: &str) -> [String; 3] {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json["error"]["code"], code, "{}", self.text);
        assert_eq!(self.json["error"]["message"], "Error executing cmdlet");
        assert_eq!(
            self.json["error"]["innererror"]["type"],
            "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"
        );
        assert_eq!(self.json["error"]["details"][0]["code"], "Client");
        assert_eq!(self.header("x-exceptiontype"), Some(exception));
        let message = self.json["error"]["details"][0]["message"]
            .as_str()
            .unwrap();
        let parts: Vec<&str> = message.splitn(3, '|').collect();
        assert_eq!(parts.len(), 3, "{message}");
        assert!(parts[1].ends_with(&format!(".{exception}")), "{message}");
        [
            parts[0].to_owned(),
            parts[1].to_owned(),
            parts[2].to_owned(),
        ]
    }
}

async fn post(
    env: &Env,
    url: &str,
    token: Option<&str>,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<Exo, reqwest::Error> {
    let mut request = env
        .client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    Ok(Exo {
        status,
        headers,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    })
}

fn body(cmdlet: &str, parameters: Value) -> Value {
    json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}})
}

async fn call(env: &Env, token: &str, cmdlet: &str, parameters: Value) -> Exo {
    post(
        env,
        &invoke_url(env, DEMO_TENANT_ID),
        Some(token),
        &body(cmdlet, parameters),
        &[],
    )
    .await
    .expect("response")
}

/// Follows nextLinks with the identical body; returns every object and the number of pages.
async fn all_pages(
    env: &Env,
    token: &str,
    url: &str,
    body: &Value,
    page: usize,
) -> (Vec<Value>, usize) {
    let prefer = format!("odata.maxpagesize={page}");
    let mut url = url.to_owned();
    let mut objects = Vec::new();
    let mut pages = 0;
    loop {
        let resp = post(env, &url, Some(token), body, &[("prefer", &prefer)])
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text);
        pages += 1;
        assert!(resp.values().len() <= page);
        objects.extend(resp.values().iter().cloned());
        match resp.json["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&env.url()), "same host: {next}");
                assert_ne!(next, url, "a repeated link");
                url = next.to_owned();
            }
            None => break,
        }
    }
    (objects, pages)
}

async fn private(options: impl FnOnce(ExosimOptions) -> ExosimOptions) -> Env {
    Env::start(|dir| options(ExosimOptions::demo(dir))).await
}

#[test]
fn envelope_and_annotations_match_the_capture() {
    let env = demo();
    run(async {
        let token = admin(env).await;
        // Lower-case cmdlet name and a domain in any case, as CAPTURE shows.
        let url = invoke_url(env, "CONTOSO.onmicrosoft.com");
        let resp = post(
            env,
            &url,
            Some(&token),
            &body("get-mailbox", json!({"ResultSize": 2})),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(resp.header("content-type"), Some(CONTENT_TYPE));
        assert_eq!(
            resp.json["@odata.context"],
            format!(
                "{}/adminapi/beta/CONTOSO.onmicrosoft.com/$metadata#Collection(Exchange.GenericHashTable)",
                env.url()
            )
        );
        assert_eq!(
            resp.json["adminapi.warnings@odata.type"],
            "#Collection(String)"
        );
        assert!(resp.json["@adminapi.warnings"].is_array());
        let first = &resp.values()[0];
        assert_eq!(first["ExchangeGuid@data.type"], "System.Guid");
        assert_eq!(first["ExchangeGuid@odata.type"], "#Guid");
        assert_eq!(first["WhenChanged@data.type"], "System.DateTime");
        assert!(first.get("WhenChanged@odata.type").is_none());
        let when = first["WhenChanged"].as_str().unwrap();
        assert!(
            when.ends_with(".0000000+00:00") && when.len() == 33,
            "{when}"
        );
        assert_eq!(first["EmailAddresses@odata.type"], "#Collection(String)");
        assert!(
            first["EmailAddresses"][0]
                .as_str()
                .unwrap()
                .starts_with("SMTP:")
        );
        assert_eq!(
            first["HiddenFromAddressListsEnabled@data.type"],
            "System.Boolean"
        );
        assert!(first.get("Name@odata.type").is_none() && first["Name"].is_string());
        assert_eq!(first["ProhibitSendQuota"], "99 GB (106,300,440,576 bytes)");
        for name in [
            "request-id",
            "rate-limit-limit",
            "rate-limit-remaining",
            "x-calculatedbetarget",
        ] {
            assert!(resp.header(name).is_some(), "{name}");
        }
        let reset = resp.header("rate-limit-reset").unwrap();
        assert!(reset.ends_with('Z') && reset.len() == 24, "{reset}");
        assert!(resp.header("x-exceptiontype").is_none());

        // Single-object cmdlets return a one-element array; v1.0 answers too; $select projects.
        let url = format!(
            "{}/adminapi/v1.0/{DEMO_TENANT_ID}/InvokeCommand?$select=Name,Guid",
            env.url()
        );
        let org = post(
            env,
            &url,
            Some(&token),
            &json!({"CmdletInput": {"CmdletName": "Get-OrganizationConfig"}}),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(org.status, 200, "{}", org.text);
        let values = org.values();
        assert_eq!(values.len(), 1);
        let keys: Vec<&String> = values[0].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert_eq!(values[0]["Name"], DEMO_DOMAIN);

        // Statistics: sizes in Exchange's text form.
        let stats = call(
            env,
            &token,
            "Get-MailboxStatistics",
            json!({"Identity": values_name(env, &token).await}),
        )
        .await;
        assert_eq!(stats.status, 200, "{}", stats.text);
        let size = stats.values()[0]["TotalItemSize"].as_str().unwrap();
        assert!(size.ends_with(" bytes)") && size.contains(" ("), "{size}");
        assert_eq!(stats.values()[0]["ItemCount@data.type"], "System.Int32");
    });
}

async fn values_name(env: &Env, token: &str) -> String {
    let resp = call(env, token, "Get-Mailbox", json!({"ResultSize": 1})).await;
    resp.values()[0]["Name"].as_str().unwrap().to_owned()
}

#[test]
fn error_bodies_follow_the_service() {
    let env = demo();
    run(async {
        let token = admin(env).await;
        let existing = values_name(env, &token).await;
        // (cmdlet, parameters, status, error.code, x-ExceptionType, ErrorId, text fragment)
        let cases: Vec<(&str, Value, u16, &str, &str, &str, String)> = vec![
            ("Get-Mailboxx", json!({}), 400, "BadRequest", "CommandNotFoundException", "CommandNotFoundException",
                "The term 'Get-Mailboxx' is not recognized as a name of a cmdlet".to_owned()),
            ("Get-Mailbox", json!({"Identityy": "x"}), 400, "BadRequest", "ParameterBindingException", "NamedParameterNotFound",
                "A parameter cannot be found that matches parameter name 'Identityy'.".to_owned()),
            ("Get-Mailbox", json!({"Ident": "x"}), 400, "BadRequest", "ParameterBindingException", "NamedParameterNotFound",
                "A parameter cannot be found that matches parameter name 'Ident'.".to_owned()),
            ("Get-Mailbox", json!({"ResultSize": "lots"}), 400, "BadRequest", "ParameterBindingException", "ParameterArgumentTransformationError",
                "Cannot process argument transformation on parameter 'ResultSize'.".to_owned()),
            ("Get-Mailbox", json!({"Identity": {"a": 1}}), 400, "BadRequest", "ParameterBindingException", "ParameterArgumentTransformationError",
                "parameter 'Identity'".to_owned()),
            ("Get-Mailbox", json!({"Identity": "nobody@contoso.onmicrosoft.com"}), 404, "NotFound", "ManagementObjectNotFoundException", "Ex6F9304",
                "The operation couldn't be performed because object 'nobody@contoso.onmicrosoft.com' couldn't be found on '".to_owned()),
            ("New-Mailbox", json!({"Name": existing.clone(), "Shared": true}), 400, "BadRequest", "ADObjectAlreadyExistsException", "Ex9F3A0B",
                "already exists".to_owned()),
            ("Set-Mailbox", json!({}), 400, "BadRequest", "ParameterBindingException", "MissingMandatoryParameter",
                "missing mandatory parameters: Identity".to_owned()),
        ];
        for (cmdlet, params, status, code, exception, error_id, text) in cases {
            let resp = call(env, &token, cmdlet, params.clone()).await;
            let [id, _, message] = resp.cmdlet_error(status, code, exception);
            assert_eq!(id, error_id, "{cmdlet} {params}");
            assert!(message.contains(&text), "{cmdlet} {params}: {message}");
        }
        let log = env.exosim.exchange_log();
        let last = log
            .iter()
            .rev()
            .find(|r| r.exception_type.is_some())
            .unwrap();
        assert_eq!(last.cmdlet.as_deref(), Some("Set-Mailbox"));
    });
}

#[test]
fn bearer_and_rbac_checks() {
    let env = demo();
    run(async {
        let url = invoke_url(env, DEMO_TENANT_ID);
        let get = body("Get-Mailbox", json!({"ResultSize": 1}));
        let before = env.exosim.counters().exchange_auth_failures;

        let none = post(env, &url, None, &get, &[]).await.unwrap();
        assert_eq!(none.status, 401, "{}", none.text);
        assert!(
            none.header("www-authenticate")
                .unwrap()
                .starts_with("Bearer ")
        );
        assert_eq!(none.json["error"]["code"], "Unauthorized");

        let token = admin(env).await;
        // Flip a character in the middle of the signature (the last one may only carry padding bits).
        let at = token.len() - 20;
        let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
        let bad = post(env, &url, Some(&tampered), &get, &[]).await.unwrap();
        assert_eq!(bad.status, 401);
        assert!(bad.header("www-authenticate").is_some());

        let graph = token_for(env, DEMO_CLIENT_ID, "https://graph.microsoft.com/.default").await;
        let wrong_aud = post(env, &url, Some(&graph), &get, &[]).await.unwrap();
        assert_eq!(wrong_aud.status, 401, "{}", wrong_aud.text);

        let other_tenant = post(
            env,
            &invoke_url(env, "fabrikam.onmicrosoft.com"),
            Some(&token),
            &get,
            &[],
        )
        .await
        .unwrap();
        assert_eq!(other_tenant.status, 401);

        // The app-id audience works too.
        let by_id = token_for(
            env,
            DEMO_CLIENT_ID,
            "00000002-0000-0ff1-ce00-000000000000/.default",
        )
        .await;
        assert_eq!(
            post(env, &url, Some(&by_id), &get, &[])
                .await
                .unwrap()
                .status,
            200
        );

        let no_role = token_for(env, DEMO_NO_ROLE_CLIENT_ID, EXO_SCOPE).await;
        let resp = post(env, &url, Some(&no_role), &get, &[]).await.unwrap();
        assert_eq!(
            (resp.status, resp.json["error"]["code"].as_str()),
            (401, Some("Unauthorized")),
            "{}",
            resp.text
        );

        let no_wids = token_for(env, DEMO_NO_WIDS_CLIENT_ID, EXO_SCOPE).await;
        let resp = post(env, &url, Some(&no_wids), &get, &[]).await.unwrap();
        assert_eq!(resp.status, 403, "{}", resp.text);

        let reader = token_for(env, DEMO_READER_CLIENT_ID, EXO_SCOPE).await;
        assert_eq!(
            post(env, &url, Some(&reader), &get, &[])
                .await
                .unwrap()
                .status,
            200
        );
        let set = body("Set-Mailbox", json!({"Identity": "x", "DisplayName": "y"}));
        let resp = post(env, &url, Some(&reader), &set, &[]).await.unwrap();
        assert_eq!(resp.status, 401, "{}", resp.text);
        assert_eq!(resp.json["error"]["code"], "Unauthorized");
        assert_eq!(
            resp.json["error"]["message"],
            "User is not allowed to call Set-Mailbox"
        );
        assert_eq!(
            resp.json["error"]["innererror"]["type"],
            "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"
        );

        // EXOModuleFile lists what the roles allow.
        let module = |t: String| async move {
            let r = env
                .client
                .get(format!(
                    "{}/adminapi/v1.0/{DEMO_TENANT_ID}/EXOModuleFile?Version=3.9.0",
                    env.url()
                ))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["value"][0]["exportedCmdlets"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let reader_list = module(reader).await;
        assert!(
            reader_list.contains("Get-Mailbox") && !reader_list.contains("Set-Mailbox"),
            "{reader_list}"
        );
        assert!(module(token).await.contains("Remove-Mailbox"));
        assert!(env.exosim.counters().exchange_auth_failures >= before + 7);
    });
}

#[test]
fn expired_token_is_refused() {
    run(async {
        let env = private(|o| ExosimOptions { mailboxes: 3, ..o }).await;
        env.exosim
            .faults()
            .set_token_lifetime(Duration::from_secs(1));
        let token = admin(&env).await;
        assert_eq!(
            call(&env, &token, "Get-AcceptedDomain", json!({}))
                .await
                .status,
            200
        );
        tokio::time::sleep(Duration::from_millis(6_500)).await;
        let resp = call(&env, &token, "Get-AcceptedDomain", json!({})).await;
        assert_eq!(resp.status, 401, "{}", resp.text);
        assert!(
            resp.header("www-authenticate")
                .unwrap()
                .contains("invalid_token")
        );
        assert!(
            resp.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expired")
        );
    });
}

#[test]
fn paging_returns_every_object_once_and_refuses_a_changed_body() {
    let env = demo();
    run(async {
        let token = admin(env).await;
        let url = invoke_url(env, DEMO_TENANT_ID);
        let get = body("Get-Mailbox", json!({"ResultSize": "Unlimited"}));
        let (objects, pages) = all_pages(env, &token, &url, &get, 4).await;
        assert_eq!(objects.len(), 25);
        assert_eq!(pages, 7);
        let mut guids: Vec<&str> = objects
            .iter()
            .map(|o| o["Guid"].as_str().unwrap())
            .collect();
        guids.sort_unstable();
        guids.dedup();
        assert_eq!(guids.len(), 25);

        let first = post(
            env,
            &url,
            Some(&token),
            &get,
            &[("prefer", "odata.maxpagesize=4")],
        )
        .await
        .unwrap();
        assert_eq!(
            first.header("preference-applied"),
            Some("odata.maxpagesize=4")
        );
        let next = first.json["@odata.nextLink"].as_str().unwrap();
        let changed = body("Get-Mailbox", json!({"ResultSize": 1000}));
        let refused = post(
            env,
            next,
            Some(&token),
            &changed,
            &[("prefer", "odata.maxpagesize=4")],
        )
        .await
        .unwrap();
        assert_eq!(refused.status, 400, "{}", refused.text);
        let forged = format!("{next}x");
        assert_eq!(
            post(env, &forged, Some(&token), &get, &[])
                .await
                .unwrap()
                .status,
            400
        );

        // ResultSize bounds the total across pages and warns that more exist.
        let (ten, pages) = all_pages(
            env,
            &token,
            &url,
            &body("Get-Mailbox", json!({"ResultSize": 10})),
            4,
        )
        .await;
        assert_eq!((ten.len(), pages), (10, 3));
        let one = call(env, &token, "Get-Mailbox", json!({"ResultSize": 3})).await;
        assert_eq!(one.values().len(), 3);
        assert!(one.json.get("@odata.nextLink").is_none());
        assert!(
            one.json["@adminapi.warnings"][0]
                .as_str()
                .unwrap()
                .starts_with("There are more results available")
        );

        // Get-Recipient pages over mailboxes and groups together.
        let (recipients, _) = all_pages(
            env,
            &token,
            &url,
            &body("Get-Recipient", json!({"ResultSize": "Unlimited"})),
            7,
        )
        .await;
        let groups = call(env, &token, "Get-DistributionGroup", json!({}))
            .await
            .values()
            .len();
        assert_eq!(recipients.len(), 25 + groups);
    });
}

#[test]
fn filters() {
    let env = demo();
    run(async {
        let token = admin(env).await;
        let all = call(env, &token, "Get-Mailbox", json!({})).await;
        let count = |pred: &dyn Fn(&Value) -> bool| all.values().iter().filter(|m| pred(m)).count();
        let shared = count(&|m| m["RecipientTypeDetails"] == "SharedMailbox");
        let cases: Vec<(&str, usize)> = vec![
            ("RecipientTypeDetails -eq 'SharedMailbox'", shared),
            ("recipienttypedetails -ne \"SharedMailbox\"", 25 - shared),
            (
                "-not (RecipientTypeDetails -eq 'SharedMailbox')",
                25 - shared,
            ),
            (
                "Name -like 'a*' -or Name -like 'b*'",
                count(&|m| {
                    let n = m["Name"].as_str().unwrap().to_ascii_lowercase();
                    n.starts_with('a') || n.starts_with('b')
                }),
            ),
            // What the module sends for `$false` (it rewrites the variable).
            ("HiddenFromAddressListsEnabled -eq 'False'", 25),
            ("HiddenFromAddressListsEnabled -eq 'True'", 0),
            ("(Name -notlike '*') -and (Alias -like '*')", 0),
        ];
        for (filter, expected) in cases {
            let resp = call(env, &token, "Get-Mailbox", json!({"Filter": filter})).await;
            assert_eq!(resp.status, 200, "{filter}: {}", resp.text);
            assert_eq!(resp.values().len(), expected, "{filter}");
        }
        // The variable itself is refused over REST: the service has none to resolve.
        let variable = call(
            env,
            &token,
            "Get-Mailbox",
            json!({"Filter": "HiddenFromAddressListsEnabled -eq $false"}),
        )
        .await;
        assert_eq!(variable.status, 400, "{}", variable.text);
        assert!(
            variable.text.contains("Invalid filter syntax"),
            "{}",
            variable.text
        );
        let typed = call(
            env,
            &token,
            "Get-Mailbox",
            json!({"RecipientTypeDetails": ["SharedMailbox"]}),
        )
        .await;
        assert_eq!(typed.values().len(), shared);
        let bad = call(
            env,
            &token,
            "Get-Mailbox",
            json!({"Filter": "Name -eqq 'x'"}),
        )
        .await;
        let [_, _, text] = bad.cmdlet_error(400, "BadRequest", "ParameterBindingException");
        assert!(text.contains("Invalid filter syntax"), "{text}");
        let unknown = call(
            env,
            &token,
            "Get-Recipient",
            json!({"Filter": "Nmae -eq 'x'"}),
        )
        .await;
        unknown.cmdlet_error(400, "BadRequest", "ParameterBindingException");
    });
}

#[test]
fn writes_change_state() {
    run(async {
        let env = private(|o| ExosimOptions {
            mailboxes: 10,
            seed: 42,
            ..o
        })
        .await;
        let token = admin(&env).await;
        let new = call(&env, &token, "New-Mailbox", json!({"Name": "Help Desk", "Alias": "helpdesk", "Shared": true, "DisplayName": "Help Desk"})).await;
        assert_eq!(new.status, 200, "{}", new.text);
        assert_eq!(new.values()[0]["RecipientTypeDetails"], "SharedMailbox");
        assert_eq!(env.exosim.mailbox_count(DEMO_DOMAIN), 11);
        let by_address = env
            .exosim
            .mailbox(DEMO_TENANT_ID, "HELPDESK@contoso.onmicrosoft.com")
            .unwrap();
        assert_eq!(by_address["Name"], "Help Desk");

        let user = env
            .exosim
            .mailbox(DEMO_TENANT_ID, &values_name(&env, &token).await)
            .unwrap();
        let upn = user["UserPrincipalName"].as_str().unwrap().to_owned();
        let set = call(&env, &token, "Set-Mailbox", json!({
            "Identity": "helpdesk",
            "DisplayName": "Service Desk",
            "HiddenFromAddressListsEnabled": true,
            "ProhibitSendQuota": "50GB",
            "GrantSendOnBehalfTo": {"@odata.type": "#Exchange.GenericHashTable", "Add": [upn.clone()]},
            "Confirm": false,
            "ErrorAction": "Stop",
        })).await;
        assert_eq!(set.status, 200, "{}", set.text);
        let after = env.exosim.mailbox(DEMO_TENANT_ID, "helpdesk").unwrap();
        assert_eq!(after["DisplayName"], "Service Desk");
        assert_eq!(after["HiddenFromAddressListsEnabled"], true);
        assert_eq!(after["ProhibitSendQuota"], "50 GB (53,687,091,200 bytes)");
        assert_eq!(after["GrantSendOnBehalfTo"], json!([upn]));
        let again = call(
            &env,
            &token,
            "Set-Mailbox",
            json!({"Identity": "helpdesk", "DisplayName": "Service Desk"}),
        )
        .await;
        assert!(
            again.json["@adminapi.warnings"][0]
                .as_str()
                .unwrap()
                .contains("no settings of 'Help Desk' have been modified")
        );

        // Permissions.
        let add = call(&env, &token, "Add-MailboxPermission", json!({"Identity": "helpdesk", "User": upn, "AccessRights": ["FullAccess"], "InheritanceType": "All"})).await;
        assert_eq!(add.status, 200, "{}", add.text);
        let perms = call(
            &env,
            &token,
            "Get-MailboxPermission",
            json!({"Identity": "helpdesk"}),
        )
        .await;
        assert!(
            perms
                .values()
                .iter()
                .any(|p| p["User"] == upn.as_str() && p["AccessRights"] == json!(["FullAccess"])),
            "{}",
            perms.text
        );
        let send_as = call(&env, &token, "Add-RecipientPermission", json!({"Identity": "helpdesk", "Trustee": upn, "AccessRights": "SendAs", "Confirm": false})).await;
        assert_eq!(send_as.status, 200, "{}", send_as.text);
        let trustees = call(
            &env,
            &token,
            "Get-RecipientPermission",
            json!({"Identity": "helpdesk"}),
        )
        .await;
        assert!(
            trustees
                .values()
                .iter()
                .any(|p| p["Trustee"] == upn.as_str())
        );
        let removed = call(&env, &token, "Remove-MailboxPermission", json!({"Identity": "helpdesk", "User": upn, "AccessRights": "FullAccess", "Confirm": false})).await;
        assert_eq!(removed.status, 200, "{}", removed.text);
        assert_eq!(
            call(
                &env,
                &token,
                "Get-MailboxPermission",
                json!({"Identity": "helpdesk"})
            )
            .await
            .values()
            .len(),
            1
        );

        // Group members: a second add is a non-terminating error in a 200.
        let group = call(
            &env,
            &token,
            "Get-DistributionGroup",
            json!({"ResultSize": 1}),
        )
        .await
        .values()[0]["Name"]
            .as_str()
            .unwrap()
            .to_owned();
        let add = |member: &str| {
            body(
                "Add-DistributionGroupMember",
                json!({"Identity": group, "Member": member, "BypassSecurityGroupManagerCheck": true}),
            )
        };
        let url = invoke_url(&env, DEMO_TENANT_ID);
        assert_eq!(
            post(&env, &url, Some(&token), &add("helpdesk"), &[])
                .await
                .unwrap()
                .status,
            200
        );
        let dup = post(&env, &url, Some(&token), &add("helpdesk"), &[])
            .await
            .unwrap();
        assert_eq!(dup.status, 200);
        assert!(
            dup.json["@adminapi.errors"][0]
                .as_str()
                .unwrap()
                .contains("MemberAlreadyExistsException"),
            "{}",
            dup.text
        );
        let members = call(
            &env,
            &token,
            "Get-DistributionGroupMember",
            json!({"Identity": group}),
        )
        .await;
        assert!(members.values().iter().any(|m| m["Alias"] == "helpdesk"));

        // Remove-Mailbox answers with a prompt when Confirm is true (the module's first POST),
        // and runs without it.
        let ask = call(
            &env,
            &token,
            "Remove-Mailbox",
            json!({"Identity": "helpdesk", "Confirm": true}),
        )
        .await;
        assert_eq!(ask.status, 200);
        assert!(
            ask.json["@adminapi.confirmationmessage"].is_string(),
            "{}",
            ask.text
        );
        assert!(env.exosim.mailbox(DEMO_TENANT_ID, "helpdesk").is_some());
        let gone = call(
            &env,
            &token,
            "Remove-Mailbox",
            json!({"Identity": "helpdesk"}),
        )
        .await;
        assert_eq!(gone.status, 200, "{}", gone.text);
        assert!(gone.json.get("value").is_none(), "{}", gone.text);
        assert!(env.exosim.mailbox(DEMO_TENANT_ID, "helpdesk").is_none());
        assert_eq!(env.exosim.mailbox_count(DEMO_TENANT_ID), 10);
        let members = call(
            &env,
            &token,
            "Get-DistributionGroupMember",
            json!({"Identity": group}),
        )
        .await;
        assert!(!members.values().iter().any(|m| m["Alias"] == "helpdesk"));

        let counters = env.exosim.counters();
        assert!(counters.writes_applied >= 7, "{counters:?}");
        assert_eq!(counters.cmdlets.get("Remove-Mailbox"), Some(&2));
        let log = env.exosim.exchange_log();
        let set = log
            .iter()
            .find(|r| r.cmdlet.as_deref() == Some("Set-Mailbox"))
            .unwrap();
        assert!(set.applied);
        assert!(
            set.parameter_names
                .contains(&"GrantSendOnBehalfTo".to_owned())
        );
        assert_eq!(set.header("authorization"), Some("Bearer [redacted]"));
        assert!(!format!("{log:?}").contains(&token));
    });
}

#[test]
fn state_file_round_trip() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("exo-state.json");
        let env = private(|o| ExosimOptions {
            mailboxes: 5,
            state_file: Some(state.clone()),
            ..o
        })
        .await;
        let token = admin(&env).await;
        let new = call(
            &env,
            &token,
            "New-Mailbox",
            json!({"Name": "Persisted One", "Alias": "persisted"}),
        )
        .await;
        assert_eq!(new.status, 200, "{}", new.text);
        let saved = std::fs::read_to_string(&state).unwrap();
        assert!(saved.contains("Persisted One"));
        env.exosim.shutdown().await;

        // A different seed and size: the state file wins.
        let env = private(|o| ExosimOptions {
            mailboxes: 50,
            seed: 9,
            state_file: Some(state.clone()),
            ..o
        })
        .await;
        assert_eq!(env.exosim.mailbox_count(DEMO_TENANT_ID), 6);
        assert!(env.exosim.mailbox(DEMO_TENANT_ID, "persisted").is_some());
        env.exosim.save_state().unwrap();
    });
}

#[test]
fn injected_faults() {
    run(async {
        let env = private(|o| ExosimOptions { mailboxes: 5, ..o }).await;
        let token = admin(&env).await;
        let faults = env.exosim.exchange_faults();
        let get = json!({"ResultSize": 1});

        faults.push(ExchangeFault::TooManyRequests {
            retry_after_secs: 0.25,
        });
        let r = call(&env, &token, "Get-Mailbox", get.clone()).await;
        assert_eq!((r.status, r.header("retry-after")), (429, Some("0.25")));
        assert!(r.header("rate-limit-remaining").is_some());

        faults.push(ExchangeFault::ServiceUnavailable);
        assert_eq!(
            call(&env, &token, "Get-Mailbox", get.clone()).await.status,
            503
        );
        faults.push(ExchangeFault::GatewayTimeout);
        let r = call(&env, &token, "Get-Mailbox", get.clone()).await;
        assert_eq!(r.status, 504);
        assert!(r.json.is_null(), "a gateway body, not JSON");
        faults.push(ExchangeFault::TransientServerError);
        let r = call(&env, &token, "Get-Mailbox", get.clone()).await;
        assert_eq!(r.status, 500);
        assert!(r.text.contains("StorageTransientException"));
        assert_eq!(
            r.header("x-exceptiontype"),
            Some("StorageTransientException")
        );
        assert_eq!(
            call(&env, &token, "Get-Mailbox", get.clone()).await.status,
            200
        );

        // Only the named cmdlet gets it.
        faults.push_for("Get-AcceptedDomain", ExchangeFault::ServiceUnavailable);
        assert_eq!(
            call(&env, &token, "Get-Mailbox", get.clone()).await.status,
            200
        );
        assert_eq!(
            call(&env, &token, "Get-AcceptedDomain", json!({}))
                .await
                .status,
            503
        );

        // Resets: the client sees a broken connection, no response.
        let url = invoke_url(&env, DEMO_TENANT_ID);
        let target = env
            .exosim
            .mailbox(DEMO_TENANT_ID, &values_name(&env, &token).await)
            .unwrap();
        let name = target["Name"].as_str().unwrap().to_owned();
        let rename = |to: &str| body("Set-Mailbox", json!({"Identity": name, "DisplayName": to}));
        faults.push(ExchangeFault::ResetBeforeApply);
        let err = post(&env, &url, Some(&token), &rename("Before Reset"), &[])
            .await
            .err()
            .expect("a broken connection");
        assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
        assert_ne!(
            env.exosim.mailbox(DEMO_TENANT_ID, &name).unwrap()["DisplayName"],
            "Before Reset"
        );

        faults.push(ExchangeFault::ResetAfterApply);
        let err = post(&env, &url, Some(&token), &rename("After Reset"), &[])
            .await
            .err()
            .expect("a broken connection");
        assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
        assert_eq!(
            env.exosim.mailbox(DEMO_TENANT_ID, &name).unwrap()["DisplayName"],
            "After Reset"
        );
        let log = env.exosim.exchange_log();
        let last = log.last().unwrap();
        assert_eq!(
            (last.fault.as_deref(), last.applied, last.status),
            (Some("reset_after_apply"), true, 0)
        );
        // The server keeps serving after a reset.
        assert_eq!(
            call(&env, &token, "Get-Mailbox", get.clone()).await.status,
            200
        );

        // The HTTP control plane drives the same queue; latency applies.
        let control = format!("{}/_exosim/exchange-faults", env.url());
        let r = env.client.post(&control)
            .json(&json!({"push": [{"kind": "service_unavailable", "count": 2, "cmdlet": "Get-Mailbox"}], "latency_ms": 300}))
            .send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(faults.pending(), 2);
        let started = std::time::Instant::now();
        assert_eq!(
            call(&env, &token, "Get-Mailbox", get.clone()).await.status,
            503
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        env.client.delete(&control).send().await.unwrap();
        assert_eq!(faults.pending(), 0);
        assert_eq!(call(&env, &token, "Get-Mailbox", get).await.status, 200);
    });
}

#[test]
fn throttling_answers_429_with_fractional_retry_after() {
    run(async {
        let env = private(|o| ExosimOptions {
            mailboxes: 3,
            // A token back every 2 s: the three calls land before one returns, however slow
            // the machine.
            throttle: Some(Throttle {
                per_second: 0.5,
                burst: 2,
            }),
            ..o
        })
        .await;
        let token = admin(&env).await;
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..3 {
            let r = call(&env, &token, "Get-AcceptedDomain", json!({})).await;
            statuses.push(r.status);
            last = Some(r);
        }
        assert_eq!(statuses, [200, 200, 429]);
        let r = last.unwrap();
        let retry: f64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(retry > 0.0 && retry <= 2.0, "{retry}");
        assert_eq!(r.header("rate-limit-limit"), Some("2"));
        assert_eq!(r.header("rate-limit-remaining"), Some("0"));
        tokio::time::sleep(Duration::from_secs_f64(retry + 0.05)).await;
        assert_eq!(
            call(&env, &token, "Get-AcceptedDomain", json!({}))
                .await
                .status,
            200
        );
    });
}

#[test]
fn strict_anchor_mode() {
    run(async {
        let env = private(|o| ExosimOptions { mailboxes: 3, ..o }).await;
        let token = admin(&env).await;
        env.exosim.exchange_faults().set_strict_anchor(true);
        let url = invoke_url(&env, DEMO_TENANT_ID);
        let get = body("Get-Mailbox", json!({}));
        let missing = post(&env, &url, Some(&token), &get, &[]).await.unwrap();
        assert_eq!(missing.status, 400);
        assert!(
            missing.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("X-AnchorMailbox")
        );
        let wrong = post(
            &env,
            &url,
            Some(&token),
            &get,
            &[("x-anchormailbox", "UPN:admin@fabrikam.com")],
        )
        .await
        .unwrap();
        assert_eq!(wrong.status, 400);
        let anchor =
            format!("APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{DEMO_TENANT_ID}");
        let ok = post(
            &env,
            &url,
            Some(&token),
            &get,
            &[("x-anchormailbox", &anchor), ("client-request-id", "3f1d")],
        )
        .await
        .unwrap();
        assert_eq!(ok.status, 200, "{}", ok.text);
        let record = env.exosim.exchange_log().pop().unwrap();
        assert_eq!(record.header("X-AnchorMailbox"), Some(anchor.as_str()));
        assert_eq!(record.header("client-request-id"), Some("3f1d"));
    });
}

#[test]
fn a_100k_mailbox_tenant_pages_through_completely() {
    run(async {
        let env = private(|o| ExosimOptions {
            mailboxes: 100_000,
            seed: 7,
            ..o
        })
        .await;
        assert_eq!(env.exosim.mailbox_count(DEMO_TENANT_ID), 100_000);
        let token = admin(&env).await;
        let url = format!("{}?$select=Guid", invoke_url(&env, DEMO_TENANT_ID));
        let (objects, pages) = all_pages(
            &env,
            &token,
            &url,
            &body("Get-Mailbox", json!({"ResultSize": "Unlimited"})),
            1000,
        )
        .await;
        assert_eq!(pages, 100);
        assert_eq!(objects.len(), 100_000);
        let mut guids: Vec<&str> = objects
            .iter()
            .map(|o| o["Guid"].as_str().unwrap())
            .collect();
        guids.sort_unstable();
        guids.dedup();
        assert_eq!(guids.len(), 100_000);
    });
}

#[test]
fn the_generator_is_deterministic_across_starts() {
    run(async {
        let a = private(|o| ExosimOptions {
            mailboxes: 40,
            seed: 5,
            ..o
        })
        .await;
        let b = private(|o| ExosimOptions {
            mailboxes: 40,
            seed: 5,
            ..o
        })
        .await;
        let (ta, tb) = (admin(&a).await, admin(&b).await);
        let list = |r: Exo| {
            r.values()
                .iter()
                .map(|m| {
                    (
                        m["Name"].clone(),
                        m["Guid"].clone(),
                        m["WhenCreated"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let ma = list(call(&a, &ta, "Get-Mailbox", json!({})).await);
        let mb = list(call(&b, &tb, "Get-Mailbox", json!({})).await);
        assert_eq!(ma.len(), 40);
        assert_eq!(ma, mb);
        let sa = call(
            &a,
            &ta,
            "Get-MailboxStatistics",
            json!({"Identity": ma[3].0}),
        )
        .await;
        let sb = call(
            &b,
            &tb,
            "Get-MailboxStatistics",
            json!({"Identity": mb[3].0}),
        )
        .await;
        assert_eq!(
            sa.values()[0]["TotalItemSize"],
            sb.values()[0]["TotalItemSize"]
        );
    });
}

#[test]
fn every_cmdlet_resolves_every_identity_form_through_one_resolver() {
    run(async {
        let env = private(|o| ExosimOptions {
            mailboxes: 10,
            seed: 7,
            ..o
        })
        .await;
        let token = admin(&env).await;
        let new = call(
            &env,
            &token,
            "New-Mailbox",
            json!({"Name": "Tenant Admin", "Alias": "admin"}),
        )
        .await;
        assert_eq!(new.status, 200, "{}", new.text);
        let found = call(&env, &token, "Get-Recipient", json!({"Identity": "admin"})).await;
        assert_eq!(found.status, 200, "{}", found.text);
        let admin = found.values()[0].clone();
        let field = |k: &str| {
            admin[k]
                .as_str()
                .unwrap_or_else(|| panic!("{k}: {admin}"))
                .to_owned()
        };
        let primary = field("PrimarySmtpAddress");
        assert_eq!(field("ExchangeObjectId"), field("Guid"));
        let forms = [
            format!("\u{3000}{primary} "),
            format!("SMTP:{}", primary.to_uppercase()),
            "admin@contoso.mail.onmicrosoft.com".to_owned(),
            "Tenant Admin".to_owned(),
            field("Guid"),
            field("ExchangeGuid"),
            field("ExternalDirectoryObjectId"),
            field("DistinguishedName"),
            field("LegacyExchangeDN"),
            "NAMPR00A001\\admin".to_owned(),
        ];
        for (i, form) in forms.iter().enumerate() {
            // A read, a write and a permission cmdlet take the same forms.
            let got = call(&env, &token, "Get-Mailbox", json!({"Identity": form})).await;
            assert_eq!(got.status, 200, "{form:?}: {}", got.text);
            assert_eq!(
                got.values()[0]["PrimarySmtpAddress"],
                primary.as_str(),
                "{form:?}"
            );
            let name = format!("Renamed {i}");
            let set = call(
                &env,
                &token,
                "Set-Mailbox",
                json!({"Identity": form, "DisplayName": name}),
            )
            .await;
            assert_eq!(set.status, 200, "{form:?}: {}", set.text);
            assert_eq!(
                env.exosim.mailbox(DEMO_TENANT_ID, "admin").unwrap()["DisplayName"],
                name.as_str()
            );
            let perms = call(
                &env,
                &token,
                "Get-MailboxPermission",
                json!({"Identity": form}),
            )
            .await;
            assert_eq!(perms.status, 200, "{form:?}: {}", perms.text);
        }
        // Wildcards where a listing Get- cmdlet takes them, and nowhere else.
        let listed = call(&env, &token, "Get-Recipient", json!({"Identity": "adm*"})).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        assert_eq!(listed.values().len(), 1);
        let set = call(
            &env,
            &token,
            "Set-Mailbox",
            json!({"Identity": "adm*", "DisplayName": "x"}),
        )
        .await;
        set.cmdlet_error(404, "NotFound", "ManagementObjectNotFoundException");
        // One identity, two recipients: Exchange's ambiguity error, nothing changed.
        let twin = call(
            &env,
            &token,
            "New-Mailbox",
            json!({"Name": "Twin Two", "Alias": "twin2", "DisplayName": "Tenant Admin"}),
        )
        .await;
        assert_eq!(twin.status, 200, "{}", twin.text);
        let set = call(
            &env,
            &token,
            "Set-Mailbox",
            json!({"Identity": "Tenant Admin", "DisplayName": "x"}),
        )
        .await;
        let [_, _, text] =
            set.cmdlet_error(400, "BadRequest", "ManagementObjectAmbiguousException");
        assert_eq!(
            text,
            "There are multiple recipients matching the identity \"Tenant Admin\". Please specify a unique value."
        );
        let log = env.exosim.exchange_log();
        assert_eq!(
            log.last().unwrap().identity.as_deref(),
            Some("Tenant Admin")
        );
    });
}
