//! Where the service listens and how: plain HTTP only on a loopback address (nothing else can
//! reach it, so the session cookie cannot be sniffed), TLS (rustls on *ring*) everywhere else.

use crate::ServeError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The certificate chain and key a TLS listener presents (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Refuses plain HTTP on anything but loopback.
pub fn check_bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<(), ServeError> {
    if tls.is_none() && !addr.ip().is_loopback() {
        return Err(ServeError::Config(format!(
            "--bind {addr}: plain HTTP is allowed only on a loopback address (127.0.0.1, ::1), \
             where nobody else can read the session cookies\n  fix: pass --tls-cert FILE and \
             --tls-key FILE, or bind 127.0.0.1 behind a TLS-terminating proxy"
        )));
    }
    Ok(())
}

/// A rustls server configuration from PEM files, on the *ring* provider.
pub fn rustls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            ServeError::Config(format!(
                "{}: the TLS {what} cannot be read: {e}\n  fix: check the path and its permissions",
                path.display()
            ))
        })
    };
    let cert_pem = read(&files.cert, "certificate")?;
    let key_pem = read(&files.key, "key")?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            ServeError::Config(format!(
                "{}: not a PEM certificate chain: {e}\n  fix: give the certificate chain in PEM, leaf first",
                files.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ServeError::Config(format!(
            "{}: no certificate in it\n  fix: give the certificate chain in PEM, leaf first",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        ServeError::Config(format!(
            "{}: no usable private key in it ({e})\n  fix: give the key in PEM (PKCS#8, PKCS#1 or SEC1)",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            ServeError::Config(format!(
                "{} and {}: not a usable certificate and key: {e}\n  fix: check that the key belongs to the certificate",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        let tls = TlsFiles {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        };
        for ok in ["127.0.0.1:0", "[::1]:8443", "127.0.0.2:80"] {
            assert!(check_bind(ok.parse().unwrap(), None).is_ok(), "{ok}");
        }
        for refused in ["0.0.0.0:8080", "[::]:8080", "192.168.1.4:80"] {
            let error = check_bind(refused.parse().unwrap(), None).unwrap_err();
            assert!(error.to_string().contains("--tls-cert"), "{error}");
            assert!(check_bind(refused.parse().unwrap(), Some(&tls)).is_ok());
        }
    }
}
