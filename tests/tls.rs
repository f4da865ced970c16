//! TLS on the registry's own connections: PostgreSQL with libpq's `sslmode` against the
//! test server (which offers TLS: `scripts/services.sh`, `ensure_postgres`), and an
//! `https://` Kubo RPC URL through a TLS-terminating proxy in front of the test IPFS node.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cli::{serve_command, Served};
use common::oci::{expect_status, Oci};
use ipfs_registry::blobs::{BlobStore, ImportProfile};
use ipfs_registry::config::DatabaseConfig;
use ipfs_registry::meta::postgres::PostgresStore;
use ipfs_registry::meta::MetadataStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

async fn admin() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&common::admin_database_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    client
}

async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"))
        .get(0)
}

/// The certificate file of the test server, which must offer TLS.
async fn server_certificate() -> PathBuf {
    let client = admin().await;
    assert_eq!(
        show(&client, "ssl").await,
        "on",
        "the test PostgreSQL ({}) does not offer TLS; scripts/services.sh (ensure_postgres) \
         turns it on",
        common::admin_database_url()
    );
    // A relative ssl_cert_file is relative to the data directory; join keeps an absolute one.
    Path::new(&show(&client, "data_directory").await).join(show(&client, "ssl_cert_file").await)
}

/// Whether the (first) certificate in `pem` names `host`.
fn certificate_names(pem: &Path, host: &str) -> bool {
    let der = CertificateDer::from_pem_file(pem).expect("a PEM certificate");
    let cert = rustls::server::ParsedCertificate::try_from(&der).expect("a parsable certificate");
    let name = ServerName::try_from(host.to_owned()).expect("a host name");
    rustls::client::verify_server_name(&cert, &name).is_ok()
}

fn with_query(url: &str, pair: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{pair}")
}

fn database_config(url: String, ca_file: Option<PathBuf>) -> DatabaseConfig {
    DatabaseConfig {
        url: Some(url),
        ca_file,
        pool_size: 2,
        timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(10),
        gc_operation_timeout: Duration::from_secs(60),
    }
}

async fn connect_error(url: String, ca_file: Option<PathBuf>) -> String {
    match PostgresStore::connect(&database_config(url.clone(), ca_file)).await {
        Ok(_) => panic!("{url}: connected, but must be refused"),
        Err(e) => e.to_string(),
    }
}

/// `ipfs-registry migrate` on `url`, with `roots` as the system's root certificates
/// (`SSL_CERT_FILE`) and `ca_file` as `database.ca_file`.
fn migrate_with_roots(url: &str, roots: &Path, ca_file: Option<&Path>) -> std::process::Output {
    let mut command = common::cli::registry_command();
    command
        .arg("migrate")
        .env("IPFS_REGISTRY_DATABASE__URL", url)
        .env("SSL_CERT_FILE", roots)
        .env_remove("SSL_CERT_DIR");
    if let Some(ca_file) = ca_file {
        command.env("IPFS_REGISTRY_DATABASE__CA_FILE", ca_file);
    }
    command.output().expect("run ipfs-registry migrate")
}

/// A self-signed certificate for 127.0.0.1 and localhost, and its PEM in a file.
fn self_signed(dir: &Path) -> (rcgen::CertifiedKey, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a self-signed certificate");
    let path = dir.join(format!("ca-{}.pem", common::unique_name()));
    std::fs::write(&path, made.cert.pem()).unwrap();
    (made, path)
}

#[tokio::test]
async fn sslmode_require_from_the_environment() {
    let database = common::fresh_database_url().await;
    let name = url::Url::parse(&database).unwrap().path()[1..].to_owned();
    let data_dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        serve_command()
            .env(
                "IPFS_REGISTRY_DATABASE__URL",
                with_query(&database, "sslmode=require"),
            )
            .env("IPFS_REGISTRY_DATA_DIR", data_dir.path()),
    )
    .await;

    let oci = Oci::new(&served.base);
    let image = oci.push_image("tls/app", Some("1.0"), 2).await;
    let manifest = expect_status(oci.get("/v2/tls/app/manifests/1.0").await, 200).await;
    assert_eq!(manifest.bytes().await.unwrap(), image.manifest.content);
    for blob in image.layers.iter().chain([&image.config]) {
        let pulled = oci.get(&format!("/v2/tls/app/blobs/{}", blob.digest)).await;
        let pulled = expect_status(pulled, 200).await;
        assert_eq!(pulled.bytes().await.unwrap(), blob.data);
    }

    // Every connection the registry holds to its database is encrypted.
    let row = admin()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE a.datname = $1 AND a.application_name = 'ipfs-registry'",
            &[&name],
        )
        .await
        .unwrap();
    let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(all > 0, "the registry holds no connection to {name}");
    assert_eq!(encrypted, all, "connections without TLS");

    let (stopped, _, log) = served.stop();
    assert!(stopped, "{log}");
}

