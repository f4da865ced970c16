//! TLS for the registry's own connections: to PostgreSQL (`database.url`) and to the Kubo
//! RPC API (an `https://` `ipfs.url`).
//!
//! rustls with the `ring` provider, named explicitly (never the process-wide default).
//! Trusted: the system's root certificates (`rustls-native-certs`: on Linux the OpenSSL
//! bundle, e.g. Debian's `/etc/ssl/certs/ca-certificates.crt`; `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` are honoured), plus the certificates of a PEM file when a setting names
//! one (`database.ca_file`, `ipfs.ca_file`): a private CA, or a self-signed server
//! certificate itself.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The crypto provider of every TLS connection the registry opens.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's roots, read once per process. Unparsable entries (old bundles hold a few)
/// are skipped; none at all is not an error here: a connection then fails with "unknown
/// issuer", unless a CA file provides the root.
static SYSTEM_ROOTS: LazyLock<RootCertStore> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(event = "tls_system_roots", error = %error);
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(event = "tls_system_roots", added, ignored);
    roots
});

/// The certificates of a PEM file, each checked to be usable as a trust anchor. The error
/// says what is wrong with the file; the caller names the setting.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a valid PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    let mut check = RootCertStore::empty();
    for (index, cert) in certs.iter().enumerate() {
        check.add(cert.clone()).map_err(|e| {
            format!(
                "certificate {} of {} cannot be a trust anchor: {e}",
                index + 1,
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// The system's roots, plus the certificates of `ca_file` when given.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = SYSTEM_ROOTS.clone();
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

/// A client configuration that verifies servers the usual way: the chain up to `roots`,
/// and the name the connection was made to (DNS name or IP address).
pub fn verifying_client(roots: RootCertStore) -> Result<ClientConfig, String> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client configuration that leaves the server's certificate to `verifier`.
pub fn client_with_verifier(verifier: Arc<dyn ServerCertVerifier>) -> Result<ClientConfig, String> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = read_ca_file(&missing).unwrap_err();
        assert!(error.contains("cannot read"), "{error}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = read_ca_file(&empty).unwrap_err();
        assert!(error.contains("no PEM certificate"), "{error}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = read_ca_file(&garbage).unwrap_err();
        assert!(error.contains("cannot be a trust anchor"), "{error}");
    }
}
