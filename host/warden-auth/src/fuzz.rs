//! Body of the `token_claims` fuzz target in `tests/fuzz`, here so plain `cargo test` runs it
//! over the seed corpus too. Not a public API.
//!
//! It feeds arbitrary bytes to what this crate decodes from Entra's answers: the token
//! endpoint's body ([`parse_token_success`], [`parse_entra_error`]) and the access token's
//! claims ([`decode_claims`], [`diagnose`], [`static_token_expiry`]), and checks what must hold
//! beyond "no panic": the diagnosis is consistent, names a fix for every failure, keeps only
//! the summary claims, and never carries the token's signature or the token itself.

use crate::credential::static_token_expiry;
use crate::diagnose::{Diagnosis, Expectations, Status, decode_claims, diagnose};
use crate::endpoint::{parse_entra_error, parse_token_success};
use crate::secret::Secret;
use crate::transport::HttpResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Put in place of the token's signature: it must never reach the diagnosis.
const SIGNATURE_CANARY: &str = "U2lnbmF0dXJlQ2FuYXJ5LXpxOTc";

/// Clocks the diagnosis runs at: the epoch (claims far in the past look far in the future),
/// a recent date, and the largest `i64` seconds a `SystemTime` holds comfortably.
fn clocks() -> [SystemTime; 3] {
    [
        UNIX_EPOCH,
        UNIX_EPOCH + Duration::from_secs(1_750_000_000),
        UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2),
    ]
}

fn expectations() -> [Expectations; 2] {
    [
        Expectations::default(),
        Expectations {
            tenant: Some("11111111-1111-1111-1111-111111111111".into()),
            resource: Some("https://outlook.office365.com".into()),
            client_id: Some("22222222-2222-2222-2222-222222222222".into()),
        },
    ]
}

/// `token_claims`: the input as an access token and as a token endpoint's body.
pub fn token_claims(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    claims_of(&text);
    // The same header and payload with a known signature: the canary must not come out.
    let mut parts = text.splitn(3, '.');
    if let (Some(header), Some(payload)) = (parts.next(), parts.next()) {
        let signed = format!("{header}.{payload}.{SIGNATURE_CANARY}");
        let decoded = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .unwrap_or_default();
        let payload_has_it = String::from_utf8_lossy(&decoded).contains(SIGNATURE_CANARY)
            || header.contains(SIGNATURE_CANARY)
            || payload.contains(SIGNATURE_CANARY);
        for diagnosis in claims_of(&signed) {
            if !payload_has_it {
                let shown = format!(
                    "{diagnosis:?}{}",
                    serde_json::to_string(&diagnosis).expect("a diagnosis serialises")
                );
                assert!(
                    !shown.contains(SIGNATURE_CANARY),
                    "the signature reached the diagnosis"
                );
            }
        }
    }
    token_response(data);
}

/// Diagnoses `token` at every clock against every expectation, checks each diagnosis, and
/// returns them.
fn claims_of(token: &str) -> Vec<Diagnosis> {
    let claims = decode_claims(token);
    let mut diagnoses = Vec::new();
    for now in clocks() {
        // A pre-acquired token's lifetime: its exp when representable, else an hour.
        let expiry = static_token_expiry(&Secret::new(token.to_owned()), now);
        let exp = claims
            .as_ref()
            .and_then(|c| c.get("exp"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|e| UNIX_EPOCH.checked_add(Duration::from_secs(e)));
        assert_eq!(expiry, exp.unwrap_or(now + Duration::from_secs(3600)));

        for expected in expectations() {
            let diagnosis = diagnose(token, &expected, now);
            check_diagnosis(&diagnosis, claims.as_ref());
            diagnoses.push(diagnosis);
        }
    }
    diagnoses
}

fn check_diagnosis(
    diagnosis: &Diagnosis,
    claims: Option<&serde_json::Map<String, serde_json::Value>>,
) {
    assert_eq!(diagnosis.decodable, claims.is_some());
    let Some(claims) = claims else {
        assert!(diagnosis.claims.is_empty());
        assert_eq!(diagnosis.checks.len(), 1);
        assert_eq!(diagnosis.checks[0].status, Status::Skip);
        assert!(diagnosis.ok(), "an opaque token is skipped, not failed");
        return;
    };
    for (name, value) in &diagnosis.claims {
        assert!(
            crate::diagnose::SUMMARY_CLAIMS.contains(&name.as_str()) || name == "scp_present",
            "{name} in summary"
        );
        if name != "scp_present" {
            assert_eq!(Some(value), claims.get(name), "{name} changed");
        }
    }
    assert_eq!(
        diagnosis.claims.get("scp_present"),
        Some(&serde_json::Value::Bool(claims.contains_key("scp")))
    );
    let mut names = HashSet::new();
    for check in &diagnosis.checks {
        assert!(names.insert(check.name), "{} checked twice", check.name);
        if check.status == Status::Fail {
            assert!(check.fix.is_some(), "{} failed without a fix", check.name);
        }
    }
    for always in [
        "tenant",
        "audience",
        "app-only",
        "app role",
        "directory role",
        "lifetime",
    ] {
        assert!(names.contains(always), "no {always} check");
    }
    assert_eq!(
        diagnosis.ok(),
        diagnosis.checks.iter().all(|c| c.status != Status::Fail)
    );
}

/// The input as a token endpoint's answer: a success body gives a token with a sane
/// lifetime whose claims diagnose like any other; an error never carries the token.
fn token_response(body: &[u8]) {
    let url = "https://login.example/t/oauth2/v2.0/token";
    let received_at = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    match parse_token_success(body, url, received_at) {
        Ok(token) => {
            assert!(!token.expose().is_empty());
            assert!(token.refresh_on <= token.expires_on.max(received_at));
            check_diagnosis(
                &diagnose(token.expose(), &Expectations::default(), received_at),
                decode_claims(token.expose()).as_ref(),
            );
        }
        Err(error) => {
            let body_text = String::from_utf8_lossy(body);
            let token = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("access_token")?.as_str().map(str::to_owned));
            // Only a token that appears once in the body is the token alone (the same text
            // as, say, the token_type may rightly be quoted).
            if let Some(token) = token.filter(|t| t.len() >= 8)
                && body_text.matches(token.as_str()).count() == 1
            {
                let shown = format!("{error}{error:?}");
                assert!(!shown.contains(&token), "an error carries the token");
            }
        }
    }
    for status in [400, 401, 429, 500] {
        let response = HttpResponse {
            status,
            headers: vec![("retry-after".into(), "1.5".into())],
            body: body.to_vec(),
        };
        if let Some(error) = parse_entra_error(&response, url) {
            assert_eq!(error.status, status);
            assert!(!error.description.contains(['\r', '\n']));
            let _ = error.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_token_claims_body_survives_its_seed_corpus() {
        let seeds =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/seeds/token_claims");
        let mut n = 0;
        let mut failed = Vec::new();
        for entry in std::fs::read_dir(&seeds).expect("the seed corpus exists") {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| super::token_claims(&data)).is_err() {
                failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
            n += 1;
        }
        assert!(failed.is_empty(), "these seeds fail: {failed:?}");
        assert!(n >= 8, "only {n} seeds");
    }
}
