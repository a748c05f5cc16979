//! One way to connect: [`ExchangeSettings`] (which transport, where, from which source) and
//! [`connect`], the one constructor of a [`CmdletRunner`] the CLI, the demo, the tests and the
//! benchmarks use.
//!
//! It refuses Remote PowerShell aimed at Exchange Online itself ([`crate::rps::RETIRED`]), and
//! names the source (flag, profile table, environment variable) of a value that is wrong.

use crate::cloud::HostSuffixes;
use crate::error::{ExchangeError, Result};
use crate::rest::{EndpointRunner, compliance_base};
use crate::rest::{RestSession, SessionConfig};
use crate::rps::{RpsConfig, RpsSession};
use crate::runner::CmdletRunner;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use warden_auth::config::{AuthSettings, Environment, Sourced};
use warden_auth::{Cloud, TokenProvider};

/// The two ways to run a cmdlet; the broker and guests cannot tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `POST …/adminapi/beta/{tenant}/InvokeCommand`.
    Rest,
    /// WS-Management + PSRP to `/PowerShell-LiveID` (or an on-premises `/PowerShell`).
    Rps,
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rest" => Ok(Self::Rest),
            "rps" | "winrm" => Ok(Self::Rps),
            _ => Err(format!("unknown transport '{s}'; use rest or rps")),
        }
    }
}

/// A profile's `[tenants.NAME.exchange]` table: which transport runs cmdlets and where.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeProfile {
    /// `rest` (the default) or `rps` (WinRM Remote PowerShell).
    pub transport: Option<String>,
    /// The Exchange base URL instead of the cloud's (an emulator, an on-premises server; for
    /// `rps`, a path such as `/PowerShell` replaces `/PowerShell-LiveID`).
    pub url: Option<String>,
    /// `rps`: send the `email=SystemMailbox{…}@<tenant>` routing anchor (default true).
    pub anchor: Option<bool>,
    /// `rps`: `DelegatedOrg=`, the customer tenant a partner manages.
    pub delegated_org: Option<String>,
    /// `rest`: per-cmdlet time limits in seconds (`"Get-DistributionGroupMember" = 7200`),
    /// replacing the module's ([`crate::rest::MODULE_CMDLET_TIMEOUTS`], 960 s otherwise).
    pub timeouts: Option<std::collections::BTreeMap<String, f64>>,
    /// `rest`: the service's public key for SecureString parameters (`<RSAKeyValue>` XML or
    /// PEM), when not the module's ([`crate::rest::MODULE_PUBLIC_KEY`]).
    pub secure_string_public_key: Option<String>,
    /// `rest`: route mailbox-scoped cmdlets by their `-Identity` (default false, as the
    /// module's `-UseCustomRouting`; [`crate::rest::routing`]).
    pub custom_routing: Option<bool>,
    /// The Security & Compliance front door instead of the cloud's (an emulator).
    pub compliance_url: Option<String>,
}

impl ExchangeProfile {
    /// The profile's table as warden-auth's config read it, checked here.
    pub fn from_table(table: &Sourced<toml::Table>) -> Result<Sourced<Self>> {
        let value = toml::Value::Table(table.value.clone())
            .try_into::<Self>()
            .map_err(|e| {
                ExchangeError::Invalid(format!(
                    "{}: {e}\n  fix: the table takes transport, url, compliance_url, anchor, delegated_org, custom_routing, timeouts and secure_string_public_key",
                    table.source
                ))
            })?;
        Ok(Sourced {
            value,
            source: table.source.clone(),
        })
    }