#[tokio::test]
async fn sslmode_verify_ca_and_verify_full() {
    let certificate = server_certificate().await;
    let database = common::fresh_database_url().await;
    let url = |mode: &str| with_query(&database, &format!("sslmode={mode}"));

    // verify-ca: the chain leads to the server's own (self-signed) certificate, given as
    // the CA; the host name is not compared.
    let store = PostgresStore::connect(&database_config(
        url("verify-ca"),
        Some(certificate.clone()),
    ))
    .await
    .expect("verify-ca with the server's certificate as the CA");
    store.ping().await.unwrap();

    // verify-full compares the host name too.
    let host = url::Url::parse(&database)
        .unwrap()
        .host_str()
        .unwrap()
        .to_owned();
    if certificate_names(&certificate, &host) {
        PostgresStore::connect(&database_config(
            url("verify-full"),
            Some(certificate.clone()),
        ))
        .await
        .expect("verify-full to a host the certificate names");
    } else {
        let error = connect_error(url("verify-full"), Some(certificate.clone())).await;
        assert!(
            error.contains("not valid for name"),
            "verify-full to {host}, which the certificate does not name: {error}"
        );
    }
    if host == "127.0.0.1" && certificate_names(&certificate, "localhost") {
        let mut by_name = url::Url::parse(&url("verify-full")).unwrap();
        by_name.set_host(Some("localhost")).unwrap();
        PostgresStore::connect(&database_config(
            by_name.to_string(),
            Some(certificate.clone()),
        ))
        .await
        .expect("verify-full to localhost, which the certificate names");
    }

    // What the CA file adds to the system's roots, in the binary, with the system's roots
    // replaced (SSL_CERT_FILE) by a CA that did not sign the server's certificate: on
    // Debian the snakeoil certificate is itself among the system's roots
    // (/etc/ssl/certs/<hash>.0).
    let dir = tempfile::tempdir().unwrap();
    let (_, other_ca) = self_signed(dir.path());
    for mode in ["verify-ca", "verify-full"] {
        let refused = migrate_with_roots(&url(mode), &other_ca, None);
        assert!(!refused.status.success(), "{mode}: migrate connected");
        let log = String::from_utf8_lossy(&refused.stderr);
        assert!(log.contains("UnknownIssuer"), "{mode}: {log}");
    }
    common::cli::succeeded(&migrate_with_roots(
        &url("verify-ca"),
        &other_ca,
        Some(&certificate),
    ));

    // require encrypts without verifying, as libpq's does.
    PostgresStore::connect(&database_config(url("require"), None))
        .await
        .expect("require, no CA");
}

/// A TLS-terminating proxy on 127.0.0.1 that forwards each connection to `upstream`; it
/// counts completed handshakes. Stops when dropped.
struct TlsProxy {
    port: u16,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    async fn start(identity: &rcgen::CertifiedKey, upstream: SocketAddr) -> TlsProxy {
        let key = PrivateKeyDer::Pkcs8(identity.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.der().clone()], key)
        .expect("a server configuration");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut node) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut node).await;
                });
            }
        });
        TlsProxy {
            port,
            handshakes,
            task,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn https_ipfs_url_through_a_tls_proxy() {
    let node = common::ipfs_url()
        .socket_addrs(|| None)
        .expect("the test IPFS node's address")[0];
    let dir = tempfile::tempdir().unwrap();
    let (identity, ca_file) = self_signed(dir.path());
    let proxy = TlsProxy::start(&identity, node).await;
    let https: url::Url = format!("https://127.0.0.1:{}/", proxy.port)
        .parse()
        .unwrap();

    // Without the CA file: the certificate is refused, and the error says why.
    let untrusting = common::kubo::store_at(
        https.clone(),
        Duration::from_secs(10),
        ImportProfile::default(),
    );
    let error = untrusting
        .ping()
        .await
        .expect_err("a certificate no root vouches for")
        .to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
    // A registry so configured is not ready, says why, and refuses pushes with 503.
    let untrusting = common::StorePair::PostgresIpfsNode
        .start_registry_with(|config| {
            config.ipfs.url = Some(https.clone());
        })
        .await;
    let oci = Oci::new(&untrusting.base);
    let ready = oci.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let checks: serde_json::Value = ready.json().await.unwrap();
    let ipfs = checks["checks"]["ipfs"].as_str().unwrap_or_default();
    assert!(ipfs.contains("UnknownIssuer"), "{checks}");
    let location = oci.start_upload("tls/refused").await;
    let pushed = oci
        .put_upload(
            &location,
            &common::oci::sha256(b"refused"),
            b"refused".to_vec(),
        )
        .await;
    assert_eq!(pushed.status(), 503);
    drop(untrusting);
    assert_eq!(proxy.handshakes.load(Ordering::SeqCst), 0);

    // With it (`ipfs.ca_file`): a registry pushes and pulls through the proxy.
    let registry = common::StorePair::PostgresIpfsNode
        .start_registry_with(|config| {
            config.ipfs.url = Some(https.clone());
            config.ipfs.ca_file = Some(ca_file.clone());
        })
        .await;
    let oci = Oci::new(&registry.base);
    let image = oci.push_image("tls/kubo", Some("1.0"), 2).await;
    for blob in image.layers.iter().chain([&image.config]) {
        let pulled = oci
            .get(&format!("/v2/tls/kubo/blobs/{}", blob.digest))
            .await;
        let pulled = expect_status(pulled, 200).await;
        assert_eq!(pulled.bytes().await.unwrap(), blob.data);
        assert!(
            common::blob_store_holds(&registry, &blob.data).await,
            "the node behind the proxy holds {}",
            blob.digest
        );
    }
    assert!(proxy.handshakes.load(Ordering::SeqCst) > 0);
}
