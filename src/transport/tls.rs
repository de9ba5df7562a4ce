//! TLS for the transport: rustls with the ring provider, the platform's
//! certificate store or a configured CA (then only that CA is trusted), and
//! client certificates for mTLS. PEM files are read once, when the target is
//! built; their contents are never printed.

use std::sync::Arc;

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig, TlsProvider};

/// A PEM file's contents, read when the target is built.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    /// Where it was read from (for messages).
    pub path: String,
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "PemFile({:?}, {} bytes)", self.path, self.pem.len())
    }
}

/// The largest PEM file read: a CA bundle (the Mozilla bundle is about
/// 220 KiB) with room to spare.
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

impl PemFile {
    /// Reads a regular file of at most [`MAX_PEM_BYTES`]. Anything else (a
    /// FIFO, which would block; `/dev/zero`, which never ends; a directory)
    /// is refused without blocking: the file is opened non-blocking and
    /// checked through its own handle.
    pub fn read(path: &str) -> Result<PemFile, String> {
        use std::io::Read as _;
        let fail = |e: &dyn std::fmt::Display| format!("cannot read {path}: {e}");
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = options.open(path).map_err(|e| fail(&e))?;
        let meta = file.metadata().map_err(|e| fail(&e))?;
        if !meta.is_file() {
            return Err(fail(&"not a regular file"));
        }
        if meta.len() > MAX_PEM_BYTES {
            return Err(fail(&format_args!(
                "{} bytes, more than a PEM file holds (at most {MAX_PEM_BYTES})",
                meta.len()
            )));
        }
        let mut pem = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_PEM_BYTES + 1)
            .read_to_end(&mut pem)
            .map_err(|e| fail(&e))?;
        if pem.len() as u64 > MAX_PEM_BYTES {
            return Err(fail(&"it grew past the PEM size limit while read"));
        }
        Ok(PemFile {
            path: path.to_string(),
            pem,
        })
    }
}

/// TLS settings beyond the defaults (the platform's certificate store, no
/// client certificate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA certificate(s): when given, ONLY these are trusted.
    pub certificate: Option<PemFile>,
    /// The client certificate chain and its key (PKCS#8, SEC1 or PKCS#1), for mTLS.
    pub client_certificate: Option<PemFile>,
    pub client_key: Option<PemFile>,
}

impl Tls {
    /// Reads the files now (their contents are kept; no file is read again).
    pub fn from_files(
        certificate: Option<&str>,
        client_certificate: Option<&str>,
        client_key: Option<&str>,
    ) -> Result<Tls, String> {
        Ok(Tls {
            certificate: certificate.map(PemFile::read).transpose()?,
            client_certificate: client_certificate.map(PemFile::read).transpose()?,
            client_key: client_key.map(PemFile::read).transpose()?,
        })
    }
}

/// What a PEM file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemRole {
    /// CA certificate(s), the only ones trusted.
    Ca,
    /// A client certificate chain, for mTLS.
    ClientCertificate,
    /// The client certificate's private key.
    ClientKey,
}

/// Reads the file at `path` and checks that it holds what `role` needs
/// (the message names the file and what is wrong).
pub fn check_pem_file(path: &str, role: PemRole) -> Result<(), String> {
    let file = PemFile::read(path)?;
    match role {
        PemRole::Ca => root_certs(&file).map(drop),
        PemRole::ClientCertificate => client_certificates(&file).map(drop),
        PemRole::ClientKey => private_key(&file).map(drop),
    }
}

/// Reads the client certificate and key files and checks that both are
/// given or neither, and that they belong together.
pub fn check_client_files(certificate: Option<&str>, key: Option<&str>) -> Result<(), String> {
    tls_config(&Tls::from_files(None, certificate, key)?).map(drop)
}

fn certificates(file: &PemFile, what: &str) -> Result<Vec<Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&file.pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("{what} {}: {e}", file.path)),
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            file.path
        ));
    }
    Ok(certs)
}

/// A client certificate chain whose first (leaf) certificate is X.509 v3:
/// rustls takes nothing else, and would otherwise blame the key.
fn client_certificates(file: &PemFile) -> Result<Vec<Certificate<'static>>, String> {
    let chain = certificates(file, "client certificate file")?;
    match x509_version(chain[0].der()) {
        Some(3) | None => Ok(chain),
        Some(v) => Err(format!(
            "client certificate file {}: X.509 v{v} certificates are not supported; issue a \
             v3 certificate",
            file.path
        )),
    }
}