    /// The keys set here that `transport` ignores (`custom_routing`, `timeouts` and
    /// `secure_string_public_key` are REST's; `anchor` and `delegated_org` RPS's), so a
    /// setting that changes nothing is said, not silently dropped.
    pub fn ignored_by(&self, transport: Transport) -> Vec<&'static str> {
        let rest_only = [
            ("custom_routing", self.custom_routing.is_some()),
            ("timeouts", self.timeouts.is_some()),
            (
                "secure_string_public_key",
                self.secure_string_public_key.is_some(),
            ),
            ("compliance_url", self.compliance_url.is_some()),
        ];
        let rps_only = [
            ("anchor", self.anchor.is_some()),
            ("delegated_org", self.delegated_org.is_some()),
        ];
        let ignored: &[(&'static str, bool)] = match transport {
            Transport::Rest => &rps_only,
            Transport::Rps => &rest_only,
        };
        ignored
            .iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| *key)
            .collect()
    }
}

/// Where and how to reach Exchange, each value with where it came from.
#[derive(Debug, Clone)]
pub struct ExchangeSettings {
    /// The transport.
    pub transport: Sourced<Transport>,
    /// The base URL instead of the cloud's, if any.
    pub url: Option<Sourced<String>>,
    /// Tenant GUID or domain.
    pub tenant: String,
    /// The cloud (its host and token scope).
    pub cloud: Cloud,
    /// REST: `Prefer: odata.maxpagesize`, when not the default.
    pub page_size: Option<u32>,
    /// RPS: send the system-mailbox routing anchor.
    pub anchor: bool,
    /// RPS: `DelegatedOrg=`.
    pub delegated_org: Option<String>,
    /// REST: route mailbox-scoped cmdlets by their `-Identity` ([`crate::rest::routing`]).
    pub custom_routing: bool,
    /// The first retry back-off, when not the default (tests and benchmarks shorten it).
    pub base_delay: Option<Duration>,
    /// REST: per-cmdlet time limits from the profile's `exchange.timeouts`.
    pub cmdlet_timeouts: std::collections::BTreeMap<String, Duration>,
    /// REST: the SecureString public key (`exchange.secure_string_public_key`, else
    /// `WARDEN_EXCHANGE_SECURE_STRING_KEY`), when not the module's.
    pub secure_string_key: Option<Sourced<String>>,
    /// The Security & Compliance front door instead of the cloud's, if any.
    pub compliance_url: Option<Sourced<String>>,
    /// Exchange's cloud hosts (where a redirect or paging link may take the token) instead of
    /// the cloud's table: an embedder's or a test's own cloud, never read from a file.
    pub exchange_hosts: Option<HostSuffixes>,
    /// The same for Security & Compliance.
    pub compliance_hosts: Option<HostSuffixes>,
}

