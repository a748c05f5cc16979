//! `warden policy`: check a policy file, explain whether a call would be allowed — by which
//! rule and why — or whether a person may run (and approve) a delegated task, without running
//! anything, draft a guest's grant (`init`) and re-pin it (`pin`).

mod draft;
mod init;
mod pin;
mod script_calls;
mod task;

use crate::output::{Format, Layout, escape, json_text};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use toml_edit::DocumentMut;
use warden_policy::{Declaration, Policy, Principal};
use warden_runtime::{PluginHost, PluginInfo};

/// Arguments of `warden policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Load a policy and report its roles, grants and deny rules; exit 1 with FILE:LINE: reason
    /// when it is not valid.
    Check(CheckArgs),
    /// Would this call be allowed (or, with --task and --person, may this person run the
    /// task)? Prints the deciding rule and why; exit 0 when allowed, 2 when refused, 1 on
    /// error. Runs nothing.
    Explain(ExplainArgs),
    /// Draft the least-privilege roles and grant for a plugin (from its manifest) or a script
    /// (from its calls), for review; printed, or added to a policy with --into.
    Init(init::InitArgs),
    /// Re-pin a guest's grant to its current sha256, say what its manifest changed since the
    /// last pin, and grant what it now declares in the roles drafted for it.
    Pin(pin::PinArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The policy file.
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
    /// With --tenant NAME: also ask that tenant's Exchange which cmdlets the app may run, and
    /// warn about granted cmdlets outside them (the exit code is unchanged).
    #[command(flatten)]
    auth: crate::auth_args::AuthArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("principal").required(true).args(["plugin", "script", "inline", "task"])))]
struct ExplainArgs {
    /// The policy file.
    #[arg(long)]
    policy: PathBuf,
    /// A plugin, by the name its grant uses (give --sha256 or --component too).
    #[arg(long, value_name = "NAME")]
    plugin: Option<String>,
    /// The plugin component's SHA-256 (hex).
    #[arg(
        long,
        value_name = "HEX",
        requires = "plugin",
        conflicts_with = "component"
    )]
    sha256: Option<String>,
    /// The plugin component (.wasm); its SHA-256 is computed.
    #[arg(long, value_name = "FILE", requires = "plugin")]
    component: Option<PathBuf>,
    /// A script file; its SHA-256 is computed.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// An inline one-liner, as `warden eval` would get it.
    #[arg(long, value_name = "SOURCE")]
    inline: Option<String>,
    /// The plugin's declaration manifest (TOML, or JSON when it ends in .json).
    #[arg(long, value_name = "MANIFEST")]
    declared: Option<PathBuf>,
    /// A delegated task (a `[[task]]` id): may --person run it, and approve others' runs?
    #[arg(long, value_name = "ID", requires = "person", conflicts_with_all = ["cmdlet", "params", "declared"])]
    task: Option<String>,
    /// Who asks about --task: user:UPN or user:OBJECT-ID.
    #[arg(long, value_name = "user:UPN", requires = "task")]
    person: Option<String>,
    /// A group the person is in, by display name or object id (repeatable).
    #[arg(long = "group", value_name = "NAME|OBJECT-ID", requires = "task")]
    groups: Vec<String>,
    /// An app role the person holds for the service (repeatable).
    #[arg(long = "role", value_name = "VALUE", requires = "task")]
    roles: Vec<String>,
    /// The cmdlet, e.g. Set-Mailbox.
    #[arg(required_unless_present = "task")]
    cmdlet: Option<String>,
    /// A parameter as NAME=VALUE; VALUE is JSON when it parses as JSON (10, true, ["a"]), else a
    /// string. Repeatable. Duplicates are passed on, so the policy's refusal can be seen.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Runs the subcommand.
pub async fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PolicyCommand::Check(args) => check(args).await,
        PolicyCommand::Explain(args) => explain(args),
        PolicyCommand::Init(args) => init::init(args),
        PolicyCommand::Pin(args) => pin::pin(args),
    }
}

