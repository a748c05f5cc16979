//! `warden token`: acquire an app-only token and print its diagnosis — never the token itself,
//! unless `--show-token` is given (with a warning on stderr).

use crate::auth_args::AuthArgs;
use crate::output::{Format, Layout, checks_table, escape, json_text};
use clap::Args;
use serde_json::json;
use std::process::ExitCode;
use std::time::SystemTime;
use warden_auth::config::Environment;
use warden_auth::diagnose::{Diagnosis, Expectations, diagnose};
use warden_auth::endpoint::scope_to_resource;

/// Arguments of `warden token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    auth: AuthArgs,
    /// Scope to request [default: the Exchange resource of the cloud + /.default].
    #[arg(long)]
    scope: Option<String>,
    /// Also print the raw access token on stdout. It grants admin access to the tenant: do not paste it anywhere.
    #[arg(long)]
    show_token: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// What to compare the token's claims with.
pub fn expectations(settings: &warden_auth::config::AuthSettings, scope: &str) -> Expectations {
    Expectations {
        tenant: settings.tenant.as_ref().map(|t| t.value.clone()),
        resource: Some(scope_to_resource(scope).to_owned()),
        client_id: settings.client_id.as_ref().map(|c| c.value.clone()),
    }
}

/// Seconds from now until `when` (negative when past).
pub fn seconds_until(when: SystemTime) -> i64 {
    match when.duration_since(SystemTime::now()) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Runs the subcommand.
pub async fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let env = Environment::from_process();
    let session = args.auth.resolve(&env)?;
    let scope = args
        .scope
        .clone()
        .unwrap_or_else(|| session.settings.exchange_scope());
    let provider = session.provider()?;
    let token = provider.get_token(&scope).await?;
    let diagnosis = diagnose(
        token.expose(),
        &expectations(&session.settings, &scope),
        SystemTime::now(),
    );
    let credential = provider.credential().kind.name();
    match args.output {
        Format::Json => {
            let document = json!({
                "scope": scope,
                "credential": credential,
                "credential_source": session.settings.credential.source,
                "authority": session.settings.authority_host.value,
                "expires_in": seconds_until(token.expires_on),
                "diagnosis": diagnosis,
            });
            println!("{}", json_text(&document, true)?);
        }
        Format::Text => print_text(
            &scope,
            credential,
            &session.settings.authority_host.value,
            seconds_until(token.expires_on),
            &diagnosis,
        ),
    }
    if args.show_token {
        eprintln!(
            "warning: the next line on stdout is a live access token with admin rights over the tenant; treat it like a password"
        );
        println!("{}", token.expose());
    }
    if diagnosis.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        let failed = diagnosis
            .checks
            .iter()
            .filter(|c| c.status == warden_auth::diagnose::Status::Fail)
            .count();
        eprintln!(
            "error: a token was issued, but Exchange Online would refuse it: {failed} check(s) failed (see the fixes above)"
        );
        Ok(ExitCode::FAILURE)
    }
}

fn print_text(
    scope: &str,
    credential: &str,
    authority: &str,
    expires_in: i64,
    diagnosis: &Diagnosis,
) {
    println!("token acquired for {scope}");
    println!("  credential: {credential}, from {authority}, expires in {expires_in} s");
    if diagnosis.decodable {
        let claim = |name: &str| {
            diagnosis
                .claims
                .get(name)
                .map(|v| v.to_string().trim_matches('"').to_owned())
                .unwrap_or_else(|| "-".into())
        };
        // The authority chose every claim: escaped.
        let claims = format!(
            "  claims: tid={} appid={} aud={} roles={} wids={}",
            claim("tid"),
            claim("appid"),
            claim("aud"),
            claim("roles"),
            claim("wids")
        );
        println!("{}", escape(&claims, Layout::Line));
    }
    println!("{}", checks_table(&diagnosis.checks));
}