/// The version (1, 2 or 3) of a DER X.509 certificate, `None` when it cannot
/// be read: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0]
/// EXPLICIT version INTEGER DEFAULT v1, ... }, ... }`.
pub fn x509_version(der: &[u8]) -> Option<u8> {
    /// The content after a tag and length at `at`, if the tag is `tag`.
    fn inside(der: &[u8], tag: u8) -> Option<&[u8]> {
        let (&first, rest) = der.split_first()?;
        if first != tag {
            return None;
        }
        let (&len, rest) = rest.split_first()?;
        if len < 0x80 {
            return rest.get(..usize::from(len));
        }
        let n = usize::from(len & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = rest
            .get(..n)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest.get(n..n + len)
    }
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    const INTEGER: u8 = 0x02;
    let tbs = inside(inside(der, SEQUENCE)?, SEQUENCE)?;
    if tbs.first() != Some(&VERSION) {
        return Some(1);
    }
    match inside(inside(tbs, VERSION)?, INTEGER)? {
        [v @ 0..=2] => Some(v + 1),
        _ => None,
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificates, each checked now (a bad one is an error here rather
/// than a silently smaller trust store).
pub(super) fn root_certs(file: &PemFile) -> Result<RootCerts, String> {
    let certs = certificates(file, "CA certificate file")?;
    let mut store = rustls::RootCertStore::empty();
    for c in &certs {
        store
            .add(rustls::pki_types::CertificateDer::from(c.der()))
            .map_err(|e| format!("CA certificate file {}: {e}", file.path))?;
    }
    Ok(RootCerts::new_with_certs(&certs))
}

/// The client certificate and key, checked now to belong together (rustls
/// would otherwise refuse them only at the first connection).
fn client_cert(cert: &PemFile, key: &PemFile) -> Result<ClientCert, String> {
    let chain = client_certificates(cert)?;
    let private = private_key(key)?;
    let der_chain = chain
        .iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.der().to_vec()))
        .collect();
    let der_key = {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&key.pem)
            .map_err(|e| format!("client key file {}: {e}", key.path))?
    };
    rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(der_chain, der_key)
        .map_err(|e| {
            format!(
                "client certificate {} and key {} cannot be used together: {e}",
                cert.path, key.path
            )
        })?;
    Ok(ClientCert::new_with_certs(&chain, private))
}

fn private_key(key: &PemFile) -> Result<PrivateKey<'static>, String> {
    PrivateKey::from_pem(&key.pem).map_err(|e| {
        format!(
            "client key file {}: {e} (a PKCS#8, SEC1 or PKCS#1 PEM private key is needed)",
            key.path
        )
    })
}

pub(super) fn tls_config(tls: &Tls) -> Result<TlsConfig, String> {
    let roots = match &tls.certificate {
        Some(file) => root_certs(file)?,
        None => RootCerts::PlatformVerifier,
    };
    let client = match (&tls.client_certificate, &tls.client_key) {
        (Some(cert), Some(key)) => Some(client_cert(cert, key)?),
        (None, None) => None,
        (Some(cert), None) => {
            return Err(format!(
                "client certificate {} given without a client key",
                cert.path
            ))
        }
        (None, Some(key)) => {
            return Err(format!(
                "client key {} given without a client certificate",
                key.path
            ))
        }
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(ring())
        .root_certs(roots)
        .client_cert(client)
        .build())
}

/// A TLS failure in plain words; `url` is the endpoint as messages show it
/// ([`shown_url`](super::url::shown_url): no password).
pub(super) fn tls_message(e: &rustls::Error, url: &str) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::Other(other))
            if format!("{other:?}").contains("CaUsedAsEndEntity") =>
        {
            format!(
                "TLS certificate error with {url}: the server's certificate is a CA \
                 certificate (basic constraints CA:TRUE), which TLS does not accept as a \
                 server certificate; give the server a certificate without the CA flag, \
                 signed by the CA"
            )
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => format!(
            "TLS certificate error with {url}: the server's certificate is not signed by a \
             trusted CA (set otlp_certificate or OTEL_EXPORTER_OTLP_CERTIFICATE to the CA's \
             PEM file, or add the CA to the system's store)"
        ),
        rustls::Error::InvalidCertificate(c) => {
            format!("TLS certificate error with {url}: the server's certificate was refused: {c}")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "TLS error with {url}: the server ended the handshake ({alert:?}); it may require \
             a client certificate (otlp_client_certificate and otlp_client_key, or \
             OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY) or \
             refuse the one sent"
        ),
        other => format!("TLS error with {url}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_of_a_pem_size_is_read() {
        for (path, why) in [
            ("/dev/zero", "not a regular file"),
            ("/", "not a regular file"),
            ("/nonexistent/ca.pem", "cannot read"),
        ] {
            let e = PemFile::read(path).unwrap_err();
            assert!(e.starts_with(&format!("cannot read {path}: ")), "{e}");
            assert!(e.contains(why), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("tasker-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO is refused at once, not waited on.
        let fifo = dir.join("ca.fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo only creates the named file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = PemFile::read(fifo.to_str().unwrap()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_PEM_BYTES as usize + 1]).unwrap();
        let e = PemFile::read(big.to_str().unwrap()).unwrap_err();
        assert!(e.contains("more than a PEM file holds"), "{e}");
        let ok = dir.join("ok.pem");
        std::fs::write(&ok, b"-----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(PemFile::read(ok.to_str().unwrap()).unwrap().pem.len(), 28);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_x509_version_is_read_from_the_tbs_certificate() {
        // No [0] version field: v1.
        let v1 = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(x509_version(&v1), Some(1));
        // [0] { INTEGER 2 }: v3.
        let v3 = [
            0x30, 0x0a, 0x30, 0x08, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x01,
        ];
        assert_eq!(x509_version(&v3), Some(3));
        // Long-form lengths.
        let long = [0x30, 0x81, 0x05, 0x30, 0x81, 0x02, 0x02, 0x00];
        assert_eq!(x509_version(&long), Some(1));
        assert_eq!(x509_version(&[0x04, 0x00]), None);
        assert_eq!(x509_version(&[]), None);
    }
}