/// A guest as `init` and `pin` read it.
enum Guest {
    Plugin(Box<PluginInfo>),
    Script {
        path: PathBuf,
        source: String,
        sha256: String,
    },
}

impl Guest {
    /// How messages name it.
    fn label(&self) -> String {
        match self {
            Guest::Plugin(info) => format!("plugin {}", info.name),
            Guest::Script { path, .. } => format!("script {}", path.display()),
        }
    }

    /// The name its roles and grant are drafted under.
    fn name(&self) -> String {
        match self {
            Guest::Plugin(info) => info.name.clone(),
            Guest::Script { path, .. } => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    fn sha256(&self) -> &str {
        match self {
            Guest::Plugin(info) => &info.sha256,
            Guest::Script { sha256, .. } => sha256,
        }
    }
}

/// Reads a plugin (any file not ending in `.rhai`) or a script, without running it.
fn read_guest(path: &Path) -> anyhow::Result<Guest> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "{}: cannot be read\n  fix: check the path and its permissions",
            shown(&path.display().to_string())
        )
    })?;
    if path.extension().is_some_and(|e| e == "rhai") {
        let sha256 = warden_policy::sha256_hex(&bytes);
        let source = String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "{}: the script is not UTF-8 text",
                shown(&path.display().to_string())
            )
        })?;
        return Ok(Guest::Script {
            path: path.to_owned(),
            source,
            sha256,
        });
    }
    let info = PluginHost::inspect(&path.display().to_string(), &bytes)
        .map_err(crate::guest_args::runtime_error)?;
    Ok(Guest::Plugin(Box::new(info)))
}

/// The index of the `[[grant]]` in `doc` (a policy at `origin`) that names `guest`.
fn grant_index(doc: &DocumentMut, guest: &Guest, origin: &Path) -> Option<usize> {
    let grants = doc.get("grant")?.as_array_of_tables()?;
    let base = origin.parent().unwrap_or(Path::new("."));
    grants.iter().position(|g| match guest {
        Guest::Plugin(info) => g.get("plugin").and_then(|p| p.as_str()) == Some(&info.name),
        Guest::Script { path, .. } => g
            .get("script")
            .and_then(|p| p.as_str())
            .is_some_and(|p| same_file(&base.join(p), path)),
    })
}

