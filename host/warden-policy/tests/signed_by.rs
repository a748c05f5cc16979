//! `[trust.*]` entries and grants with `signed_by` / `min_version`: what loads, and which
//! refusal each signature verdict gets.

use std::path::Path;
use warden_policy::{PluginSignature, Policy, Principal, SignatureVerdict};
use warden_signature::SecretKey;

fn policy(trust: &str, grant: &str) -> Result<Policy, String> {
    Policy::parse(
        &format!(
            "version = 1\n{trust}\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\n\n[[grant]]\nplugin = \"p\"\n{grant}\nroles = [\"r\"]\n"
        ),
        Path::new("test.toml"),
    )
    .map_err(|e| e.to_string())
}

fn trust(name: &str, key: &SecretKey, extra: &str) -> String {
    format!(
        "[trust.{name}]\npublic_key = \"\"\"\n{}\"\"\"\n{extra}\n",
        key.public_key().to_pem()
    )
}

fn plugin(verdict: SignatureVerdict, version: Option<&str>) -> Principal {
    Principal::Plugin {
        name: "p".into(),
        sha256: "0".repeat(64),
        signature: Some(PluginSignature {
            verdict,
            version: version.map(str::to_owned),
            name_signed: true,
        }),
    }
}

fn verified(key: &SecretKey) -> SignatureVerdict {
    verified_by(&[key])
}

fn verified_by(keys: &[&SecretKey]) -> SignatureVerdict {
    SignatureVerdict::Verified {
        key_ids: keys
            .iter()
            .map(|k| k.public_key().key_id().to_string())
            .collect(),
    }
}

fn refusal(p: &Policy, principal: &Principal) -> String {
    p.grant_for(principal, None).unwrap_err().reason
}

#[test]
fn each_verdict_gets_its_own_refusal() {
    let acme = SecretKey::generate();
    let other = SecretKey::generate();
    let p = policy(
        &trust("acme", &acme, ""),
        "signed_by = \"acme\"\nmin_version = \"1.2.0\"",
    )
    .unwrap();
    assert_eq!(p.trusted_keys(), vec![acme.public_key()]);
    assert!(
        p.grant_for(&plugin(verified(&acme), Some("1.2.0")), None)
            .is_ok()
    );
    assert!(
        p.grant_for(&plugin(verified(&acme), Some("2.0.0")), None)
            .is_ok()
    );
    let cases = [
        (
            plugin(SignatureVerdict::Unsigned, Some("1.2.0")),
            "it is unsigned",
        ),
        (
            plugin(verified(&other), Some("1.2.0")),
            "signed by another key",
        ),
        (
            plugin(
                SignatureVerdict::OtherKey {
                    key_ids: vec![other.public_key().key_id().to_string()],
                },
                None,
            ),
            "signed by another key",
        ),
        (
            plugin(
                SignatureVerdict::Tampered {
                    key_id: acme.public_key().key_id().to_string(),
                },
                None,
            ),
            "changed after it was signed",
        ),
        (
            plugin(
                SignatureVerdict::Invalid {
                    reason: "two".into(),
                },
                None,
            ),
            "its signature is refused: two",
        ),
        (
            plugin(verified(&acme), Some("1.1.9")),
            "older than the grant's min_version 1.2.0",
        ),
        (plugin(verified(&acme), None), "states no version"),
        (
            plugin(verified(&acme), Some("latest")),
            "not a semantic version",
        ),
        (Principal::plugin("p", b"x"), "not checked"),
    ];
    for (principal, says) in cases {
        let reason = refusal(&p, &principal);
        assert!(reason.contains(says), "{says:?}: {reason}");
    }
}

#[test]
fn revoked_keys_are_refused_listed_or_not_and_warned_about() {
    let old = SecretKey::generate();
    let new = SecretKey::generate();
    let old_id = old.public_key().key_id().to_string();
    let p = policy(
        &format!(
            "[trust.acme]\npublic_keys = [\"\"\"\n{}\"\"\", \"\"\"\n{}\"\"\"]\nrevoked = [\"{old_id}\"]\n",
            old.public_key().to_pem(),
            new.public_key().to_pem()
        ),
        "signed_by = \"acme\"",
    )
    .unwrap();
    assert!(refusal(&p, &plugin(verified(&old), None)).contains("which the policy revokes"));
    assert!(p.grant_for(&plugin(verified(&new), None), None).is_ok());
    let unlisted = policy(
        &trust("acme", &new, &format!("revoked = [\"{old_id}\"]")),
        "signed_by = \"acme\"",
    )
    .unwrap();
    let by_old = plugin(
        SignatureVerdict::OtherKey {
            key_ids: vec![old_id.clone()],
        },
        None,
    );
    assert!(refusal(&unlisted, &by_old).contains("revokes"));
    let only = policy(
        &trust("acme", &old, &format!("revoked = [\"{old_id}\"]")),
        "signed_by = \"acme\"",
    )
    .unwrap();
    assert!(
        only.warnings()
            .iter()
            .any(|w| w.contains("every key it lists is revoked")),
        "{:?}",
        only.warnings()
    );
}

