//! The Security & Compliance cmdlets exosim serves, with state per tenant (in memory: the state
//! file holds Exchange only), and who may call them.
//!
//! Object shapes follow the cmdlet reference (MicrosoftDocs/office-docs-powershell
//! `exchange/exchange-ps/ExchangePowerShell/New-ComplianceSearch.md`, `Start-ComplianceSearch.md`,
//! `New-ComplianceSearchAction.md`, `Get-DlpCompliancePolicy.md`,
//! `Get-RetentionCompliancePolicy.md`), reduced to the properties those pages name. The item
//! counts a search finds are our invention (seven per mailbox searched): no tenant is reachable.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use crate::exchange::cmdlets::ExoError;
use crate::exchange::lock;
use crate::state::Shared;

use super::ExchangeRegion;

/// One cmdlet: its name and the parameters it binds.
#[derive(Debug)]
pub(crate) struct Spec {
    pub name: &'static str,
    parameters: &'static [&'static str],
}

const SPECS: &[Spec] = &[
    Spec {
        name: "Get-ComplianceSearch",
        parameters: &["Identity", "ResultSize"],
    },
    Spec {
        name: "New-ComplianceSearch",
        parameters: &[
            "Name",
            "ExchangeLocation",
            "ContentMatchQuery",
            "Description",
            "Confirm",
        ],
    },
    Spec {
        name: "Start-ComplianceSearch",
        parameters: &["Identity", "Confirm"],
    },
    Spec {
        name: "Get-ComplianceSearchAction",
        parameters: &["Identity"],
    },
    Spec {
        name: "New-ComplianceSearchAction",
        parameters: &["SearchName", "Purge", "PurgeType", "Confirm"],
    },
    Spec {
        name: "Get-DlpCompliancePolicy",
        parameters: &["Identity"],
    },
    Spec {
        name: "Get-RetentionCompliancePolicy",
        parameters: &["Identity"],
    },
];

/// A compliance cmdlet by name (case-insensitive).
pub(crate) fn find(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// What a directory role may call in Security & Compliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Every compliance cmdlet.
    All,
    /// `Get-*` only.
    ReadOnly,
}

impl Access {
    pub(crate) fn allows(self, cmdlet: &str) -> bool {
        match self {
            Access::All => true,
            Access::ReadOnly => crate::exchange::cmdlets::is_read(cmdlet),
        }
    }
}

/// The roles DOC-APPONLY supports for Security & Compliance (docs/protocol/exo-protocol.md
/// §3.2 table: Global Administrator, Compliance Administrator, Security Administrator, Security
/// Reader, Global Reader; Exchange's own roles are not among them). Which cmdlets each reader
/// may run is our least-privilege assumption: `Get-*`.
const RBAC: &[(&str, Access)] = &[
    ("62e90394-69f5-4237-9190-012177145e10", Access::All),
    (super::COMPLIANCE_ADMINISTRATOR_ROLE, Access::All),
    ("194ae4cb-b126-40b2-bd5b-6091b380977d", Access::All),
    ("5d6b6bb7-de71-4623-b4af-96380a352509", Access::ReadOnly),
    ("f2ef992c-3afb-46b9-b7cf-a126ee74c451", Access::ReadOnly),
];

