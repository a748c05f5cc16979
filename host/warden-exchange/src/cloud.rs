//! Which hosts belong to the cloud of a session's endpoint: the one rule ([`same_cloud`]) that
//! decides whether the session sends its bearer token to a host it was not configured with —
//! a front door's redirect to the tenant's regional host, or an `@odata.nextLink` on another
//! host of the same cloud — or refuses, naming the host.
//!
//! The HTTP layer never follows a redirect (see [`warden_auth::transport`]); the session asks this module
//! and re-sends. The tables are data in the session's configuration ([`HostSuffixes`]), so a
//! test can declare its own cloud (`exosim.test` hosts resolved to loopback) and exercise the
//! very rule production uses.
//!
//! Sources for the tables: docs/protocol/exo-protocol.md §1.2 (hosts per cloud) and §1.2.1
//! (regional redirect). Commercial Exchange answers on `outlook.office365.com` and
//! `outlook.office.com` (a live capture in the public "CAPTURE" script: `Host: outlook.office.com`);
//! tenant-specific hosts are `<prefix>.outlook.office365.com` (cisagov/ScubaGear
//! `PowerShell/ScubaGear/Modules/Providers/ProviderHelpers/EXORestHelper.psm1`). Security &
//! Compliance redirects to `<region>.admin.protection.outlook.com` and is reached at
//! `<region>.ps.compliance.protection.outlook.com` (KelvinTegelaar/CIPP-API
//! `Modules/CIPPCore/Public/GraphHelper/New-ExoRequest.ps1`; silverhack/monkey365
//! `core/utils/Get-MonkeySecCompBackendUri.ps1`). The sovereign clouds' regional hosts are not
//! documented: their tables hold the known front doors only (a redirect under them is followed).

use url::Url;
use warden_auth::Cloud;

/// The DNS suffixes of one endpoint's cloud: a host equal to one, or ending in `.` + one, is
/// of the same cloud — unless the other endpoint of the cloud claims it more precisely (21Vianet's
/// `ps.compliance.protection.partner.outlook.cn` lies under Exchange's `partner.outlook.cn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSuffixes {
    own: Vec<String>,
    /// The other endpoint's suffixes in the same cloud: a host one of them matches at least as
    /// closely as `own` does is the other endpoint's, never this one's.
    other: Vec<String>,
}

