//! TLS to PostgreSQL, with libpq's `sslmode` meanings.
//!
//! tokio-postgres itself knows `disable`, `prefer` (its default, and libpq's) and `require`;
//! libpq's `verify-ca` and `verify-full` are read here and given to tokio-postgres as
//! `require`, with a certificate check to match:
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not verified |
//! | `require` | always | not verified (as libpq: encryption only) |
//! | `verify-ca` | always | chain to a trusted root; any host name |
//! | `verify-full` | always | chain to a trusted root, and names the host connected to |
//!
//! Trusted roots are the system's plus `database.ca_file` ([`crate::tls`]). Unlike libpq,
//! `require` never verifies, even with a CA file: the configuration refuses that pairing
//! rather than guess. Unverified or not, every handshake signature is checked against the
//! presented certificate, and SCRAM channel binding (`tls-server-end-point`) is offered.

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use regex::Regex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What is checked of the server's certificate (libpq's `sslmode`, see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateCheck {
    /// `disable`, `prefer`, `require`.
    None,
    /// `verify-ca`.
    Chain,
    /// `verify-full`.
    ChainAndName,
}

impl CertificateCheck {
    fn from_sslmode(mode: &str) -> CertificateCheck {
        match mode {
            "verify-ca" => CertificateCheck::Chain,
            "verify-full" => CertificateCheck::ChainAndName,
            _ => CertificateCheck::None,
        }
    }
}

/// `sslmode=...` in a URL's query (`postgres://...?a=b&sslmode=verify-full`).
static URL_SSLMODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([?&]sslmode=)([A-Za-z-]*)").expect("static regex"));
/// `sslmode = ...` in a key/value connection string (`host=db sslmode='verify-ca'`).
static KV_SSLMODE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"((?:^|\s)sslmode\s*=\s*)('?)([A-Za-z-]*)('?)").expect("static regex")
});

/// Parses `database.url` (a URL or a key/value string), accepting libpq's `verify-ca` and
/// `verify-full` as well. The last `sslmode` wins, as in tokio-postgres. The error names
/// what is wrong (tokio-postgres keeps that in the error's source); the parser's messages
/// name options and positions, not values, so a password is not repeated.
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, CertificateCheck), String> {
    let (rewritten, check) = verify_modes_as_require(url);
    match rewritten.parse() {
        Ok(config) => Ok((config, check)),
        Err(e) => Err(crate::error_chain::with_sources(&e)),
    }
}

fn verify_modes_as_require(url: &str) -> (Cow<'_, str>, CertificateCheck) {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    // Group 1 is what precedes the mode; the mode's group differs (a key/value string
    // may quote it).
    let (pattern, mode) = if is_url {
        (&*URL_SSLMODE, 2)
    } else {
        (&*KV_SSLMODE, 3)
    };
    let mut check = CertificateCheck::None;
    let rewritten = pattern.replace_all(url, |c: &regex::Captures<'_>| {
        check = CertificateCheck::from_sslmode(&c[mode]);
        match check {
            CertificateCheck::None => c[0].to_owned(),
            _ => format!("{}require", &c[1]),
        }
    });
    (rewritten, check)
}

/// The connector for `check`, trusting the system's roots plus `ca_file`.
pub fn connector(
    check: CertificateCheck,
    ca_file: Option<&Path>,
) -> Result<MakeRustlsConnect, String> {
    let provider = crate::tls::provider();
    let algorithms = provider.signature_verification_algorithms;
    let mut config = match check {
        CertificateCheck::ChainAndName => {
            crate::tls::verifying_client(crate::tls::root_store(ca_file)?)?
        }
        CertificateCheck::Chain => crate::tls::client_with_verifier(Arc::new(WithoutName {
            roots: Some(crate::tls::root_store(ca_file)?),
            algorithms,
        }))?,
        CertificateCheck::None => crate::tls::client_with_verifier(Arc::new(WithoutName {
            roots: None,
            algorithms,
        }))?,
    };
    // What libpq sends too; PostgreSQL 17's direct TLS negotiation (`sslnegotiation=direct`)
    // requires it, older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustlsConnect::new(config))
}

/// `sslmode=prefer`/`require` (`roots: None`): any certificate is accepted; `verify-ca`
/// (`roots: Some`): the chain must lead to a trusted root, the host name is not compared.
/// Either way the handshake is still signed by the certificate's key.
#[derive(Debug)]
struct WithoutName {
    roots: Option<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for WithoutName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode;

    fn parsed(url: &str) -> (SslMode, CertificateCheck) {
        let (config, check) = parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (config.get_ssl_mode(), check)
    }

    #[test]
    fn libpq_sslmodes_in_urls_and_key_value_strings() {
        use CertificateCheck::*;
        for (url, expected) in [
            ("postgres://u@db/x", (SslMode::Prefer, None)),
            (
                "postgres://u@db/x?sslmode=disable",
                (SslMode::Disable, None),
            ),
            (
                "postgres://u@db/x?sslmode=require",
                (SslMode::Require, None),
            ),
            (
                "postgres://u@db/x?sslmode=verify-ca",
                (SslMode::Require, Chain),
            ),
            (
                "postgresql://u:p@db:5433/x?application_name=a&sslmode=verify-full",
                (SslMode::Require, ChainAndName),
            ),
            (
                "postgres://u@db/x?sslmode=verify-full&sslmode=require",
                (SslMode::Require, None),
            ),
            (
                "host=db user=u sslmode=verify-full",
                (SslMode::Require, ChainAndName),
            ),
            (
                "host=db sslmode = 'verify-ca' user=u",
                (SslMode::Require, Chain),
            ),
            ("host=db sslmode=require", (SslMode::Require, None)),
            ("host=db", (SslMode::Prefer, None)),
        ] {
            assert_eq!(parsed(url), expected, "{url}");
        }
        assert!(parse_url("postgres://u@db/x?sslmode=verify").is_err());
    }
}