impl ExchangeSettings {
    /// Settings from resolved auth settings: the transport from `flag` (`--transport`), the
    /// profile's `exchange.transport`, `WARDEN_EXCHANGE_TRANSPORT`, else rest; the URL from the
    /// profile's `exchange.url`, `WARDEN_EXCHANGE_URL`, else the cloud's host.
    pub fn resolve(
        auth: &AuthSettings,
        flag: Option<Transport>,
        env: &Environment,
    ) -> Result<Self> {
        let tenant = auth.tenant.as_ref().ok_or_else(|| {
            ExchangeError::Invalid("the Exchange session needs a tenant (GUID or domain): set AZURE_TENANT_ID, --tenant-id, or the profile's tenant_id".into())
        })?;
        let profile = auth
            .exchange
            .as_ref()
            .map(ExchangeProfile::from_table)
            .transpose()?;
        let field = |name: &str| {
            format!(
                "{}.{name}",
                profile.as_ref().map_or("profile", |p| p.source.as_str())
            )
        };
        let transport = match (
            flag,
            profile.as_ref().and_then(|p| p.value.transport.as_deref()),
            env.get("WARDEN_EXCHANGE_TRANSPORT"),
        ) {
            (Some(t), _, _) => sourced(t, "flag --transport"),
            (None, Some(text), _) => {
                let source = field("transport");
                let t = text.parse().map_err(|e| {
                    ExchangeError::Invalid(format!(
                        "{e} (from {source})\n  fix: set it to rest or rps"
                    ))
                })?;
                sourced(t, source)
            }
            (None, None, Some(text)) => sourced(
                text.parse().map_err(|e| {
                    ExchangeError::Invalid(format!("{e} (from env WARDEN_EXCHANGE_TRANSPORT)\n  fix: set it to rest or rps, or unset it"))
                })?,
                "env WARDEN_EXCHANGE_TRANSPORT",
            ),
            (None, None, None) => sourced(Transport::Rest, "default"),
        };
        let url = match (
            profile.as_ref().and_then(|p| p.value.url.clone()),
            env.get("WARDEN_EXCHANGE_URL"),
        ) {
            (Some(url), _) => Some(sourced(url, field("url"))),
            (None, Some(url)) => Some(sourced(url.to_owned(), "env WARDEN_EXCHANGE_URL")),
            (None, None) => None,
        }
        .filter(|u| !u.value.trim().is_empty());
        let cmdlet_timeouts = cmdlet_timeouts(
            profile
                .as_ref()
                .and_then(|p| p.value.timeouts.clone())
                .unwrap_or_default(),
            &field("timeouts"),
            transport.value,
        )?;
        let secure_string_key = match (
            profile
                .as_ref()
                .and_then(|p| p.value.secure_string_public_key.clone()),
            env.get("WARDEN_EXCHANGE_SECURE_STRING_KEY"),
        ) {
            (Some(key), _) => Some(sourced(key, field("secure_string_public_key"))),
            (None, Some(key)) => Some(sourced(
                key.to_owned(),
                "env WARDEN_EXCHANGE_SECURE_STRING_KEY",
            )),
            (None, None) => None,
        }
        .filter(|k| !k.value.trim().is_empty());
        let compliance_url = match (
            profile
                .as_ref()
                .and_then(|p| p.value.compliance_url.clone()),
            env.get("WARDEN_COMPLIANCE_URL"),
        ) {
            (Some(url), _) => Some(sourced(url, field("compliance_url"))),
            (None, Some(url)) => Some(sourced(url.to_owned(), "env WARDEN_COMPLIANCE_URL")),
            (None, None) => None,
        }
        .filter(|u| !u.value.trim().is_empty());
        if let Some(profile) = &profile {
            let name = match transport.value {
                Transport::Rest => "rest",
                Transport::Rps => "rps",
            };
            for key in profile.value.ignored_by(transport.value) {
                // A warning, not an error: `--transport` may override a profile written for
                // the other transport.
                tracing::warn!(
                    "{}.{key} has no effect with transport {} (from {}); fix: remove it, or use the transport it belongs to",
                    profile.source,
                    name,
                    transport.source
                );
            }
        }
        Ok(Self {
            transport,
            url,
            tenant: tenant.value.clone(),
            cloud: auth.cloud.value,
            page_size: None,
            anchor: profile
                .as_ref()
                .is_none_or(|p| p.value.anchor != Some(false)),
            custom_routing: profile
                .as_ref()
                .is_some_and(|p| p.value.custom_routing == Some(true)),
            delegated_org: profile.and_then(|p| p.value.delegated_org),
            base_delay: None,
            cmdlet_timeouts,
            secure_string_key,
            compliance_url,
            exchange_hosts: None,
            compliance_hosts: None,
        })
    }

    /// The REST session's configuration.
    pub fn rest_config(&self) -> Result<SessionConfig> {
        let mut config = SessionConfig::new(self.cloud, &self.tenant);
        if let Some(url) = &self.url {
            config.base_url = url.value.trim().trim_end_matches('/').to_owned();
        }
        if let Some(page_size) = self.page_size {
            config.page_size = page_size;
        }
        if let Some(delay) = self.base_delay {
            config.base_delay = delay;
        }
        config.cmdlet_timeouts.clone_from(&self.cmdlet_timeouts);
        if let Some(key) = &self.secure_string_key {
            config.secure_string_key = crate::rest::SecureStringKey::parse(&key.value)
                .map_err(|e| ExchangeError::Invalid(format!("{e} (from {})", key.source)))?;
        }
        config.custom_routing = self.custom_routing;
        if let Some(hosts) = &self.exchange_hosts {
            config.hosts = hosts.clone();
        }
        Ok(config)
    }

