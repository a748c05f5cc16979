//! SecureString parameters over REST: the ExchangeOnlineManagement module encrypts them with
//! the service's RSA public key (PKCS#1 v1.5, base64; `Encrypt-Value` in the generated module,
//! Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`), so the service decrypts them with its
//! private key. exosim publishes its own public key (`secure_string_public_key` in the ready
//! info, the module's `<RSAKeyValue>` form) and decrypts with the private half.
//!
//! A value that is not a base64 RSA block under that key — plain text from a client that does
//! not encrypt, or a block under another key — is refused. Our guess at the service's answer
//! (not recorded in any source): the binder's transformation error, a 400, which names the
//! parameter and never echoes the value.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::traits::PublicKeyParts as _;
use serde_json::Value;

use super::cmdlets::ExoError;

/// The public key in the module's `<RSAKeyValue>` XML form.
pub(crate) fn public_key_xml(key: &rsa::PublicKey) -> String {
    let b64 = |n: &rsa::BoxedUint| {
        let bytes = n.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        STANDARD.encode(&bytes[first..])
    };
    format!(
        "<RSAKeyValue><Modulus>{}</Modulus><Exponent>{}</Exponent></RSAKeyValue>",
        b64(key.n().as_ref()),
        b64(key.e())
    )
}

/// The plain text of `value`, which must be a base64 PKCS#1 v1.5 block under `key`.
pub(crate) fn unseal(key: &rsa::PrivateKey, name: &str, value: &Value) -> Result<String, ExoError> {
    let refuse = || {
        ExoError::transformation(
            name,
            "Cannot convert the value to type \"System.Security.SecureString\": it is not encrypted with the service's public key.",
        )
    };
    let text = value.as_str().ok_or_else(refuse)?;
    let sealed = STANDARD.decode(text.trim()).map_err(|_| refuse())?;
    let plain = key
        .decrypt(rsa::Pkcs1v15Encrypt, &sealed)
        .map_err(|_| refuse())?;
    String::from_utf8(plain).map_err(|_| refuse())
}

/// Entra's default password policy for a mailbox's account: 8 to 256 characters, three of
/// upper case, lower case, digits and symbols. Exchange's error text for a weak password is
/// our guess (not in our sources); it never quotes the password.
pub(crate) fn check_password_policy(name: &str, password: &str) -> Result<(), ExoError> {
    let classes = [
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ];
    let length = password.chars().count();
    if (8..=256).contains(&length) && classes.iter().filter(|c| **c).count() >= 3 {
        return Ok(());
    }
    Err(ExoError::task(
        "Ex4F8B0D",
        "Microsoft.Exchange.Data.Directory.InvalidPasswordException",
        format!(
            "The value of {name} doesn't meet the password policy: it must be 8 to 256 characters and use three of upper case letters, lower case letters, numbers and symbols."
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_and_foreign_blocks_are_refused_without_the_value() {
        let key = crate::pki::generate_rsa("test").unwrap();
        for value in [
            Value::from("Hunter2-canary!"),
            Value::from(STANDARD.encode([7u8; 256])),
            Value::from(31337),
        ] {
            let error = unseal(&key, "Password", &value).unwrap_err();
            let text = error.details_message();
            assert!(text.contains("'Password'"), "{text}");
            assert!(
                !text.contains("Hunter2") && !text.contains("31337"),
                "{text}"
            );
        }
        let sealed = key
            .to_public_key()
            .encrypt(
                &mut rand::rngs::SysRng,
                rsa::Pkcs1v15Encrypt,
                b"Hunter2-canary!",
            )
            .unwrap();
        let plain = unseal(&key, "Password", &Value::from(STANDARD.encode(sealed))).unwrap();
        assert_eq!(plain, "Hunter2-canary!");
        assert!(
            public_key_xml(&key.to_public_key())
                .ends_with("<Exponent>AQAB</Exponent></RSAKeyValue>")
        );
    }

    #[test]
    fn password_policy() {
        assert!(check_password_policy("Password", "Correct-Horse-9").is_ok());
        for weak in ["short1A", "alllowercaseletters", "ALLUPPER12345"] {
            let text = check_password_policy("Password", weak)
                .unwrap_err()
                .details_message();
            assert!(!text.contains(weak), "{text}");
        }
    }
}
