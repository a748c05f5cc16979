//! The errors this crate returns, typed so callers can tell configuration mistakes (fix and
//! rerun) from service answers (an AADSTS code with a hint) and from transient trouble.
//!
//! No variant ever holds a secret, a token, or a request body: messages name files, variables,
//! URLs without their query, and Entra's own codes and ids.

use std::path::PathBuf;
use std::time::Duration;

/// Result with [`AuthError`].
pub type Result<T, E = AuthError> = std::result::Result<T, E>;

/// Everything that can go wrong getting a token. Cloneable because a throttled failure is
/// answered again from the negative cache; no variant holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The configuration is incomplete or contradictory.
    #[error("{what}\n  fix: {fix}")]
    Config {
        /// What is wrong, naming the setting and where it came from.
        what: String,
        /// What to do about it.
        fix: String,
    },

    /// A credential file (PFX, PEM, token file) could not be used.
    #[error("{}: {reason}\n  fix: {fix}", path.display())]
    CredentialFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// What to do about it.
        fix: String,
    },

    /// Entra ID refused the request and said why.
    #[error(transparent)]
    Entra(#[from] Box<EntraError>),

    /// A managed-identity endpoint refused the request.
    #[error("managed identity endpoint answered {status}: {message}\n  fix: {fix}")]
    ManagedIdentity {
        /// HTTP status.
        status: u16,
        /// The endpoint's error text.
        message: String,
        /// What to do.
        fix: String,
    },

    /// No response arrived (connection, TLS, timeout).
    #[error("no response from {url}: {reason}")]
    Transport {
        /// The URL, without its query.
        url: String,
        /// The transport's explanation.
        reason: String,
    },

    /// The server kept throttling or failing past the retry budget.
    #[error("{url} is throttling or unavailable (HTTP {status}) after {attempts} attempts{}", retry_after.map(|d| format!("; it asked to wait {}s", d.as_secs())).unwrap_or_default())]
    Unavailable {
        /// The URL, without its query.
        url: String,
        /// The last status seen.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The last `Retry-After`.
        retry_after: Option<Duration>,
    },

    /// The server answered something that is not a token response.
    #[error("unexpected answer from {url}: {reason}")]
    BadResponse {
        /// The URL, without its query.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl AuthError {
    /// Whether the failure may go away on its own (worth retrying later).
    pub fn is_transient(&self) -> bool {
        match self {
            AuthError::Transport { .. } | AuthError::Unavailable { .. } => true,
            AuthError::Entra(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The AADSTS code, if Entra sent one.
    pub fn aadsts_code(&self) -> Option<u32> {
        match self {
            AuthError::Entra(e) => e.codes.first().copied(),
            _ => None,
        }
    }
}

/// An error response from the Entra ID token endpoint (`docs/protocol/entra-auth.md` §1.6).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.render())]
pub struct EntraError {
    /// HTTP status.
    pub status: u16,
    /// The OAuth `error` value (`invalid_client`, …): the only field to branch on.
    pub error: String,
    /// The first line of `error_description` (without the trace block).
    pub description: String,
    /// `error_codes`.
    pub codes: Vec<u32>,
    /// `trace_id`, to quote to Microsoft support.
    pub trace_id: Option<String>,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// The token URL, without query.
    pub url: String,
}

impl EntraError {
    /// Whether Entra's answer says to try again (§3.5 rule 4).
    pub fn is_transient(&self) -> bool {
        self.error == "temporarily_unavailable"
            || self.codes.iter().any(|c| TRANSIENT_AADSTS.contains(c))
    }

    /// What the code means and what to fix, when we know the code.
    pub fn hint(&self) -> Option<&'static AadstsHint> {
        self.codes
            .iter()
            .find_map(|c| AADSTS_HINTS.iter().find(|h| h.code == *c))
    }

    fn render(&self) -> String {
        let code = self
            .codes
            .first()
            .map(|c| format!("AADSTS{c}"))
            .unwrap_or_else(|| "no AADSTS code".into());
        let mut text = format!(
            "Entra ID refused the token request ({code}, {}, HTTP {}): {}",
            self.error, self.status, self.description
        );
        if let Some(hint) = self.hint() {
            text.push_str(&format!(
                "\n  meaning: {}\n  fix: {}",
                hint.meaning, hint.fix
            ));
        }
        text.push_str(&format!(
            "\n  trace_id: {}  correlation_id: {}",
            self.trace_id.as_deref().unwrap_or("-"),
            self.correlation_id.as_deref().unwrap_or("-")
        ));
        text
    }
}

/// AADSTS codes that mean "try again" (docs/protocol/entra-auth.md §3.5 rule 4, which treats them
/// as hints).
pub const TRANSIENT_AADSTS: [u32; 6] = [50000, 50033, 90006, 90012, 90024, 90033];

/// One row of the AADSTS table: what the code means for an app-only client and what to fix.
#[derive(Debug)]
pub struct AadstsHint {
    /// The AADSTS number.
    pub code: u32,
    /// Plain meaning.
    pub meaning: &'static str,
    /// What the operator should do.
    pub fix: &'static str,
}

/// The codes a client-credentials caller meets, from `docs/protocol/entra-auth.md` §1.6.
pub static AADSTS_HINTS: &[AadstsHint] = &[
    AadstsHint {
        code: 7000215,
        meaning: "the client secret is wrong",
        fix: "use the secret's Value (shown once when it was created), not its Secret ID; create a new secret if the value is lost",
    },
    AadstsHint {
        code: 7000222,
        meaning: "the client secret has expired",
        fix: "create a new client secret on the app registration and update the configuration",
    },
    AadstsHint {
        code: 7000218,
        meaning: "the request carried no client secret and no client assertion",
        fix: "configure a credential (secret, certificate, federated token or managed identity)",
    },
    AadstsHint {
        code: 700016,
        meaning: "no application with this client id exists in this tenant",
        fix: "check the client (application) id and the tenant; a multi-tenant app needs admin consent in this tenant",
    },
    AadstsHint {
        code: 700027,
        meaning: "the certificate that signed the client assertion is not registered on the app, or the signature is invalid",
        fix: "upload this certificate's public part to the app registration (compare the SHA-1 thumbprint in the message with `warden doctor`'s), or use the matching key",
    },
    AadstsHint {
        code: 700024,
        meaning: "the client assertion is outside its valid time window",
        fix: "fix this machine's clock; for a federated token, make sure the token file is fresh (it is re-read on every request)",
    },
    AadstsHint {
        code: 700021,
        meaning: "the assertion's issuer/subject is not the client id",
        fix: "the client assertion must be issued for this app's client id",
    },
    AadstsHint {
        code: 90014,
        meaning: "a required claim is missing from the assertion",
        fix: "this is a bug in the assertion's producer; report it",
    },
    AadstsHint {
        code: 5002723,
        meaning: "the assertion names no certificate thumbprint",
        fix: "this is a bug in the assertion's producer; report it",
    },
    AadstsHint {
        code: 50027,
        meaning: "the JWT is invalid or malformed",
        fix: "for a federated token, check the token file holds one JWT; otherwise report the bug",
    },
    AadstsHint {
        code: 50012,
        meaning: "the client assertion failed authentication",
        fix: "check that the certificate registered on the app matches the key in use",
    },
    AadstsHint {
        code: 90002,
        meaning: "the tenant was not found",
        fix: "check the tenant id or domain, and the cloud (a GCC High or 21Vianet tenant needs its own authority host)",
    },
    AadstsHint {
        code: 900023,
        meaning: "the tenant identifier is neither a GUID nor a domain",
        fix: "use the tenant's GUID or a verified domain such as contoso.onmicrosoft.com",
    },
    AadstsHint {
        code: 90038,
        meaning: "the tenant belongs to another national cloud",
        fix: "set the cloud (gcchigh, dod, china) that the tenant lives in",
    },
    AadstsHint {
        code: 1002012,
        meaning: "the scope does not end in /.default",
        fix: "client-credential requests must ask for '<resource>/.default'",
    },
    AadstsHint {
        code: 70011,
        meaning: "the scope is not valid",
        fix: "ask for '<resource>/.default' for one resource",
    },
    AadstsHint {
        code: 700022,
        meaning: "the scopes name more than one resource",
        fix: "request one resource per token",
    },
    AadstsHint {
        code: 500011,
        meaning: "the resource is not known in this tenant",
        fix: "check the Exchange resource URL for your cloud, or that Exchange Online is licensed in this tenant",
    },
    AadstsHint {
        code: 901002,
        meaning: "the v2 endpoint does not accept 'resource'",
        fix: "use a scope with the v2 endpoint, or switch to the v1 endpoint",
    },
    AadstsHint {
        code: 7000112,
        meaning: "the application is disabled",
        fix: "an administrator must re-enable the app's service principal",
    },
    AadstsHint {
        code: 53003,
        meaning: "Conditional Access blocked this workload identity",
        fix: "ask the tenant's administrators to review Conditional Access for workload identities",
    },
    AadstsHint {
        code: 50196,
        meaning: "Entra detected a request loop",
        fix: "too many identical token requests: the token cache should prevent this; report it",
    },
    AadstsHint {
        code: 90055,
        meaning: "the tenant is being throttled",
        fix: "wait and retry later",
    },
    AadstsHint {
        code: 70003,
        meaning: "the grant type is not supported",
        fix: "client credentials is the only grant warden uses; report it",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hint_code_is_listed_once() {
        let mut codes: Vec<u32> = AADSTS_HINTS.iter().map(|h| h.code).collect();
        let total = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), total, "duplicate AADSTS hint rows");
    }

    #[test]
    fn rendered_error_carries_code_hint_and_ids() {
        let error = EntraError {
            status: 401,
            error: "invalid_client".into(),
            description: "AADSTS7000215: Invalid client secret provided.".into(),
            codes: vec![7000215],
            trace_id: Some("trace-1".into()),
            correlation_id: Some("corr-1".into()),
            url: "https://login.example/t/oauth2/v2.0/token".into(),
        };
        let text = error.to_string();
        for needle in [
            "AADSTS7000215",
            "invalid_client",
            "Value",
            "trace-1",
            "corr-1",
            "HTTP 401",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(!error.is_transient());
    }
}
