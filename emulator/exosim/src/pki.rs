//! Keys and certificates made at start: the loopback test CA and server certificate, the RSA
//! token-signing and federation-issuer keys, and app certificates with their PFX and PEM files.
//!
//! Everything is generated once, when the emulator starts (2048-bit RSA generation takes a good
//! part of a second); nothing here runs per request. It refuses non-RSA app certificates (Entra
//! client assertions here are RS256/PS256 only) and it writes private keys with owner-only
//! permissions. The server certificate is ECDSA P-256 under an ECDSA CA, signed with *ring*.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rsa::pkcs8::{DecodePublicKey as _, EncodePrivateKey as _, LineEnding};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::jose::b64url;

/// SHA-1 and SHA-256 thumbprints of a certificate's DER encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Thumbprints {
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
}

impl Thumbprints {
    pub(crate) fn of(der: &[u8]) -> Self {
        Thumbprints {
            sha1: Sha1::digest(der).into(),
            sha256: Sha256::digest(der).into(),
        }
    }

    /// Upper-case hex SHA-1, as the portal and AADSTS700027 show it.
    pub(crate) fn sha1_hex(&self) -> String {
        hex_upper(&self.sha1)
    }

    /// Upper-case hex SHA-256.
    pub(crate) fn sha256_hex(&self) -> String {
        hex_upper(&self.sha256)
    }

    /// `x5t`: base64url of the SHA-1 bytes.
    pub(crate) fn x5t(&self) -> String {
        b64url(self.sha1)
    }
}

pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
}

/// PEM armour around DER, 64 columns.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let body = crate::jose::b64std(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The loopback TLS identity: a CA (`CA:TRUE`) and a server certificate for `localhost`,
/// `127.0.0.1` and `::1` issued by it.
pub(crate) struct TestCa {
    pub ca_pem: String,
    server_der: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl TestCa {
    pub(crate) fn generate() -> Result<Self> {
        let fail = |e: rcgen::Error| Error::crypto("test CA", e);
        let now = OffsetDateTime::now_utc();

        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("exosim test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = now - Duration::hours(1);
        ca_params.not_after = now + Duration::days(30);
        let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("localhost");
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().map_err(fail)?),
            // The test cloud's host names (`crate::compliance`): front doors and regional hosts
            // that tests resolve to loopback, so the client checks certificates as in production.
            SanType::DnsName("*.exosim.test".try_into().map_err(fail)?),
            SanType::DnsName("*.outlook.exosim.test".try_into().map_err(fail)?),
            SanType::DnsName("*.compliance.exosim.test".try_into().map_err(fail)?),
            SanType::DnsName("*.ps.compliance.exosim.test".try_into().map_err(fail)?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(30);
        let server_cert = params.signed_by(&server_key, &issuer).map_err(fail)?;

        Ok(TestCa {
            ca_pem: ca_cert.pem(),
            server_der: server_cert.der().clone(),
            server_key: server_key.serialize_der(),
        })
    }

    /// A rustls server configuration on the *ring* provider, offering HTTP/2 and HTTP/1.1.
    pub(crate) fn rustls_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.server_der.clone()], key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Generates a 2048-bit RSA key. Slow (hundreds of milliseconds): start-up only.
pub(crate) fn generate_rsa(what: &str) -> Result<rsa::PrivateKey> {
    rsa::PrivateKey::new(&mut rand::rngs::SysRng, 2048).map_err(|e| Error::crypto(what, e))
}

/// An RSA key with a self-signed certificate: the token-signing key, the federation issuer's
/// key, and generated app certificates.
pub(crate) struct RsaCredential {
    pub key: rsa::PrivateKey,
    /// The same key on *ring* (through rcgen), which signs tokens: an RS256 signature is
    /// deterministic, so it is the one `rsa` would make, in ≈ 0.65 ms where `rsa`'s
    /// constant-time arithmetic took ≈ 3.5 ms (docs/protocol/entra-auth.md §5).
    pub signer: KeyPair,
    pub public: rsa::PublicKey,
    pub cert_der: Vec<u8>,
    pub thumbprints: Thumbprints,
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for RsaCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaCredential")
            .field("thumbprint_sha1", &self.thumbprints.sha1_hex())
            .finish_non_exhaustive()
    }
}

impl RsaCredential {
    /// Wraps `key` in a self-signed certificate for `common_name`, valid from an hour ago for
    /// `valid_days`, signed RSA-SHA256 (what `New-SelfSignedCertificate` and `openssl req -x509`
    /// make for app registrations).
    pub(crate) fn self_signed(
        key: rsa::PrivateKey,
        common_name: &str,
        valid_days: u32,
    ) -> Result<Self> {
        let what = || format!("certificate for '{common_name}'");
        let pkcs8 = key.to_pkcs8_der().map_err(|e| Error::crypto(what(), e))?;
        let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_bytes()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(|e| Error::crypto(what(), e))?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(i64::from(valid_days));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| Error::crypto(what(), e))?;
        let cert_der = cert.der().to_vec();
        Ok(RsaCredential {
            public: key.to_public_key(),
            thumbprints: Thumbprints::of(&cert_der),
            not_after: params.not_after,
            key,
            signer: key_pair,
            cert_der,
        })
    }

