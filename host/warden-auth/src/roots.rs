//! The system's trusted roots, read the way OpenSSL reads them: the bundle file as the process
//! starts, the certificate directories only when a server's chain fails against the bundle.
//!
//! `rustls-native-certs` (what reqwest reads) loads the bundle *and* every file of the
//! directories at once. On Debian the directory holds the bundle's certificates again, one file
//! each: ≈ 150 opens and reads, most of a cold `warden run`'s CPU before its first request. What
//! is trusted does not change: a chain the bundle (plus the extra CA) does not verify is verified
//! again against the bundle, the directories and the extra CA, so a root found only in a
//! directory is still trusted; the directories are then read once per process.
//!
//! That is Linux and the BSDs (where `rustls-native-certs` reads files too); on macOS and
//! Windows the platform's store is read whole, as `rustls-native-certs` reads it.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::{Arc, Once, OnceLock};

/// Where the system keeps its roots: what `rustls-native-certs` reads. `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` when either is set, else the bundle and directories `openssl-probe` finds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RootPaths {
    pub(crate) bundle: Option<PathBuf>,
    pub(crate) dirs: Vec<PathBuf>,
}

impl RootPaths {
    /// The paths `var` (the process environment, in use) names, else `probe`'s.
    fn from_env(
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
        probe: impl FnOnce() -> openssl_probe::ProbeResult,
    ) -> Self {
        let bundle = var("SSL_CERT_FILE").map(PathBuf::from);
        let dirs: Vec<PathBuf> = var("SSL_CERT_DIR")
            .map(|dirs| {
                std::env::split_paths(&dirs)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if bundle.is_some() || !dirs.is_empty() {
            return Self { bundle, dirs };
        }
        let probed = probe();
        Self {
            bundle: probed.cert_file,
            dirs: probed.cert_dir,
        }
    }
}

/// Every certificate of `loaded` that parses as a trust anchor; the others (old stores hold
/// some) are skipped, as reqwest skips them. Read errors are logged, not fatal.
fn anchors(loaded: rustls_native_certs::CertificateResult) -> Vec<TrustAnchor<'static>> {
    for error in &loaded.errors {
        tracing::warn!(%error, "a system certificate store could not be read");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(loaded.certs);
    roots.roots
}

/// The system's roots: the bundle, read at once, and the directories, read on first need.
#[derive(Debug)]
pub(crate) struct SystemRoots {
    paths: RootPaths,
    bundle: Vec<TrustAnchor<'static>>,
    /// The directories' roots that the bundle lacks.
    dirs: OnceLock<Vec<TrustAnchor<'static>>>,
}

impl SystemRoots {
    /// The system's roots: the bundle and directories of [`RootPaths`] where the system keeps
    /// them in files, else the platform's store, read whole (`rustls-native-certs`).
    fn of_system() -> Self {
        if cfg!(all(unix, not(target_os = "macos"))) {
            return Self::read(RootPaths::from_env(
                |name| std::env::var_os(name),
                openssl_probe::probe,
            ));
        }
        let roots = Self {
            paths: RootPaths::default(),
            bundle: anchors(rustls_native_certs::load_native_certs()),
            dirs: OnceLock::from(Vec::new()),
        };
        roots.warn_when_empty();
        roots
    }

    /// Reads the bundle at `paths`; with no bundle (or none usable), the directories at once.
    pub(crate) fn read(paths: RootPaths) -> Self {
        let bundle = paths
            .bundle
            .as_deref()
            .map(|file| anchors(rustls_native_certs::load_certs_from_paths(Some(file), None)))
            .unwrap_or_default();
        let roots = Self {
            paths,
            bundle,
            dirs: OnceLock::new(),
        };
        if roots.bundle.is_empty() {
            // No bundle: the directories are all there is, read now.
            roots.dirs();
        }
        roots.warn_when_empty();
        roots
    }

    /// A store with no usable root is logged, not an error: the extra CA may be all a
    /// deployment trusts.
    fn warn_when_empty(&self) {
        if self.bundle.is_empty() && self.dirs.get().is_none_or(Vec::is_empty) {
            tracing::warn!(
                "the system certificate store holds no usable root: only the extra CA (WARDEN_CA_FILE) is trusted"
            );
        }
    }

    /// The bundle's roots.
    pub(crate) fn bundle(&self) -> &[TrustAnchor<'static>] {
        &self.bundle
    }

    /// The directories' roots the bundle does not hold, read by whoever asks first.
    pub(crate) fn dirs(&self) -> &[TrustAnchor<'static>] {
        self.dirs.get_or_init(|| {
            let mut extra = Vec::new();
            for dir in &self.paths.dirs {
                let loaded = rustls_native_certs::load_certs_from_paths(None, Some(dir));
                for anchor in anchors(loaded) {
                    if !self.bundle.contains(&anchor) && !extra.contains(&anchor) {
                        extra.push(anchor);
                    }
                }
            }
            extra
        })
    }
}

/// The process's system roots, read once.
static SYSTEM_ROOTS: OnceLock<Arc<SystemRoots>> = OnceLock::new();
/// Whether [`preload_system_roots`] started its reader.
static READER_STARTED: Once = Once::new();

/// Starts reading the system's trusted roots on a thread of their own, once per process: the
/// first HTTPS client then finds them read (or waits for that thread) instead of reading them
/// itself. A command calls this as it starts; making a `ReqwestTransport` calls it too.
pub fn preload_system_roots() {
    READER_STARTED.call_once(|| {
        // Without a thread, the first client reads them itself.
        let _ = std::thread::Builder::new()
            .name("system-roots".into())
            .spawn(|| {
                system_roots();
            });
    });
}

/// The system's trusted roots: read by whoever asks first (the preload's thread, or a client
/// that got there before it); everyone else waits for that one read.
pub(crate) fn system_roots() -> Arc<SystemRoots> {
    SYSTEM_ROOTS
        .get_or_init(|| Arc::new(SystemRoots::of_system()))
        .clone()
}

/// Verifies a server's chain against the extra CA and the system's bundle, and, when that
/// fails, against the extra CA, the bundle and the directories: the roots trusted are exactly
/// the three together. Signatures are checked by rustls' own verifier either way.
#[derive(Debug)]
pub(crate) struct SystemVerifier {
    extra: Vec<TrustAnchor<'static>>,
    system: Arc<SystemRoots>,
    provider: Arc<CryptoProvider>,
    first: Arc<WebPkiServerVerifier>,
    /// With the directories' roots; `None` when they add no root to `first`.
    everything: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
}

impl SystemVerifier {
    /// A verifier trusting `extra` and `system`; an error when neither holds a root.
    pub(crate) fn new(
        extra: &[TrustAnchor<'static>],
        system: Arc<SystemRoots>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let first_roots: Vec<_> = extra.iter().chain(system.bundle()).cloned().collect();
        // With neither an extra CA nor a bundle, the directories are all there is.
        let first_roots = if first_roots.is_empty() {
            system.dirs().to_vec()
        } else {
            first_roots
        };
        let first = webpki_verifier(first_roots, &provider).map_err(|e| {
            format!("no trusted root: the system store holds none and no extra CA is set ({e})")
        })?;
        Ok(Self {
            extra: extra.to_vec(),
            system,
            provider,
            first,
            everything: OnceLock::new(),
        })
    }

    fn everything(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.everything
            .get_or_init(|| {
                let dirs = self.system.dirs();
                if dirs.is_empty() || self.extra.is_empty() && self.system.bundle().is_empty() {
                    // Nothing `first` lacks.
                    return None;
                }
                let roots = self
                    .extra
                    .iter()
                    .chain(self.system.bundle())
                    .chain(dirs)
                    .cloned()
                    .collect();
                webpki_verifier(roots, &self.provider).ok()
            })
            .as_ref()
    }
}

fn webpki_verifier(
    roots: Vec<TrustAnchor<'static>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, rustls::client::VerifierBuilderError> {
    let mut store = RootCertStore::empty();
    store.roots = roots;
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone()).build()
}

impl ServerCertVerifier for SystemVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.first.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            // Any failure, not only an unknown issuer: with more roots webpki may find another
            // path, and the answer must be the one all the roots together give.
            Err(first_error) => match self.everything() {
                Some(everything) => everything.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ),
                None => Err(first_error),
            },
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.first.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    use std::path::Path;

