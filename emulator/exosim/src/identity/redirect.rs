//! Redirect URI rules of the sign-in flows: what may be registered, and whether a requested
//! `redirect_uri` matches a registered one.
//!
//! Entra's rules (<https://learn.microsoft.com/entra/identity-platform/reply-url>): a redirect URI
//! is `https://…`, or `http://` on loopback only; it may not carry a fragment; it is matched
//! exactly, except that for a loopback entry the port is ignored ("Prefer 127.0.0.1 over
//! localhost … the port component is ignored", same page). Entra documents that rule for
//! native/public clients; exosim applies it to the service app too, so tests may listen on any
//! port (an emulation-only extension, docs/fidelity.md "Sign-in"). exosim also treats
//! `localhost`, `127.0.0.1` and `[::1]` as the same loopback host. URIs are parsed with `url`,
//! never compared as raw text, so `http://127.0.0.1.evil.example/` or a userinfo trick cannot
//! pass for loopback.

use url::{Host, Url};

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
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
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err("plain http is allowed on loopback only (127.0.0.1, localhost)".to_owned()),
        other => Err(format!("scheme '{other}' is not https")),
    }
}

/// Whether the requested `redirect_uri` matches `registered`.
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
    let loopback_rule = registered.scheme() == "http"
        && is_loopback(&registered)
        && registered.port().is_none()
        && requested.scheme() == "http"
        && is_loopback(&requested);
    if loopback_rule {
        return registered.path() == requested.path() && registered.query() == requested.query();
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
    fn loopback_ignores_the_port_but_not_the_path_or_host() {
        let reg = "http://127.0.0.1/auth/callback";
        assert!(matches(reg, "http://127.0.0.1:5123/auth/callback"));
        assert!(matches(reg, "http://localhost:5123/auth/callback"));
        assert!(matches(reg, "http://127.0.0.1/auth/callback"));
        assert!(!matches(reg, "http://127.0.0.1:5123/auth/callback/x"));
        assert!(!matches(reg, "http://127.0.0.1:5123/auth/callback?next=/"));
        assert!(!matches(
            reg,
            "http://127.0.0.1.evil.example:5123/auth/callback"
        ));
        assert!(!matches(
            reg,
            "http://evil.example@127.0.0.1:5/auth/callback"
        ));
        assert!(!matches(reg, "https://127.0.0.1:5123/auth/callback"));
        assert!(!matches(reg, "http://127.0.0.1:5123/auth/callback#x"));
        assert!(!matches(reg, "/auth/callback"));
    }

    #[test]
    fn other_uris_match_exactly() {
        let reg = "https://warden.example/auth/callback";
        assert!(matches(reg, "https://WARDEN.example/auth/callback"));
        assert!(matches(reg, "https://warden.example:443/auth/callback"));
        assert!(!matches(reg, "https://warden.example:8443/auth/callback"));
        assert!(!matches(reg, "https://warden.example/auth/callback2"));
        assert!(!matches(reg, "https://warden.example.evil/auth/callback"));
        // A registered loopback URI with a port is exact too.
        assert!(!matches(
            "http://127.0.0.1:8080/cb",
            "http://127.0.0.1:9090/cb"
        ));
    }

    #[test]
    fn registration_rules() {
        assert!(check_registered("https://warden.example/cb").is_ok());
        assert!(check_registered("http://127.0.0.1/cb").is_ok());
        assert!(check_registered("http://localhost/cb").is_ok());
        assert!(check_registered("http://warden.example/cb").is_err());
        assert!(check_registered("https://warden.example/cb#f").is_err());
        assert!(check_registered("javascript:alert(1)").is_err());
        assert!(check_registered("/cb").is_err());
    }
}