    /// PKCS#8 PEM of the private key.
    pub(crate) fn key_pem(&self) -> Result<String> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|e| Error::crypto("PKCS#8 PEM", e))
    }

    /// A PFX (PKCS#12, AES-256/PBKDF2 with an HMAC-SHA256 MAC) holding the key and certificate.
    pub(crate) fn pfx(&self, alias: &str, password: &str) -> Result<Vec<u8>> {
        let fail = |e: p12_keystore::error::Error| Error::crypto(format!("PFX for '{alias}'"), e);
        let pkcs8 = self
            .key
            .to_pkcs8_der()
            .map_err(|e| Error::crypto("PKCS#8 DER", e))?;
        let key = p12_keystore::PrivateKey::from_der(pkcs8.as_bytes()).map_err(fail)?;
        let cert = p12_keystore::Certificate::from_der(&self.cert_der).map_err(fail)?;
        let chain = p12_keystore::PrivateKeyChain::new(self.thumbprints.sha1.to_vec(), key, [cert]);
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry(alias, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        store.writer(password).write().map_err(fail)
    }
}

/// Reads an RSA certificate from a PEM file, for `cert_pem =` in the tenants file.
pub(crate) fn read_cert_pem(path: &Path) -> Result<(Vec<u8>, rsa::PublicKey, OffsetDateTime)> {
    let bytes = std::fs::read(path).map_err(|e| Error::state("read certificate", path, e))?;
    let bad = |reason: String| Error::InvalidConfig {
        path: Some(path.to_owned()),
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    let der = pem.contents;
    let (public, not_after) = rsa_public_key(&der).map_err(bad)?;
    Ok((der, public, not_after))
}

/// The RSA public key and expiry of a DER certificate; refuses non-RSA keys.
pub(crate) fn rsa_public_key(
    der: &[u8],
) -> std::result::Result<(rsa::PublicKey, OffsetDateTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = cert.public_key().raw;
    let public = rsa::PublicKey::from_public_key_der(spki).map_err(|_| {
        "the certificate's key is not RSA (client assertions here are RS256/PS256)".to_owned()
    })?;
    Ok((public, cert.validity().not_after.to_datetime()))
}

/// Writes `bytes` to `path`; `private` files are created owner-read/write only.
pub(crate) fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .map_err(|e| Error::state("write", path, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::state("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_pem() {
        assert_eq!(hex_upper(&[0x0a, 0xff]), "0AFF");
        let text = pem("CERTIFICATE", &[0u8; 60]);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn test_ca_builds_a_ring_server_config() {
        let ca = TestCa::generate().unwrap();
        assert!(ca.ca_pem.contains("BEGIN CERTIFICATE"));
        let config = ca.rustls_config().unwrap();
        assert_eq!(config.alpn_protocols.len(), 2);
    }
}