    /// A CA and a `localhost` server certificate it issued.
    struct Ca {
        name: String,
        pem: String,
        anchor: TrustAnchor<'static>,
        server: CertificateDer<'static>,
    }

    /// Each CA has a name of its own: webpki matches a chain to a root by name first.
    fn ca() -> Ca {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca_named(&format!("roots test CA {n}"))
    }

    fn ca_named(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        let issuer = Issuer::new(params, key);
        let server = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        let mut store = RootCertStore::empty();
        store.add(cert.der().clone()).unwrap();
        Ca {
            name: name.to_owned(),
            pem: cert.pem(),
            anchor: store.roots.remove(0),
            server: server.der().clone(),
        }
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn verify(verifier: &SystemVerifier, ca: &Ca) -> Result<ServerCertVerified, rustls::Error> {
        verifier.verify_server_cert(
            &ca.server,
            &[],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    /// A bundle file holding `bundle` and a directory holding `in_dir`, one file each.
    fn store(dir: &Path, bundle: &[&Ca], in_dir: &[&Ca]) -> RootPaths {
        let file = dir.join("bundle.pem");
        let text: String = bundle.iter().map(|ca| ca.pem.as_str()).collect();
        std::fs::write(&file, text).unwrap();
        let certs = dir.join("certs");
        std::fs::create_dir(&certs).unwrap();
        for (i, ca) in in_dir.iter().enumerate() {
            std::fs::write(certs.join(format!("ca-{i}.pem")), &ca.pem).unwrap();
        }
        RootPaths {
            bundle: Some(file),
            dirs: vec![certs],
        }
    }

    #[test]
    fn a_chain_the_bundle_trusts_is_verified_without_reading_the_directories() {
        let (in_bundle, in_dir) = (ca(), ca());
        let dir = tempfile::tempdir().unwrap();
        let system = Arc::new(SystemRoots::read(store(
            dir.path(),
            &[&in_bundle],
            &[&in_dir],
        )));
        let verifier = SystemVerifier::new(&[], system.clone(), provider()).unwrap();
        verify(&verifier, &in_bundle).unwrap();
        assert!(system.dirs.get().is_none(), "the directories were read");
    }

    #[test]
    fn a_root_found_only_in_a_directory_is_still_trusted() {
        let (in_bundle, in_dir) = (ca(), ca());
        let dir = tempfile::tempdir().unwrap();
        let system = Arc::new(SystemRoots::read(store(
            dir.path(),
            &[&in_bundle],
            &[&in_dir, &in_bundle],
        )));
        let verifier = SystemVerifier::new(&[], system.clone(), provider()).unwrap();
        verify(&verifier, &in_dir).unwrap();
        // Read once; the bundle's root is not kept twice.
        assert_eq!(system.dirs(), std::slice::from_ref(&in_dir.anchor));
    }

    #[test]
    fn a_chain_no_root_trusts_is_refused_after_the_directories_are_read() {
        let (in_bundle, in_dir, stranger) = (ca(), ca(), ca());
        let dir = tempfile::tempdir().unwrap();
        let system = Arc::new(SystemRoots::read(store(
            dir.path(),
            &[&in_bundle],
            &[&in_dir],
        )));
        let verifier = SystemVerifier::new(&[], system.clone(), provider()).unwrap();
        let error = verify(&verifier, &stranger).unwrap_err();
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{error:?}"
        );
        assert!(system.dirs.get().is_some());
    }

    #[test]
    fn the_extra_ca_is_trusted_beside_the_bundle() {
        let (in_bundle, extra) = (ca(), ca());
        let dir = tempfile::tempdir().unwrap();
        let system = Arc::new(SystemRoots::read(store(dir.path(), &[&in_bundle], &[])));
        let verifier =
            SystemVerifier::new(std::slice::from_ref(&extra.anchor), system, provider()).unwrap();
        verify(&verifier, &extra).unwrap();
        verify(&verifier, &in_bundle).unwrap();
    }

    #[test]
    fn without_a_bundle_the_directories_are_read_at_once() {
        let in_dir = ca();
        let dir = tempfile::tempdir().unwrap();
        let mut paths = store(dir.path(), &[], &[&in_dir]);
        paths.bundle = None;
        let system = Arc::new(SystemRoots::read(paths));
        assert!(system.dirs.get().is_some());
        let verifier = SystemVerifier::new(&[], system, provider()).unwrap();
        verify(&verifier, &in_dir).unwrap();
    }

    #[test]
    fn with_no_root_anywhere_the_verifier_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let system = Arc::new(SystemRoots::read(store(dir.path(), &[], &[])));
        let error = SystemVerifier::new(&[], system, provider()).unwrap_err();
        assert!(error.contains("no trusted root"), "{error}");
    }

    fn probed() -> openssl_probe::ProbeResult {
        openssl_probe::ProbeResult {
            cert_file: Some("/probed/bundle.pem".into()),
            cert_dir: vec!["/probed/certs".into()],
        }
    }

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.into())
        }
    }

    #[test]
    fn without_ssl_cert_variables_the_probed_places_are_read() {
        let paths = RootPaths::from_env(env(&[]), probed);
        assert_eq!(paths.bundle, Some("/probed/bundle.pem".into()));
        assert_eq!(paths.dirs, vec![PathBuf::from("/probed/certs")]);
    }

    #[test]
    fn ssl_cert_file_alone_means_that_file_and_no_directory() {
        let paths = RootPaths::from_env(env(&[("SSL_CERT_FILE", "/mine.pem")]), probed);
        assert_eq!(paths.bundle, Some("/mine.pem".into()));
        assert!(paths.dirs.is_empty());
    }

    #[test]
    fn ssl_cert_dir_alone_means_those_directories_and_no_bundle() {
        let paths = RootPaths::from_env(env(&[("SSL_CERT_DIR", "/a::/b")]), probed);
        assert_eq!(paths.bundle, None);
        assert_eq!(paths.dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    }

    /// A CA named like a trusted one but holding another key: its chain fails against the
    /// bundle (a bad signature, not an unknown issuer) and against the directories too.
    #[test]
    fn an_impostor_of_a_trusted_root_is_refused() {
        let trusted = ca();
        let impostor = ca_named(&trusted.name);
        let dir = tempfile::tempdir().unwrap();
        let system = Arc::new(SystemRoots::read(store(
            dir.path(),
            &[&trusted],
            &[&trusted],
        )));
        let verifier = SystemVerifier::new(&[], system, provider()).unwrap();
        verify(&verifier, &trusted).unwrap();
        let error = verify(&verifier, &impostor).unwrap_err();
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
            ),
            "{error:?}"
        );
    }

    /// Bundle plus directories are the roots reqwest's own reader (`rustls-native-certs`)
    /// finds on this machine, each once.
    #[test]
    fn the_system_roots_together_are_what_rustls_native_certs_reads() {
        let system = system_roots();
        let mut ours: Vec<_> = system.bundle().iter().chain(system.dirs()).collect();
        let mut theirs = RootCertStore::empty();
        theirs.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let mut theirs: Vec<_> = theirs.roots.iter().collect();
        let key = |a: &&TrustAnchor<'_>| {
            (
                a.subject.as_ref().to_vec(),
                a.subject_public_key_info.as_ref().to_vec(),
            )
        };
        ours.sort_by_key(key);
        theirs.sort_by_key(key);
        // Two certificates (a root re-issued) can make the same anchor.
        ours.dedup();
        theirs.dedup();
        assert_eq!(ours, theirs);
        // Read once: a later call hands out the same roots.
        assert!(Arc::ptr_eq(&system_roots(), &system_roots()));
    }
}