#[test]
fn a_pin_and_a_signer_must_both_hold() {
    let acme = SecretKey::generate();
    let p = policy(
        &trust("acme", &acme, ""),
        &format!("signed_by = \"acme\"\nsha256 = \"{}\"", "0".repeat(64)),
    )
    .unwrap();
    assert!(p.grant_for(&plugin(verified(&acme), None), None).is_ok());
    assert!(refusal(&p, &plugin(SignatureVerdict::Unsigned, None)).contains("unsigned"));
    let mut other_build = plugin(verified(&acme), None);
    if let Principal::Plugin { sha256, .. } = &mut other_build {
        *sha256 = "1".repeat(64);
    }
    assert!(refusal(&p, &other_build).contains("pins plugin p"));
}

#[test]
fn bad_trust_entries_fail_at_load() {
    let acme = SecretKey::generate();
    let cases = [
        (
            "[trust.acme]\npublic_key = \"bm90IGEga2V5\"\n",
            "signed_by = \"acme\"",
            "not an Ed25519 public key",
        ),
        ("[trust.acme]\n", "signed_by = \"acme\"", "lists no key"),
        (
            &*trust("acme", &acme, "revoked = [\"abc\"]"),
            "signed_by = \"acme\"",
            "is not 24 hex digits",
        ),
        (
            &*trust("acme", &acme, ""),
            "signed_by = \"acne\"",
            "names no [trust.acne] entry (the policy trusts acme)",
        ),
        ("", "signed_by = \"acme\"", "the policy has none"),
        (
            &*trust("acme", &acme, ""),
            "signed_by = \"acme\"\nmin_version = \"one\"",
            "not a semantic version",
        ),
        (
            &*trust("acme", &acme, ""),
            &format!("min_version = \"1.0.0\"\nsha256 = \"{}\"", "0".repeat(64)),
            "min_version needs signed_by",
        ),
        (
            &*trust("acme", &acme, ""),
            "",
            "sha256 = \"…\" (the component's hash), signed_by",
        ),
    ];
    for (trust, grant, says) in cases {
        let error = policy(trust, grant).unwrap_err();
        assert!(error.contains(says), "{says:?}: {error}");
    }
}

#[test]
fn a_name_from_the_file_name_gets_no_signed_by_grant() {
    let acme = SecretKey::generate();
    let p = policy(&trust("acme", &acme, ""), "signed_by = \"acme\"").unwrap();
    let mut renamed = plugin(verified(&acme), None);
    if let Principal::Plugin {
        signature: Some(signature),
        ..
    } = &mut renamed
    {
        signature.name_signed = false;
    }
    assert!(
        refusal(&p, &renamed).contains("its name comes from the file name, not a signed manifest"),
        "{}",
        refusal(&p, &renamed)
    );
    // A sha256 pin alone does not care where the name came from (the hash fixes the build).
    let pinned = policy(
        &trust("acme", &acme, ""),
        &format!("sha256 = \"{}\"", "0".repeat(64)),
    )
    .unwrap();
    assert!(pinned.grant_for(&renamed, None).is_ok());
}

#[test]
fn of_several_verifying_keys_the_publishers_current_one_counts() {
    let old = SecretKey::generate();
    let new = SecretKey::generate();
    let stranger = SecretKey::generate();
    let old_id = old.public_key().key_id().to_string();
    let new_id = new.public_key().key_id().to_string();
    let rotated = policy(
        &format!(
            "[trust.acme]\npublic_keys = [\"\"\"\n{}\"\"\", \"\"\"\n{}\"\"\"]\nrevoked = [\"{old_id}\"]\n",
            old.public_key().to_pem(),
            new.public_key().to_pem()
        ),
        "signed_by = \"acme\"",
    )
    .unwrap();
    // Signed by the revoked old key and the current one, in either order: accepted, and the
    // counted signer is the current key.
    for keys in [[&old, &new], [&new, &old]] {
        let principal = plugin(verified_by(&keys), None);
        assert!(rotated.grant_for(&principal, None).is_ok());
        let SignatureVerdict::Verified { key_ids } = verified_by(&keys) else {
            unreachable!()
        };
        assert_eq!(rotated.signer_for("p", &key_ids), Some(&new_id));
    }
    assert!(refusal(&rotated, &plugin(verified(&old), None)).contains("revokes"));

    // Signed by another trusted publisher and by acme: acme's grant takes acme's key.
    let two = policy(
        &format!(
            "{}{}",
            trust("acme", &new, ""),
            trust("beta", &stranger, "")
        ),
        "signed_by = \"acme\"",
    )
    .unwrap();
    for keys in [[&stranger, &new], [&new, &stranger]] {
        assert!(
            two.grant_for(&plugin(verified_by(&keys), None), None)
                .is_ok()
        );
    }
    assert!(refusal(&two, &plugin(verified(&stranger), None)).contains("another key"));
}

#[test]
fn a_key_revoked_by_any_trust_entry_is_revoked_for_every_publisher() {
    let acme = SecretKey::generate();
    let beta = SecretKey::generate();
    let acme_id = acme.public_key().key_id().to_string();
    let p = policy(
        &format!(
            "{}{}",
            trust("acme", &acme, ""),
            trust("beta", &beta, &format!("revoked = [\"{acme_id}\"]"))
        ),
        "signed_by = \"acme\"",
    )
    .unwrap();
    assert!(p.is_revoked(&acme_id));
    assert!(
        refusal(&p, &plugin(verified(&acme), None)).contains("which the policy revokes"),
        "{}",
        refusal(&p, &plugin(verified(&acme), None))
    );
    assert!(
        p.warnings()
            .iter()
            .any(|w| w.contains("trust acme: every key it lists is revoked")),
        "{:?}",
        p.warnings()
    );
}
