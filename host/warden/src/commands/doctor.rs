//! `warden doctor`: configuration, credential, authority, token and claim checks, each with a
//! pass/fail and the fix. Stops at the first step that makes the rest meaningless.

use crate::auth_args::AuthArgs;
use crate::commands::token::{expectations, seconds_until};
use crate::output::{Format, checks_table, json_text};
use clap::Args;
use serde_json::json;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};
use warden_auth::config::{CredentialPlan, Environment};
use warden_auth::credential::CredentialKind;
use warden_auth::diagnose::{Check, Status, diagnose};
use warden_auth::transport::{HttpRequest, HttpTransport, Method, SendFailure};
use warden_auth::{AuthError, Credential};

/// Arguments of `warden doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    auth: AuthArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
    /// Skip the final check that runs Get-OrganizationConfig against Exchange Online.
    #[arg(long)]
    no_exchange: bool,
}

fn row(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix,
    }
}

/// Splits an error into a finding and a fix, for a table row.
fn failure(name: &'static str, error: &anyhow::Error) -> Check {
    match error.downcast_ref::<AuthError>() {
        Some(AuthError::Config { what, fix }) => {
            row(name, Status::Fail, what.clone(), Some(fix.clone()))
        }
        Some(AuthError::CredentialFile { path, reason, fix }) => row(
            name,
            Status::Fail,
            format!("{}: {reason}", path.display()),
            Some(fix.clone()),
        ),
        Some(AuthError::Entra(entra)) => {
            let hint = entra.hint();
            let detail = format!(
                "{} ({}, HTTP {}; trace_id {}, correlation_id {})",
                entra.description,
                entra.error,
                entra.status,
                entra.trace_id.as_deref().unwrap_or("-"),
                entra.correlation_id.as_deref().unwrap_or("-")
            );
            row(
                name,
                Status::Fail,
                detail,
                hint.map(|h| format!("{}: {}", h.meaning, h.fix)),
            )
        }
        _ => row(name, Status::Fail, format!("{error:#}"), None),
    }
}