    /// The Security & Compliance session's configuration: the cloud's front door (or
    /// `compliance_url`), its scope and hosts, and the REST settings shared with Exchange.
    pub fn compliance_config(&self) -> Result<SessionConfig> {
        let mut config = SessionConfig::compliance(self.cloud, &self.tenant);
        if let Some(url) = &self.compliance_url {
            config.base_url = url.value.trim().trim_end_matches('/').to_owned();
        }
        if let Some(page_size) = self.page_size {
            config.page_size = page_size;
        }
        if let Some(delay) = self.base_delay {
            config.base_delay = delay;
        }
        if let Some(hosts) = &self.compliance_hosts {
            config.hosts = hosts.clone();
        }
        config.cmdlet_timeouts.clone_from(&self.cmdlet_timeouts);
        // The SecureString key is the service's, shared by both endpoints; custom routing is
        // Exchange's mailbox routing and does not apply here.
        if let Some(key) = &self.secure_string_key {
            config.secure_string_key = crate::rest::SecureStringKey::parse(&key.value)
                .map_err(|e| ExchangeError::Invalid(format!("{e} (from {})", key.source)))?;
        }
        Ok(config)
    }

    /// The RPS session's configuration: the cloud's defaults, then the URL (its path, when it
    /// has one, replaces `/PowerShell-LiveID`), the anchor and `DelegatedOrg`.
    pub fn rps_config(&self) -> Result<RpsConfig> {
        let mut config = RpsConfig::new(self.cloud, &self.tenant);
        if let Some(url) = &self.url {
            let url = url.value.trim();
            let parsed = url::Url::parse(url).map_err(|e| {
                ExchangeError::Invalid(format!("Exchange URL '{url}' is not a URL: {e}"))
            })?;
            let path = parsed.path().trim_end_matches('/');
            if !path.is_empty() {
                config.path = path.to_owned();
            }
            config.base_url = parsed.origin().ascii_serialization();
        }
        if !self.anchor {
            config.anchor = None;
        }
        config.delegated_org.clone_from(&self.delegated_org);
        if let Some(delay) = self.base_delay {
            config.base_delay = delay;
        }
        Ok(config)
    }
}

fn sourced<T>(value: T, source: impl Into<String>) -> Sourced<T> {
    Sourced {
        value,
        source: source.into(),
    }
}

/// The cmdlet runner for `settings` with tokens from `tokens`: Exchange calls go to
/// [`rest_session`] or [`rps_session`] by the settings' transport, Security & Compliance calls
/// to [`compliance_session`] (REST only; see [`crate::rest::compliance`]), made on the first
/// compliance call, so a wrong compliance setting fails those calls only. Nothing is sent until
/// the first call.
///
/// Both services are reached through the transport `tokens` was built with
/// ([`TokenProvider::transport`]): its trusted roots (an extra CA such as an emulator's
/// included) are chosen there, once, for identity and Exchange alike.
pub fn connect(
    settings: &ExchangeSettings,
    tokens: TokenProvider,
) -> Result<Arc<dyn CmdletRunner>> {
    let exchange: Arc<dyn CmdletRunner> = match settings.transport.value {
        Transport::Rest => Arc::new(rest_session(settings, tokens.clone())?),
        Transport::Rps => Arc::new(rps_session(settings, tokens.clone())?),
    };
    // Made on the first compliance call: a wrong compliance setting must not stop Exchange.
    let settings = settings.clone();
    let compliance = move || match settings.transport.value {
        Transport::Rest => compliance_session(&settings, tokens).map_err(|e| e.to_string()),
        Transport::Rps => Err(format!(
            "Security & Compliance runs over REST only, and transport rps (from {}) reaches on-premises Exchange or an emulator, which have no compliance endpoint\n  fix: use --transport rest",
            settings.transport.source
        )),
    };
    Ok(Arc::new(EndpointRunner::new(exchange, compliance)))
}