/// The id of the grant in `doc` that names `guest`, if one does.
fn granting(doc: &DocumentMut, guest: &Guest, origin: &Path) -> Option<String> {
    let index = grant_index(doc, guest, origin)?;
    let grant = doc.get("grant")?.as_array_of_tables()?.get(index)?;
    Some(
        grant
            .get("id")
            .and_then(|i| i.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| guest.name()),
    )
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Replaces the policy file whole (a temporary file beside it, then a rename), so a reader
/// never sees half of it.
fn write_policy(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let name = || shown(&path.display().to_string()).into_owned();
    // A policy kept behind a symlink (config management) is written where the link points,
    // keeping the link; the new file keeps the old one's permissions, so a service that reads
    // a 0644 policy can still read it after an operator's `pin`.
    let target = match std::fs::canonicalize(path) {
        Ok(target) => target,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => anyhow::bail!("{}: cannot resolve it: {e}", name()),
    };
    let permissions = std::fs::metadata(&target).ok().map(|m| m.permissions());
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing beside {}", name()))?;
    file.write_all(text.as_bytes())?;
    if let Some(permissions) = permissions {
        file.as_file().set_permissions(permissions)?;
    }
    file.as_file().sync_all()?;
    file.persist(&target)
        .map_err(|e| anyhow::anyhow!("{}: cannot write it: {}", name(), e.error))?;
    Ok(())
}

/// Legal but suspicious names: cmdlets no Exchange warden knows has, each with the closest
/// known name. Warnings only: the policy still allows (or denies) what it names.
fn lint(policy: &Policy) -> Vec<String> {
    let summary = policy.summary();
    let named = summary
        .roles
        .iter()
        .flat_map(|r| {
            r.cmdlets
                .iter()
                .map(move |c| (format!("role {}", r.name), c))
        })
        .chain(summary.deny.iter().map(|d| (d.rule.clone(), &d.cmdlet)));
    named
        .filter(|(_, cmdlet)| !warden_policy::known::is_known_cmdlet(cmdlet))
        .map(|(place, cmdlet)| {
            let hint = warden_policy::known::closest(
                cmdlet,
                warden_policy::known::KNOWN_CMDLETS.iter().copied(),
            )
            .map(|near| format!("; did you mean {near}?"))
            .unwrap_or_default();
            format!(
                "{place} names {cmdlet}, which is not an Exchange cmdlet warden knows{hint} (a \
                 typo is never called; if the cmdlet is real, ignore this)"
            )
        })
        .collect()
}

fn load(path: &Path) -> anyhow::Result<Policy> {
    Policy::load(path).map_err(crate::guest_args::policy_error)
}

/// Policy text (descriptions, ids, paths, reasons quoting a guest's names) on one terminal line.
fn shown(text: &str) -> Cow<'_, str> {
    escape(text, Layout::Line)
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let policy = load(&args.file)?;
    let mut summary = policy.summary();
    summary.warnings.extend(lint(&policy));
    if let Some(tenant) = args.auth.profile.clone() {
        summary
            .warnings
            .extend(beyond_the_apps_rbac(&args.auth, &tenant, &summary).await);
    }
    match args.output {
        Format::Json => println!("{}", json_text(&summary, true)?),
        Format::Text => {
            println!(
                "{}: valid (version {})",
                shown(&summary.origin),
                warden_policy::POLICY_VERSION
            );
            println!("roles ({}):", summary.roles.len());
            for role in &summary.roles {
                let about = role
                    .description
                    .as_deref()
                    .map(|d| format!(" — {}", shown(d)))
                    .unwrap_or_default();
                println!("  {}{about}", shown(&role.name));
                for cmdlet in &role.cmdlets {
                    println!("    {}", shown(cmdlet));
                }
            }
            println!("grants ({}):", summary.grants.len());
            for g in &summary.grants {
                let b = &g.budgets;
                let tenants = g
                    .tenants
                    .as_deref()
                    .map(|t| format!("; tenants {}", shown(t)))
                    .unwrap_or_default();
                println!(
                    "  {} (line {}): {} → roles {}; budgets: calls {}, writes {}, objects {}, output {} B, wall clock {} s, memory {} MiB, cpu {} s{tenants}",
                    shown(&g.id),
                    g.line,
                    shown(&g.principal),
                    shown(&g.roles.join(", ")),
                    b.calls,
                    b.writes,
                    b.objects,
                    b.output_bytes,
                    b.wall_clock.as_secs(),
                    b.memory_bytes / (1024 * 1024),
                    b.cpu.as_secs()
                );
            }
            println!("deny rules ({}):", summary.deny.len());
            for d in &summary.deny {
                let with = d
                    .parameter
                    .as_deref()
                    .map(|p| format!(" with {}", shown(p)))
                    .unwrap_or_default();
                println!("  {} (line {}): {}{with}", d.rule, d.line, shown(&d.cmdlet));
            }
            task::print_tasks(&summary.tasks);
            for w in &summary.warnings {
                eprintln!("warning: {}", shown(w));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Granted cmdlets the app of profile `tenant` may not run, as Exchange lists what it may run
/// (the module's `EXOModuleFile` lookup); or why the list could not be had. Warnings only.
async fn beyond_the_apps_rbac(
    auth: &crate::auth_args::AuthArgs,
    tenant: &str,
    summary: &warden_policy::PolicySummary,
) -> Vec<String> {
    let env = warden_auth::config::Environment::from_process();
    let listed = async {
        let session = auth.resolve(&env)?;
        let settings = warden_exchange::ExchangeSettings::resolve(
            &session.settings,
            Some(warden_exchange::Transport::Rest),
            &env,
        )?;
        let config = settings.rest_config()?;
        let provider = session.provider()?;
        Ok::<_, anyhow::Error>(
            warden_exchange::rest::module_file::exported_cmdlets(
                &config,
                &provider,
                session.transport.as_ref(),
            )
            .await?,
        )
    };
    let exported = match listed.await {
        Ok(exported) => exported,
        Err(error) => {
            return vec![format!(
                "could not ask tenant {tenant}'s Exchange which cmdlets the app may run: {error:#}"
            )];
        }
    };
    let mut warnings = Vec::new();
    for grant in &summary.grants {
        for role in summary
            .roles
            .iter()
            .filter(|r| grant.roles.contains(&r.name))
        {
            for cmdlet in &role.cmdlets {
                if !warden_exchange::rest::module_file::may_run(&exported, cmdlet) {
                    warnings.push(format!(
                        "grant {} (role {}) allows {cmdlet}, which the app's Exchange RBAC in tenant {tenant} does not let it run: Exchange will refuse those calls (\"not allowed to call\"); give the app a role that includes it, or drop it from the role",
                        grant.id, role.name
                    ));
                }
            }
        }
    }
    warnings
}

/// Builds the parameter JSON text from NAME=VALUE pairs, keeping duplicates so the policy's
/// strict parser judges them exactly as it would a guest's.
fn parameters_json(raw: &[String]) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for item in raw {
        let Some((name, value)) = item.split_once('=') else {
            bail!(
                "parameter '{item}' is not NAME=VALUE\n  fix: {}",
                super::invoke::PARAM_FIX
            )
        };
        let value = serde_json::from_str::<Value>(value)
            .unwrap_or_else(|_| Value::String(value.to_owned()));
        parts.push(format!("{}:{value}", Value::String(name.to_owned())));
    }
    Ok(format!("{{{}}}", parts.join(",")))
}

fn principal(args: &ExplainArgs, policy: &warden_policy::Policy) -> anyhow::Result<Principal> {
    if let Some(name) = &args.plugin {
        return match (&args.sha256, &args.component) {
            (Some(hex), None) => Ok(Principal::Plugin {
                name: name.clone(),
                sha256: hex.to_ascii_lowercase(),
                signature: None,
            }),
            // The component (and its .sig) is judged as a run judges it, signature included.
            (None, Some(file)) => {
                let shown = escape(&file.display().to_string(), Layout::Line).into_owned();
                let bytes = std::fs::read(file).with_context(|| format!("reading {shown}"))?;
                let info = warden_runtime::PluginHost::inspect(&shown, &bytes)
                    .map_err(crate::guest_args::runtime_error)?;
                let detached = warden_runtime::read_detached_signature(file)
                    .map_err(crate::guest_args::runtime_error)?;
                let mut principal =
                    warden_runtime::plugin_principal(&info, &bytes, detached.as_deref(), policy);
                // Asked under another name: that name is not the signed one.
                if let Principal::Plugin {
                    name: n, signature, ..
                } = &mut principal
                    && n != name
                {
                    *n = name.clone();
                    if let Some(signature) = signature {
                        signature.name_signed = false;
                    }
                }
                Ok(principal)
            }
            _ => bail!("--plugin needs --sha256 HEX or --component FILE"),
        };
    }
    if let Some(file) = &args.script {
        let source = std::fs::read(file).with_context(|| {
            format!(
                "reading {}",
                escape(&file.display().to_string(), Layout::Line)
            )
        })?;
        return Ok(Principal::script_file(file.clone(), &source));
    }
    match &args.inline {
        Some(source) => Ok(Principal::inline_script(source)),
        None => bail!("give --plugin, --script or --inline"),
    }
}

fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let policy = load(&args.policy)?;
    if let (Some(task), Some(person)) = (&args.task, &args.person) {
        return task::explain(
            &policy,
            task,
            person,
            &args.groups,
            &args.roles,
            args.output,
        );
    }
    let cmdlet = args.cmdlet.clone().unwrap_or_default();
    let principal = principal(&args, &policy)?;
    let declared =
        match &args.declared {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "reading {}",
                        escape(&path.display().to_string(), Layout::Line)
                    )
                })?;
                let parsed = if path.extension().is_some_and(|e| e == "json") {
                    Declaration::from_json_str(&text)
                } else {
                    Declaration::from_toml_str(&text)
                };
                Some(parsed.with_context(|| {
                    escape(&path.display().to_string(), Layout::Line).into_owned()
                })?)
            }
            None => None,
        };
    let parameters = parameters_json(&args.params)?;
    let (allowed, rule, reason, grant_id, refused_value, decision, endpoint) =
        match policy.grant_for_any_tenant(&principal, declared.as_ref()) {
            Err(denial) => (false, denial.rule, denial.reason, None, None, None, None),
            Ok(grant) => {
                let d = grant.check(&cmdlet, &parameters);
                let endpoint = grant.endpoint_for(&d).ok();
                (
                    d.allowed,
                    d.rule.clone(),
                    d.reason.clone(),
                    Some(grant.id().to_owned()),
                    // The operator's view: the value refused, unless it is sensitive.
                    grant.refused_value(&d),
                    Some(d),
                    endpoint,
                )
            }
        };
    // What the call would send, sensitive values hidden: an explanation is for reading over a
    // shoulder or pasting in a ticket.
    let sent = decision
        .as_ref()
        .map(|d| Value::Object(shown_parameters(d)));
    match args.output {
        Format::Json => {
            let doc = json!({
                "allowed": allowed,
                "rule": rule,
                "reason": reason,
                "principal": principal,
                "grant": grant_id,
                "cmdlet": decision.as_ref().map(|d| d.cmdlet.clone()).unwrap_or(cmdlet.clone()),
                "parameters": sent,
                "endpoint": endpoint,
                "sensitive": decision.as_ref().map(|d| d.sensitive.clone()),
                "write": decision.as_ref().map(|d| d.write),
                "refused_value": refused_value,
            });
            println!("{}", json_text(&doc, true)?);
        }
        Format::Text => {
            println!(
                "{}: {}",
                if allowed { "ALLOWED" } else { "DENIED" },
                shown(&cmdlet)
            );
            println!("principal: {}", shown(&principal.to_string()));
            if let Some(id) = &grant_id {
                println!("grant:     {}", shown(id));
            }
            println!("rule:      {}", shown(&rule));
            println!("why:       {}", shown(&reason));
            if let Some(detail) = &refused_value {
                println!("value:     {}", shown(detail));
            }
            if let Some(endpoint) = endpoint {
                println!("endpoint:  {endpoint}");
            }
            if let (Some(d), Some(sent)) = (decision.as_ref().filter(|d| d.allowed), &sent) {
                println!(
                    "sent as:   {} {}",
                    shown(&d.cmdlet),
                    json_text(sent, false)?
                );
            }
        }
    }
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// What a decision sends, each sensitive value replaced by a marker: those the policy marks,
/// those the audit hashes by name, and SecureString parameters by the broker's rule
/// (`warden_vocab::secure_parameter_named`, prefixes included).
fn shown_parameters(decision: &warden_policy::Decision) -> serde_json::Map<String, Value> {
    decision
        .parameters
        .iter()
        .map(|(name, value)| {
            let sensitive = decision
                .sensitive
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
                || warden_vocab::names::sensitive_by_name(name)
                || warden_vocab::secure_parameter_named(&decision.cmdlet, name).is_some();
            let value = if sensitive {
                Value::String(SENSITIVE_MARKER.to_owned())
            } else {
                value.clone()
            };
            (name.clone(), value)
        })
        .collect()
}

/// Shown instead of a sensitive value.
const SENSITIVE_MARKER: &str = "(sensitive: not shown)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_keep_duplicates_and_parse_json_values() {
        let json = parameters_json(&["A=1".into(), "B=x y".into(), "a=[\"q\"]".into()]).unwrap();
        assert_eq!(json, r#"{"A":1,"B":"x y","a":["q"]}"#);
        assert!(parameters_json(&["nope".into()]).is_err());
    }
}