/// Runs the subcommand.
pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let env = Environment::from_process();
    let checks = run_checks(&args.auth, &env, !args.no_exchange).await;
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    match args.output {
        Format::Json => println!(
            "{}",
            json_text(&json!({ "ok": ok, "checks": checks }), true)?
        ),
        Format::Text => {
            println!("{}", checks_table(&checks));
            println!(
                "{}",
                if ok {
                    "all checks passed"
                } else {
                    "some checks failed: apply the fixes above and run `warden doctor` again"
                }
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_checks(auth: &AuthArgs, env: &Environment, try_exchange: bool) -> Vec<Check> {
    let mut checks = Vec::new();
    let session = match auth.resolve(env) {
        Ok(session) => session,
        Err(error) => {
            checks.push(failure("configuration", &error));
            return checks;
        }
    };
    let s = &session.settings;
    let config = match (&session.config_path, &s.profile) {
        (Some(path), Some(profile)) => format!("{} (profile {profile})", path.display()),
        (Some(path), None) => format!("{} (no profile selected)", path.display()),
        (None, _) => "no config file; using flags and environment".into(),
    };
    checks.push(row("configuration", Status::Pass, config, None));
    if let Some(tenant) = &s.tenant {
        checks.push(row(
            "tenant",
            Status::Pass,
            format!("{} (from {})", tenant.value, tenant.source),
            None,
        ));
    }
    if let Some(client) = &s.client_id {
        checks.push(row(
            "client id",
            Status::Pass,
            format!("{} (from {})", client.value, client.source),
            None,
        ));
    }
    checks.push(row(
        "cloud",
        Status::Pass,
        format!(
            "{}: authority {} (from {}), resource {}",
            s.cloud.value,
            s.authority_host.value,
            s.authority_host.source,
            s.cloud.value.exchange_resource()
        ),
        None,
    ));

    let credential = match s.load_credential() {
        Ok(credential) => credential,
        Err(error) => {
            checks.push(failure("credential", &error.into()));
            return checks;
        }
    };
    checks.push(credential_check(
        &credential,
        &s.credential.value,
        &s.credential.source,
    ));

    if let Some(check) = authority_check(&credential, session.transport.as_ref()).await {
        let failed = check.status == Status::Fail;
        checks.push(check);
        if failed {
            return checks;
        }
    }

    let scope = s.exchange_scope();
    let provider = warden_auth::TokenProvider::new(credential, session.transport.clone());
    let token = match provider.get_token(&scope).await {
        Ok(token) => token,
        Err(error) => {
            checks.push(failure("token", &error.into()));
            return checks;
        }
    };
    checks.push(row(
        "token",
        Status::Pass,
        format!(
            "issued for {scope}, expires in {} s",
            seconds_until(token.expires_on)
        ),
        None,
    ));
    let diagnosis = diagnose(token.expose(), &expectations(s, &scope), SystemTime::now());
    let claims_ok = diagnosis.ok();
    checks.extend(diagnosis.checks);
    if try_exchange && claims_ok {
        let cmdlets = cmdlets_check(&session, &provider, env).await;
        let mut exchange = exchange_check(&session, provider, env).await;
        // RBAC for Applications may grant an app cmdlets without Get-OrganizationConfig: its
        // refusal then only warns, when the service listed what the app may run.
        if let Some(listed) = &cmdlets.1
            && exchange.status == Status::Fail
            && exchange.detail.contains("not allowed to call")
            && !listed.is_empty()
            && !warden_exchange::rest::module_file::may_run(listed, "Get-OrganizationConfig")
        {
            exchange.status = Status::Warn;
            exchange.fix = Some("the app's Exchange RBAC does not include Get-OrganizationConfig (the doctor's probe); the cmdlets it may run are listed above".into());
        }
        checks.push(cmdlets.0);
        checks.push(exchange);
    }
    checks
}

/// Asks Exchange which cmdlets the app's RBAC allows (the module's `EXOModuleFile` lookup),
/// and lists them. A failure only warns: the Get-OrganizationConfig probe that follows says
/// whether Exchange works at all.
async fn cmdlets_check(
    session: &crate::auth_args::Session,
    provider: &warden_auth::TokenProvider,
    env: &Environment,
) -> (Check, Option<Vec<String>>) {
    use warden_exchange::{ExchangeSettings, Transport};
    // The lookup is REST's: a profile that speaks Remote PowerShell (on-premises Exchange) has
    // no EXOModuleFile, and asking its URL over REST would fail a working setup.
    if let Ok(settings) = ExchangeSettings::resolve(&session.settings, None, env)
        && settings.transport.value == Transport::Rps
    {
        return (
            row(
                "cmdlets",
                Status::Skip,
                "the profile speaks Remote PowerShell, which has no EXOModuleFile lookup",
                Some(
                    "run Get-ManagementRoleAssignment over `warden invoke` to see the app's roles"
                        .into(),
                ),
            ),
            None,
        );
    }
    let attempt = async {
        let settings = ExchangeSettings::resolve(&session.settings, Some(Transport::Rest), env)?;
        let config = settings.rest_config()?;
        warden_exchange::rest::module_file::exported_cmdlets(
            &config,
            provider,
            session.transport.as_ref(),
        )
        .await
    };
    match tokio::time::timeout(Duration::from_secs(60), attempt).await {
        Ok(Ok(cmdlets)) => (
            row(
                "cmdlets",
                if cmdlets.is_empty() {
                    Status::Warn
                } else {
                    Status::Pass
                },
                listed_cmdlets(&cmdlets),
                cmdlets
                    .is_empty()
                    .then(|| warden_auth::diagnose::WIDS_FIX.to_owned()),
            ),
            Some(cmdlets),
        ),
        Ok(Err(error)) => (
            row(
                "cmdlets",
                Status::Warn,
                format!("Exchange did not list the cmdlets the app may run: {error}"),
                Some(warden_auth::diagnose::WIDS_FIX.to_owned()),
            ),
            None,
        ),
        Err(_) => (
            row(
                "cmdlets",
                Status::Warn,
                "Exchange did not list the cmdlets within 60 s",
                None,
            ),
            None,
        ),
    }
}

/// At most this many cmdlets are named in the `cmdlets` row; `--output json` holds the row too,
/// so the full list is `warden policy check --tenant`'s to use, not a table cell's.
const LISTED_CMDLETS: usize = 40;

/// The `cmdlets` row's finding: the count and the first [`LISTED_CMDLETS`] names, so the cell
/// wraps to a few lines rather than hundreds of names.
fn listed_cmdlets(cmdlets: &[String]) -> String {
    let shown = cmdlets.len().min(LISTED_CMDLETS);
    let mut text = format!(
        "the app's Exchange RBAC allows {} cmdlets: {}",
        cmdlets.len(),
        cmdlets[..shown].join(", ")
    );
    if cmdlets.len() > shown {
        text.push_str(&format!(
            ", and {} more (`warden policy check FILE --tenant NAME` checks a policy against them all)",
            cmdlets.len() - shown
        ));
    }
    text
}

/// Runs `Get-OrganizationConfig`, the cheapest read every admin role may make: proves the
/// token, the REST endpoint and Exchange RBAC work together.
async fn exchange_check(
    session: &crate::auth_args::Session,
    provider: warden_auth::TokenProvider,
    env: &Environment,
) -> Check {
    use warden_exchange::{ExchangeSettings, Invocation, Parameters, Transport};
    // The profile's own transport: a hybrid profile's URL is an on-premises RPS endpoint, and
    // a REST probe of it would fail a working setup.
    match ExchangeSettings::resolve(&session.settings, None, env) {
        Ok(settings) if settings.transport.value == Transport::Rps => {
            return row(
                "exchange",
                Status::Skip,
                "the profile speaks Remote PowerShell; this check speaks REST",
                Some("check it with `warden invoke Get-OrganizationConfig`".into()),
            );
        }
        _ => {}
    }
    let attempt = async {
        let settings = ExchangeSettings::resolve(&session.settings, Some(Transport::Rest), env)?;
        let exchange = warden_exchange::connect::rest_session(&settings, provider)?;
        let base = exchange.config().base_url.clone();
        let results = exchange
            .invoke(Invocation::new("Get-OrganizationConfig", Parameters::new()))
            .await?;
        Ok::<_, warden_exchange::ExchangeError>((base, results))
    };
    match tokio::time::timeout(Duration::from_secs(60), attempt).await {
        Ok(Ok((base, results))) => {
            let name = results
                .first()
                .and_then(|o| o.get("Name").or_else(|| o.get("Identity")))
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_owned();
            row(
                "exchange",
                Status::Pass,
                format!("{base} answered Get-OrganizationConfig (organization {name})"),
                None,
            )
        }
        Ok(Err(warden_exchange::ExchangeError::AccessDenied {
            status,
            message,
            explanation,
            ..
        })) => row(
            "exchange",
            Status::Fail,
            format!("HTTP {status}: {message}"),
            Some(explanation),
        ),
        Ok(Err(error)) => row(
            "exchange",
            Status::Fail,
            error.to_string(),
            Some("check WARDEN_EXCHANGE_URL / the cloud, and the network".into()),
        ),
        Err(_) => row(
            "exchange",
            Status::Fail,
            "Exchange did not answer within 60 s",
            Some("check the network and the Exchange URL".into()),
        ),
    }
}

fn credential_check(credential: &Credential, plan: &CredentialPlan, source: &str) -> Check {
    let CredentialKind::Certificate { key, algorithm } = &credential.kind else {
        let detail = match plan {
            CredentialPlan::Secret(from) => format!("client secret from {}", from.describe()),
            _ => format!("{} (from {source})", credential.kind.name()),
        };
        return row("credential", Status::Pass, detail, None);
    };
    let now = time::OffsetDateTime::now_utc();
    let detail = format!(
        "certificate {} (SHA-1 {}, {:?} assertions) from {}, valid until {}",
        key.subject,
        key.thumbprint_sha1_hex(),
        algorithm,
        key.source.display(),
        key.not_after.date()
    );
    if !key.is_valid_at(now) {
        return row(
            "credential",
            Status::Fail,
            format!("{detail}: the certificate is not valid now"),
            Some("create a new certificate, upload its public part to the app registration, and point warden at it".into()),
        );
    }
    if key.not_after - now < time::Duration::days(30) {
        return row(
            "credential",
            Status::Warn,
            format!("{detail}: expires within 30 days"),
            Some("plan the certificate's rotation now".into()),
        );
    }
    row("credential", Status::Pass, detail, None)
}

/// Fetches the tenant's OIDC discovery document: proves the authority is reachable over
/// trusted TLS and the tenant exists, before any secret is sent.
async fn authority_check(credential: &Credential, transport: &dyn HttpTransport) -> Option<Check> {
    credential.token_url()?;
    let url = format!(
        "{}/{}/v2.0/.well-known/openid-configuration",
        credential.authority_host, credential.tenant
    );
    let mut request = HttpRequest::new(Method::Get, url.clone());
    request
        .headers
        .push(("accept".into(), "application/json".into()));
    request.timeout = Duration::from_secs(20);
    let response = match transport.send(request).await {
        Ok(response) => response,
        Err(SendFailure::NotSent(reason) | SendFailure::Ambiguous(reason)) => {
            return Some(row(
                "authority",
                Status::Fail,
                format!("no response from {url}: {reason}"),
                Some("check the network, proxy and authority host; for a private CA set WARDEN_CA_FILE".into()),
            ));
        }
        Err(SendFailure::TimedOut) => {
            return Some(row(
                "authority",
                Status::Fail,
                format!("{url} did not answer within 20 s"),
                Some("check the network and authority host".into()),
            ));
        }
    };
    if response.status == 200 {
        let token_endpoint = serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| {
                v.get("token_endpoint")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
            });
        return Some(match token_endpoint {
            Some(endpoint) => row(
                "authority",
                Status::Pass,
                format!("tenant found; token endpoint {endpoint}"),
                None,
            ),
            None => row(
                "authority",
                Status::Fail,
                format!("{url} answered without a token_endpoint"),
                Some("the authority host is not an Entra ID authority".into()),
            ),
        });
    }
    Some(
        match warden_auth::endpoint::parse_entra_error(&response, &url) {
            Some(entra) => failure("authority", &AuthError::Entra(Box::new(entra)).into()),
            None => row(
                "authority",
                Status::Fail,
                format!("{url} answered HTTP {}", response.status),
                Some("check the authority host".into()),
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_cmdlet_list_is_cut_to_a_cell_that_wraps() {
        let many: Vec<String> = (0..900).map(|i| format!("Get-Thing{i}")).collect();
        let text = listed_cmdlets(&many);
        assert!(text.starts_with("the app's Exchange RBAC allows 900 cmdlets: Get-Thing0, "));
        assert!(text.contains("and 860 more"), "{text}");
        assert!(!text.contains("Get-Thing40,"), "{text}");
        assert!(text.len() < 1000, "{}", text.len());
        let few = listed_cmdlets(&["Get-Mailbox".into(), "Set-Mailbox".into()]);
        assert_eq!(
            few,
            "the app's Exchange RBAC allows 2 cmdlets: Get-Mailbox, Set-Mailbox"
        );
    }
}