/// The URL is the one input here the operator may have mistyped: an error about it names
/// where it came from.
fn name_url(settings: &ExchangeSettings) -> impl Fn(ExchangeError) -> ExchangeError + '_ {
    move |error| match &settings.url {
        Some(url) => ExchangeError::Invalid(format!(
            "{error} (from {})\n  fix: set it to the https:// base of the Exchange endpoint, or unset it to use the cloud's",
            url.source
        )),
        None => error,
    }
}

/// A REST session for `settings`, whatever their transport says.
pub fn rest_session(settings: &ExchangeSettings, tokens: TokenProvider) -> Result<RestSession> {
    let config = settings.rest_config().map_err(name_url(settings))?;
    let http = tokens.transport();
    RestSession::new(config, tokens, http).map_err(name_url(settings))
}

/// A Security & Compliance session for `settings`: the cloud's front door (or
/// `compliance_url`), a token for the compliance resource, the REST settings of Exchange.
pub fn compliance_session(
    settings: &ExchangeSettings,
    tokens: TokenProvider,
) -> Result<RestSession> {
    let config = settings.compliance_config()?;
    let http = tokens.transport();
    RestSession::new(config, tokens, http).map_err(|error| {
        match &settings.compliance_url {
            Some(url) => ExchangeError::Invalid(format!(
                "{error} (from {})\n  fix: set it to the https:// base of the Security & Compliance endpoint, or unset it to use the cloud's ({})",
                url.source,
                compliance_base(settings.cloud)
            )),
            None => error,
        }
    })
}

/// The profile's `exchange.timeouts` as limits: each name a cmdlet (`Verb-Noun`), named once
/// whatever its case, each limit from 1 s to a day; REST only (the module's per-cmdlet limits
/// are its REST client's; an RPS call has only `--call-timeout`).
fn cmdlet_timeouts(
    table: std::collections::BTreeMap<String, f64>,
    field: &str,
    transport: Transport,
) -> Result<std::collections::BTreeMap<String, Duration>> {
    if !table.is_empty() && transport == Transport::Rps {
        return Err(ExchangeError::Invalid(format!(
            "{field}: per-cmdlet time limits apply to the REST transport only, and this profile uses rps\n  fix: remove {field}, or use transport = \"rest\" (an RPS call is bounded by --call-timeout)"
        )));
    }
    let mut limits = std::collections::BTreeMap::new();
    for (cmdlet, secs) in table {
        warden_vocab::names::validate_cmdlet(&cmdlet).map_err(|e| {
            ExchangeError::Invalid(format!(
                "{field}: {e}\n  fix: name a cmdlet such as \"Set-Mailbox\""
            ))
        })?;
        let limit = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(24 * 3600));
        let Some(limit) = limit else {
            return Err(ExchangeError::Invalid(format!(
                "{field}: {secs} is not a time limit for {cmdlet}\n  fix: give seconds, at least 1 and at most 86400"
            )));
        };
        if let Some(other) = limits
            .keys()
            .find(|k: &&String| k.eq_ignore_ascii_case(&cmdlet))
        {
            return Err(ExchangeError::Invalid(format!(
                "{field}: {cmdlet} and {other} name the same cmdlet (names are case-insensitive)\n  fix: keep one of them"
            )));
        }
        limits.insert(cmdlet, limit);
    }
    Ok(limits)
}