fn normalized<S: AsRef<str>>(suffixes: impl IntoIterator<Item = S>) -> Vec<String> {
    suffixes
        .into_iter()
        .map(|s| {
            let s = s.as_ref().trim().to_ascii_lowercase();
            s.trim_start_matches("*.")
                .trim_start_matches('.')
                .to_owned()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The length of the longest of `suffixes` that `host` equals or lies under.
fn closest(suffixes: &[String], host: &str) -> Option<usize> {
    suffixes
        .iter()
        .filter(|suffix| {
            host == suffix.as_str()
                || host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
        })
        .map(String::len)
        .max()
}

impl HostSuffixes {
    /// Suffixes as given (lower-cased, a leading `.` or `*.` ignored).
    pub fn new<S: AsRef<str>>(suffixes: impl IntoIterator<Item = S>) -> Self {
        Self {
            own: normalized(suffixes),
            other: Vec::new(),
        }
    }

    /// Exchange Online's hosts in `cloud`, minus Security & Compliance's.
    pub fn exchange(cloud: Cloud) -> Self {
        Self {
            own: Self::exchange_table(cloud),
            other: Self::compliance_table(cloud),
        }
    }

    /// Security & Compliance's hosts in `cloud`: the front door, its regional hosts, and the
    /// `admin.` hosts its redirects name; minus Exchange's.
    pub fn compliance(cloud: Cloud) -> Self {
        Self {
            own: Self::compliance_table(cloud),
            other: Self::exchange_table(cloud),
        }
    }

    fn exchange_table(cloud: Cloud) -> Vec<String> {
        match cloud {
            Cloud::Public => normalized(["outlook.office365.com", "outlook.office.com"]),
            Cloud::GccHigh => normalized(["outlook.office365.us"]),
            Cloud::Dod => normalized(["outlook-dod.office365.us"]),
            // Both names Microsoft gives for 21Vianet (exo-protocol.md §1.2, open question 4).
            Cloud::China => normalized(["partner.outlook.cn", "outlook.office365.cn"]),
        }
    }

    fn compliance_table(cloud: Cloud) -> Vec<String> {
        match cloud {
            Cloud::Public => normalized([
                "ps.compliance.protection.outlook.com",
                "admin.protection.outlook.com",
            ]),
            Cloud::GccHigh => normalized(["ps.compliance.protection.office365.us"]),
            // Two Microsoft pages disagree on DoD's host (exo-protocol.md §1.2): both are kept.
            Cloud::Dod => normalized([
                "l5.ps.compliance.protection.office365.us",
                "compliance.dod.microsoft.com",
            ]),
            Cloud::China => normalized(["ps.compliance.protection.partner.outlook.cn"]),
        }
    }

    /// Whether `host` is one of the suffixes or under one, and not the other endpoint's.
    pub fn admits(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match (closest(&self.own, &host), closest(&self.other, &host)) {
            (Some(own), Some(other)) => own > other,
            (own, _) => own.is_some(),
        }
    }

    /// The suffixes, for messages.
    pub fn list(&self) -> String {
        self.own.join(", ")
    }
}

/// Whether the token may follow from `base` (the endpoint in use) to `next`: both https, on
/// the same port, and `next`'s host is `base`'s or of the same cloud by `suffixes`. The error
/// names the host that was refused.
pub fn same_cloud(suffixes: &HostSuffixes, base: &Url, next: &Url) -> Result<(), String> {
    host_of_cloud(suffixes, base, next)?;
    if next.port_or_known_default() != base.port_or_known_default() {
        return Err(format!(
            "{} on port {}, not {}",
            next.host_str().unwrap_or_default(),
            next.port_or_known_default().unwrap_or(0),
            base.port_or_known_default().unwrap_or(0)
        ));
    }
    Ok(())
}

/// [`same_cloud`] without the port: https, and `base`'s host or one of the cloud's.
fn host_of_cloud(suffixes: &HostSuffixes, base: &Url, next: &Url) -> Result<(), String> {
    let host = next.host_str().unwrap_or("(no host)");
    if next.scheme() != "https" || next.scheme() != base.scheme() {
        return Err(format!("{host} over {}, not https", next.scheme()));
    }
    // An IP address is no cloud's host, whatever a suffix says.
    let named = matches!(next.host(), Some(url::Host::Domain(_)));
    let admitted = next.host_str() == base.host_str() || (named && suffixes.admits(host));
    if !admitted {
        return Err(format!(
            "{host}, which is not {} nor under the cloud's hosts ({})",
            base.host_str().unwrap_or("?"),
            suffixes.list()
        ));
    }
    Ok(())
}

/// The tenant's regional base URL (`https://host[:port]`) from a front door's redirect to
/// `location`: refused unless [`same_cloud`] admits it. The regional host keeps the first DNS
/// label of the redirect's host and puts it before the front door's host, as CIPP-API
/// (`'{0}.ps.compliance.protection.outlook.com' -f ($RedirectedHost -split '\.')[0]`) and
/// monkey365 (`Location.Host.Replace('admin','ps.compliance')`) do; a redirect already under
/// the front door's host is kept as it is, and a redirect to the front door itself keeps the front
/// door. The port is the front door's (a redirect may name the back end's port; the public
/// listener is the front door's). `front_door` must be the configured one, never a regional host
/// already in use: the label goes before the front door's host, not before a regional one.
pub fn regional_base(
    suffixes: &HostSuffixes,
    front_door: &Url,
    location: &Url,
) -> Result<String, String> {
    host_of_cloud(suffixes, front_door, location)?;
    let door = front_door
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let target = location
        .host_str()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let host = if target == door || target.ends_with(&format!(".{door}")) {
        target
    } else {
        let label = target.split('.').next().unwrap_or_default();
        format!("{label}.{door}")
    };
    let mut regional = front_door.clone();
    regional
        .set_host(Some(&host))
        .map_err(|e| format!("{host} is not a host name ({e})"))?;
    same_cloud(suffixes, front_door, &regional)?;
    Ok(regional.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_host_is_of_the_cloud_when_it_is_a_suffix_or_under_one() {
        let public = HostSuffixes::exchange(Cloud::Public);
        for host in [
            "outlook.office365.com",
            "NAM12.outlook.office365.com",
            "outlook.office.com",
            "a.b.outlook.office.com.",
        ] {
            assert!(public.admits(host), "{host}");
        }
        for host in [
            "evil-outlook.office365.com",
            "outlook.office365.com.evil.example",
            "office365.com",
            ".outlook.office365.com",
            "outlook.office365.us",
        ] {
            assert!(!public.admits(host), "{host}");
        }
    }

    #[test]
    fn the_token_follows_only_within_the_cloud_over_https_on_the_same_port() {
        let suffixes = HostSuffixes::exchange(Cloud::Public);
        let base = url("https://outlook.office365.com/adminapi/beta/t/InvokeCommand");
        assert!(
            same_cloud(
                &suffixes,
                &base,
                &url("https://nam12.outlook.office365.com/x")
            )
            .is_ok()
        );
        for (next, named) in [
            ("https://evil.example/x", "evil.example"),
            ("http://nam12.outlook.office365.com/x", "not https"),
            ("https://nam12.outlook.office365.com:8443/x", "port 8443"),
        ] {
            let error = same_cloud(&suffixes, &base, &url(next)).unwrap_err();
            assert!(error.contains(named), "{next}: {error}");
        }
        // Only the IP-literal guard refuses this one: the suffix `0.0.1` would admit the host.
        let dotted = HostSuffixes::new(["0.0.1"]);
        assert!(dotted.admits("127.0.0.1"));
        let error = same_cloud(&dotted, &base, &url("https://127.0.0.1/x")).unwrap_err();
        assert!(error.contains("127.0.0.1"), "{error}");
        // The configured host itself is always admitted (an emulator, an on-premises server).
        let local = url("https://localhost:4443/x");
        assert!(same_cloud(&suffixes, &local, &url("https://localhost:4443/y")).is_ok());
    }

    #[test]
    fn the_regional_host_keeps_the_redirects_first_label_under_the_front_door() {
        let scc = HostSuffixes::compliance(Cloud::Public);
        let door =
            url("https://ps.compliance.protection.outlook.com/adminapi/beta/t/InvokeCommand");
        assert_eq!(
            regional_base(
                &scc,
                &door,
                &url("https://eur02b.admin.protection.outlook.com/AdminApi/v1.0/t/EXOModuleFile")
            )
            .unwrap(),
            "https://eur02b.ps.compliance.protection.outlook.com"
        );
        assert_eq!(
            regional_base(
                &scc,
                &door,
                &url("https://nam04.ps.compliance.protection.outlook.com/x")
            )
            .unwrap(),
            "https://nam04.ps.compliance.protection.outlook.com"
        );
        let error = regional_base(&scc, &door, &url("https://eur02b.evil.example/x")).unwrap_err();
        assert!(error.contains("eur02b.evil.example"), "{error}");
        // Exchange's suffixes are not Security & Compliance's.
        let error =
            regional_base(&scc, &door, &url("https://nam12.outlook.office365.com/x")).unwrap_err();
        assert!(error.contains("nam12.outlook.office365.com"), "{error}");
    }

    #[test]
    fn a_host_of_one_endpoint_is_never_the_other_endpoints() {
        for cloud in [Cloud::Public, Cloud::GccHigh, Cloud::Dod, Cloud::China] {
            let exchange = HostSuffixes::exchange(cloud);
            let compliance = HostSuffixes::compliance(cloud);
            for host in exchange
                .own
                .iter()
                .chain(&compliance.own)
                .flat_map(|s| [s.clone(), format!("eur02b.{s}")])
            {
                assert!(
                    !(exchange.admits(&host) && compliance.admits(&host)),
                    "{cloud:?}: {host} admitted by both endpoints"
                );
            }
        }
        let china = HostSuffixes::exchange(Cloud::China);
        assert!(china.admits("cn01.partner.outlook.cn"));
        assert!(!china.admits("ps.compliance.protection.partner.outlook.cn"));
        assert!(!china.admits("sh01.ps.compliance.protection.partner.outlook.cn"));
        let china = HostSuffixes::compliance(Cloud::China);
        assert!(china.admits("sh01.ps.compliance.protection.partner.outlook.cn"));
        assert!(!china.admits("cn01.partner.outlook.cn"));
    }

    #[test]
    fn the_regional_host_is_built_on_the_front_door_and_a_same_host_location_keeps_it() {
        let scc = HostSuffixes::compliance(Cloud::Public);
        let door =
            url("https://ps.compliance.protection.outlook.com/adminapi/beta/t/InvokeCommand");
        assert_eq!(
            regional_base(
                &scc,
                &door,
                &url("https://ps.compliance.protection.outlook.com/adminapi/beta/t/InvokeCommand")
            )
            .unwrap(),
            "https://ps.compliance.protection.outlook.com"
        );
        assert_eq!(
            regional_base(
                &scc,
                &door,
                &url("https://nam01.admin.protection.outlook.com/x")
            )
            .unwrap(),
            "https://nam01.ps.compliance.protection.outlook.com"
        );
    }
}
