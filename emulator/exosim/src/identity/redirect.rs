//! Redirect URI rules of the sign-in flows: what may be registered, and whether a requested
//! `redirect_uri` matches a registered one.
//!
//! Entra's rules (<https://learn.microsoft.com/entra/identity-platform/reply-url>): a redirect URI
//! is `https://…`, or `http://` for localhost only ("The HTTP scheme (`http://`) is supported
//! *only* for *localhost* URIs"); it may not carry a fragment; it is matched exactly, except that
//! for a "loopback" or "localhost" redirect URI "the port component … is ignored for the purposes
//! of matching a redirect URI" (section "Localhost exceptions"). Scheme, host and path still
//! count: `http://localhost/MyWebApp` "doesn't match" `http://localhost/MyNativeApp`, so
//! `localhost` and `127.0.0.1` are different hosts, and "The IPv6 loopback address (`[::1]`) is
//! not currently supported." The page states the rule for every app type, so it holds for the
//! service app as for the public client. URIs are parsed with `url`, never compared as raw text,
//! so `http://127.0.0.1.evil.example/` or a userinfo trick cannot pass for loopback.

use url::{Host, Url};

/// The hosts Entra's localhost exceptions name: `localhost` and the literal `127.0.0.1` (not
/// other 127/8 addresses, not `[::1]`).
fn is_localhost(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(Host::Ipv6(_)) | None => false,
    }
}

/// Whether `uri` may be registered as a redirect URI; the error says why not.
pub(crate) fn check_registered(uri: &str) -> Result<(), String> {
    let url = Url::parse(uri).map_err(|e| format!("not an absolute URI ({e})"))?;
    if url.fragment().is_some() {
        return Err("a redirect URI may not contain a fragment".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a redirect URI may not contain user information".to_owned());
    }
    if matches!(url.host(), Some(Host::Ipv6(ip)) if ip.is_loopback()) {
        return Err(
            "Entra does not support the IPv6 loopback address [::1]; use http://127.0.0.1/…"
                .to_owned(),
        );
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_localhost(&url) => Ok(()),
        "http" => Err("plain http is allowed for localhost and 127.0.0.1 only".to_owned()),
        other => Err(format!("scheme '{other}' is not https")),
    }
}

/// Whether the requested `redirect_uri` matches `registered`: exactly, or for a localhost
/// registration with the same scheme, host, path and query on any port.
pub(crate) fn matches(registered: &str, requested: &str) -> bool {
    let (Ok(registered), Ok(requested)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    if requested.fragment().is_some()
        || !requested.username().is_empty()
        || requested.password().is_some()
    {
        return false;
    }
    if is_localhost(&registered) {
        let host = |u: &Url| u.host_str().map(str::to_ascii_lowercase);
        return registered.scheme() == requested.scheme()
            && host(&registered) == host(&requested)
            && registered.path() == requested.path()
            && registered.query() == requested.query();
    }
    registered == requested
}

/// Whether any of `registered` matches `requested`.
pub(crate) fn any_matches(registered: &[String], requested: &str) -> bool {
    registered.iter().any(|r| matches(r, requested))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_ignores_the_port_but_not_scheme_host_path_or_query() {
        let reg = "http://127.0.0.1/auth/callback";
        assert!(matches(reg, "http://127.0.0.1:5123/auth/callback"));
        assert!(matches(reg, "http://127.0.0.1/auth/callback"));
        // A registration with a port matches other ports too (the port is ignored).
        assert!(matches(
            "http://127.0.0.1:8080/auth/callback",
            "http://127.0.0.1:9090/auth/callback"
        ));
        assert!(matches(
            "http://localhost/MyApp",
            "http://LOCALHOST:1234/MyApp"
        ));
        // Siblings that differ in anything but the port.
        assert!(
            !matches(reg, "http://localhost:5123/auth/callback"),
            "other host"
        );
        assert!(
            !matches(reg, "http://127.0.0.2:5123/auth/callback"),
            "other host"
        );
        assert!(
            !matches(reg, "http://[::1]:5123/auth/callback"),
            "other host"
        );
        assert!(
            !matches(reg, "https://127.0.0.1:5123/auth/callback"),
            "other scheme"
        );
        assert!(
            !matches(reg, "http://127.0.0.1:5123/auth/callback/x"),
            "other path"
        );
        assert!(
            !matches(reg, "http://127.0.0.1:5123/Auth/callback"),
            "path case"
        );
        assert!(
            !matches(reg, "http://127.0.0.1:5123/auth/callback?next=/"),
            "query"
        );
        assert!(!matches(
            reg,
            "http://127.0.0.1.evil.example:5123/auth/callback"
        ));
        assert!(!matches(
            reg,
            "http://evil.example@127.0.0.1:5/auth/callback"
        ));
        assert!(!matches(reg, "http://127.0.0.1:5123/auth/callback#x"));
        assert!(!matches(reg, "/auth/callback"));
        // https on localhost is a localhost URI too: any port, same scheme.
        assert!(matches("https://localhost/cb", "https://localhost:8443/cb"));
        assert!(!matches("https://localhost/cb", "http://localhost:8443/cb"));
    }

    #[test]
    fn other_uris_match_exactly() {
        let reg = "https://warden.example/auth/callback";
        assert!(matches(reg, "https://WARDEN.example/auth/callback"));
        assert!(matches(reg, "https://warden.example:443/auth/callback"));
        assert!(!matches(reg, "https://warden.example:8443/auth/callback"));
        assert!(!matches(reg, "https://warden.example/auth/callback2"));
        assert!(!matches(reg, "https://warden.example.evil/auth/callback"));
        assert!(!matches(reg, "http://warden.example/auth/callback"));
    }

    #[test]
    fn registration_rules() {
        assert!(check_registered("https://warden.example/cb").is_ok());
        assert!(check_registered("http://127.0.0.1/cb").is_ok());
        assert!(check_registered("http://localhost/cb").is_ok());
        assert!(check_registered("http://127.0.0.2/cb").is_err());
        assert!(check_registered("http://[::1]/cb").is_err());
        assert!(check_registered("https://[::1]/cb").is_err());
        assert!(check_registered("http://warden.example/cb").is_err());
        assert!(check_registered("https://warden.example/cb#f").is_err());
        assert!(check_registered("javascript:alert(1)").is_err());
        assert!(check_registered("/cb").is_err());
    }
}