/// An RPS session for `settings`, whatever their transport says; refused when it targets
/// Exchange Online itself, which retired Remote PowerShell in 2023.
pub fn rps_session(settings: &ExchangeSettings, tokens: TokenProvider) -> Result<RpsSession> {
    let config = settings.rps_config().map_err(name_url(settings))?;
    if config.targets_exchange_online() {
        return Err(ExchangeError::Invalid(format!(
            "transport rps (from {}) targets Exchange Online at {}: {}\n  fix: use --transport rest, or point {} at an emulator or an on-premises Exchange server",
            settings.transport.source,
            config.base_url,
            crate::rps::RETIRED,
            settings
                .url
                .as_ref()
                .map_or("WARDEN_EXCHANGE_URL or the profile's exchange.url", |u| {
                    u.source.as_str()
                }),
        )));
    }
    let http = tokens.transport();
    RpsSession::new(config, tokens, http).map_err(name_url(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_the_other_transport_are_reported_as_ignored() {
        let table: toml::Table = toml::from_str(
            "transport = \"rps\"\ncustom_routing = true\ndelegated_org = \"x.example\"\n",
        )
        .unwrap();
        let profile = ExchangeProfile::from_table(&sourced(table, "profile x")).unwrap();
        assert_eq!(profile.value.ignored_by(Transport::Rps), ["custom_routing"]);
        assert_eq!(profile.value.ignored_by(Transport::Rest), ["delegated_org"]);
        assert!(
            ExchangeProfile::default()
                .ignored_by(Transport::Rps)
                .is_empty()
        );
    }

    #[test]
    fn per_cmdlet_timeouts_follow_the_module_then_the_profile() {
        let mut config = SessionConfig::new(Cloud::Public, "contoso.onmicrosoft.com");
        assert_eq!(config.timeout_for("Get-Mailbox"), Duration::from_secs(960));
        assert_eq!(
            config.timeout_for("get-distributiongroupmember"),
            Duration::from_secs(3660)
        );
        assert_eq!(
            config.timeout_for("Set-OrganizationConfig"),
            Duration::from_secs(1860)
        );
        let table: toml::Table =
            toml::from_str("[timeouts]\n\"Set-OrganizationConfig\" = 120\n\"Get-Mailbox\" = 1.5\n")
                .unwrap();
        let profile = ExchangeProfile::from_table(&sourced(table, "profile x")).unwrap();
        config.cmdlet_timeouts = cmdlet_timeouts(
            profile.value.timeouts.unwrap(),
            "x.timeouts",
            Transport::Rest,
        )
        .unwrap();
        assert_eq!(
            config.timeout_for("set-organizationconfig"),
            Duration::from_secs(120)
        );
        assert_eq!(
            config.timeout_for("Get-Mailbox"),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn bad_timeout_tables_are_refused_naming_the_fix() {
        let table = |pairs: &[(&str, f64)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        for (pairs, transport, says) in [
            (vec![("Get-Mailbox", 0.5)], Transport::Rest, "at least 1"),
            (vec![("Get-Mailbox", 0.0)], Transport::Rest, "at least 1"),
            (
                vec![("Get-Mailbox", 90_000.0)],
                Transport::Rest,
                "at most 86400",
            ),
            (vec![("GetMailbox", 10.0)], Transport::Rest, "Verb-Noun"),
            (
                vec![("Get-Mailbox", 10.0), ("get-mailbox", 20.0)],
                Transport::Rest,
                "same cmdlet",
            ),
            (
                vec![("Get-Mailbox", 10.0)],
                Transport::Rps,
                "REST transport only",
            ),
        ] {
            let error = cmdlet_timeouts(table(&pairs), "x.timeouts", transport).unwrap_err();
            let text = error.to_string();
            assert!(
                text.contains(says) && text.contains("fix:"),
                "{pairs:?}: {text}"
            );
        }
        assert!(
            cmdlet_timeouts(Default::default(), "x", Transport::Rps)
                .unwrap()
                .is_empty()
        );
    }
}