/// The compliance access the roles in `wids` give.
pub(crate) fn access(wids: &[String]) -> Vec<Access> {
    wids.iter()
        .filter_map(|w| {
            RBAC.iter()
                .find(|(id, _)| id.eq_ignore_ascii_case(w))
                .map(|r| r.1)
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Search {
    identity: String,
    name: String,
    query: String,
    locations: Vec<String>,
    description: String,
    status: &'static str,
    items: u64,
    created: String,
}

#[derive(Debug, Clone)]
struct Action {
    identity: String,
    name: String,
    search: String,
    purge_type: String,
    created: String,
}

#[derive(Debug, Default)]
struct Tenant {
    searches: Vec<Search>,
    actions: Vec<Action>,
}

/// The Security & Compliance state of one emulator.
#[derive(Debug)]
pub(crate) struct Compliance {
    tenants: Mutex<HashMap<String, Tenant>>,
    /// How Exchange's front door treats regional hosts ([`ExchangeRegion`]).
    pub exchange_region: ExchangeRegion,
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn param<'a>(params: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn text(params: &Map<String, Value>, name: &str) -> Option<String> {
    param(params, name)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn bad(error_id: &str, class: &'static str, message: String) -> ExoError {
    ExoError {
        status: 400,
        code: "BadRequest",
        error_id: error_id.to_owned(),
        class,
        text: message,
    }
}

fn not_found(what: &str, identity: &str) -> ExoError {
    ExoError {
        status: 404,
        code: "NotFound",
        error_id: "3C4B2D5".to_owned(),
        class: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        text: format!(
            "The operation couldn't be performed because object '{identity}' couldn't be found on '{what}'."
        ),
    }
}

const PBE: &str = "System.Management.Automation.ParameterBindingException";
const TASK: &str = "Microsoft.Office.ComplianceJob.Tasks.ComplianceJobTaskException";

fn search_object(s: &Search) -> Map<String, Value> {
    json!({
        "Identity": s.identity,
        "Name": s.name,
        "Description": s.description,
        "ContentMatchQuery": s.query,
        "ExchangeLocation": s.locations,
        "Status": s.status,
        "Items": s.items,
        "CreatedTime": s.created,
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

fn action_object(a: &Action) -> Map<String, Value> {
    json!({
        "Identity": a.identity,
        "Name": a.name,
        "SearchName": a.search,
        "Action": "Purge",
        "PurgeType": a.purge_type,
        "Status": "Completed",
        "CreatedTime": a.created,
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// The seeded DLP and retention policies every tenant has.
fn policies(cmdlet: &str) -> Vec<Map<String, Value>> {
    let rows = if cmdlet == "Get-DlpCompliancePolicy" {
        json!([
            {"Name": "U.S. Financial Data", "Mode": "Enable", "Workload": "Exchange, SharePoint, OneDriveForBusiness", "Enabled": true, "Priority": 0},
            {"Name": "GDPR Enhanced", "Mode": "TestWithNotifications", "Workload": "Exchange", "Enabled": true, "Priority": 1}
        ])
    } else {
        json!([
            {"Name": "Mailboxes - keep 7 years", "Enabled": true, "Workload": "Exchange", "ExchangeLocation": ["All"], "Mode": "Enforce"},
            {"Name": "Teams chats - keep 1 year", "Enabled": false, "Workload": "Skype", "ExchangeLocation": [], "Mode": "Enforce"}
        ])
    };
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_object().cloned())
        .collect()
}

impl Compliance {
    pub(crate) fn new(exchange_region: ExchangeRegion) -> Self {
        Self {
            tenants: Mutex::new(HashMap::new()),
            exchange_region,
        }
    }

    /// Runs `spec` for `tenant_id`: its result rows and whether state changed.
    pub(crate) fn run(
        &self,
        shared: &Shared,
        tenant_id: &str,
        spec: &Spec,
        params: &Map<String, Value>,
    ) -> Result<(Vec<Map<String, Value>>, bool), ExoError> {
        if let Some((name, _)) = params
            .iter()
            .filter(|(k, _)| !k.contains('@'))
            .find(|(k, _)| !spec.parameters.iter().any(|p| p.eq_ignore_ascii_case(k)))
        {
            return Err(bad(
                "NamedParameterNotFound",
                PBE,
                format!("A parameter cannot be found that matches parameter name '{name}'."),
            ));
        }
        let mut tenants = lock(&self.tenants);
        let tenant = tenants.entry(tenant_id.to_owned()).or_default();
        let identity = text(params, "Identity");
        match spec.name {
            "Get-ComplianceSearch" => {
                let rows: Vec<_> = tenant
                    .searches
                    .iter()
                    .filter(|s| {
                        identity
                            .as_ref()
                            .is_none_or(|i| s.name.eq_ignore_ascii_case(i))
                    })
                    .map(search_object)
                    .collect();
                match identity {
                    Some(i) if rows.is_empty() => Err(not_found("ComplianceSearch", &i)),
                    _ => Ok((rows, false)),
                }
            }
            "New-ComplianceSearch" => {
                let name = text(params, "Name").ok_or_else(|| {
                    bad(
                        "MissingMandatoryParameter",
                        PBE,
                        "Cannot process command because of one or more missing mandatory parameters: Name.".into(),
                    )
                })?;
                if tenant
                    .searches
                    .iter()
                    .any(|s| s.name.eq_ignore_ascii_case(&name))
                {
                    return Err(bad(
                        "ComplianceSearchAlreadyExists",
                        TASK,
                        format!("A compliance search with the name \"{name}\" already exists."),
                    ));
                }
                let locations = match param(params, "ExchangeLocation") {
                    None => Vec::new(),
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                    Some(_) => {
                        return Err(bad(
                            "ParameterArgumentTransformationError",
                            PBE,
                            "Cannot bind parameter 'ExchangeLocation': expected a string or a list of strings.".into(),
                        ));
                    }
                };
                let search = Search {
                    identity: uuid::Uuid::new_v4().to_string(),
                    name,
                    query: text(params, "ContentMatchQuery").unwrap_or_default(),
                    locations,
                    description: text(params, "Description").unwrap_or_default(),
                    status: "NotStarted",
                    items: 0,
                    created: now(),
                };
                let row = search_object(&search);
                tenant.searches.push(search);
                Ok((vec![row], true))
            }
            "Start-ComplianceSearch" => {
                let i = identity.unwrap_or_default();
                let searched = {
                    let Some(search) = tenant
                        .searches
                        .iter()
                        .find(|s| s.name.eq_ignore_ascii_case(&i))
                    else {
                        return Err(not_found("ComplianceSearch", &i));
                    };
                    search.locations.clone()
                };
                drop(tenants);
                // Seven items per mailbox searched: "All" is every mailbox of the tenant.
                let mailboxes = if searched.iter().any(|l| l.eq_ignore_ascii_case("All")) {
                    shared.exchange.mailbox_count(shared, tenant_id)
                } else {
                    searched
                        .iter()
                        .filter(|l| shared.exchange.mailbox(shared, tenant_id, l).is_some())
                        .count()
                };
                let mut tenants = lock(&self.tenants);
                let tenant = tenants.entry(tenant_id.to_owned()).or_default();
                if let Some(search) = tenant
                    .searches
                    .iter_mut()
                    .find(|s| s.name.eq_ignore_ascii_case(&i))
                {
                    search.status = "Completed";
                    search.items = 7 * mailboxes as u64;
                }
                Ok((Vec::new(), true))
            }
            "Get-ComplianceSearchAction" => {
                let rows: Vec<_> = tenant
                    .actions
                    .iter()
                    .filter(|a| {
                        identity
                            .as_ref()
                            .is_none_or(|i| a.name.eq_ignore_ascii_case(i))
                    })
                    .map(action_object)
                    .collect();
                match identity {
                    Some(i) if rows.is_empty() => Err(not_found("ComplianceSearchAction", &i)),
                    _ => Ok((rows, false)),
                }
            }
            "New-ComplianceSearchAction" => {
                let search = text(params, "SearchName").unwrap_or_default();
                if param(params, "Purge") != Some(&Value::Bool(true)) {
                    return Err(bad(
                        "ActionNotSupported",
                        TASK,
                        "exosim serves the Purge action only: pass -Purge.".into(),
                    ));
                }
                let purge_type = text(params, "PurgeType").unwrap_or_else(|| "SoftDelete".into());
                if purge_type != "SoftDelete" && purge_type != "HardDelete" {
                    return Err(bad(
                        "ParameterArgumentValidationError",
                        PBE,
                        format!(
                            "Cannot validate argument on parameter 'PurgeType'. '{purge_type}' is not SoftDelete or HardDelete."
                        ),
                    ));
                }
                let Some(found) = tenant
                    .searches
                    .iter()
                    .find(|s| s.name.eq_ignore_ascii_case(&search))
                else {
                    return Err(not_found("ComplianceSearch", &search));
                };
                if found.status != "Completed" {
                    return Err(bad(
                        "SearchNotCompleted",
                        TASK,
                        format!(
                            "The search \"{}\" hasn't completed. Run Start-ComplianceSearch and wait for it to complete.",
                            found.name
                        ),
                    ));
                }
                let action = Action {
                    identity: uuid::Uuid::new_v4().to_string(),
                    name: format!("{}_Purge", found.name),
                    search: found.name.clone(),
                    purge_type,
                    created: now(),
                };
                let row = action_object(&action);
                tenant.actions.push(action);
                Ok((vec![row], true))
            }
            policy => {
                let rows: Vec<_> = policies(policy)
                    .into_iter()
                    .filter(|p| {
                        identity.as_ref().is_none_or(|i| {
                            p.get("Name")
                                .and_then(Value::as_str)
                                .is_some_and(|n| n.eq_ignore_ascii_case(i))
                        })
                    })
                    .collect();
                match identity {
                    Some(i) if rows.is_empty() => Err(not_found(policy, &i)),
                    _ => Ok((rows, false)),
                }
            }
        }
    }
}
