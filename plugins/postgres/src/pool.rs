//! A small connection pool per source: at most `pool_size` connections, opened on the plugin's
//! runtime and reused between scans.

use std::sync::{Arc, Mutex};

use lodestar_connector_api::tokio::runtime::Handle;
use lodestar_connector_api::tokio::sync::{OwnedSemaphorePermit, Semaphore};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{self, Error, Result};
use crate::settings::{Settings, TlsMode};

/// The connections of one source.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.inner.settings.target)
            .field("size", &self.inner.settings.pool_size)
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: Settings,
    tls: MakeRustlsConnect,
    runtime: Handle,
    /// One permit per connection in use; idle connections hold none.
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Client>>,
}

/// What a checked-out connection is doing, which decides how it goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Outside a transaction: reusable as it is.
    Idle,
    /// Inside a transaction, no statement running: rolled back, then reused.
    InTransaction,
    /// A statement (a COPY) is streaming: cancelled on the server, then closed, so the server
    /// stops sending a table nobody reads.
    Busy,
}

/// A connection taken from the pool; it goes back (or is closed) when dropped.
pub struct Conn {
    client: Option<Client>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Inner>,
    pub state: State,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("state", &self.state).finish()
    }
}

impl Pool {
    pub fn new(settings: Settings, runtime: Handle) -> Result<Pool> {
        let tls = tls_connector(&settings).map_err(|(message, hint)| Error::Connect {
            target: settings.target.to_string(),
            reason: format!("cannot set up TLS: {message}"),
            hint,
        })?;
        Ok(Pool {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(settings.pool_size)),
                settings,
                tls,
                runtime,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// One connection, waiting for a free one if all are in use.
    pub async fn get(&self) -> Result<Conn> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        self.checkout(permit).await
    }

    /// One connection, waiting if need be, and up to `n - 1` more that are free now (opened
    /// concurrently). A parallel scan takes these: it never waits for connections another
    /// scan holds beyond its first, so scans sharing a pool cannot starve each other.
    pub async fn get_up_to(&self, n: usize) -> Result<Vec<Conn>> {
        let first = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let mut permits = vec![first];
        while permits.len() < n {
            match Arc::clone(&self.inner.permits).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        futures::future::try_join_all(permits.into_iter().map(|p| self.checkout(p))).await
    }

    async fn checkout(&self, permit: OwnedSemaphorePermit) -> Result<Conn> {
        let reused = {
            let mut idle = self
                .inner
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // A connection the server closed while idle is useless: drop it and try the next.
            let mut found = None;
            while let Some(client) = idle.pop() {
                if !client.is_closed() {
                    found = Some(client);
                    break;
                }
            }
            found
        };
        let client = match reused {
            Some(client) => client,
            None => self.connect().await?,
        };
        Ok(Conn {
            client: Some(client),
            permit: Some(permit),
            pool: Arc::clone(&self.inner),
            state: State::Idle,
        })
    }

    /// Opens a connection on the plugin's runtime, which then drives its socket.
    async fn connect(&self) -> Result<tokio_postgres::Client> {
        let config = self.inner.settings.config.clone();
        let tls = self.inner.tls.clone();
        let target = self.inner.settings.target.clone();
        self.inner
            .runtime
            .spawn(async move {
                let (client, connection) = config
                    .connect(tls)
                    .await
                    .map_err(|e| error::connect(&target, &e))?;
                // The connection's errors reach the client's pending calls; nothing to do here.
                lodestar_connector_api::tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            })
            .await
            .map_err(|e| Error::Connect {
                target: self.inner.settings.target.to_string(),
                reason: format!("the connecting task failed: {e}"),
                hint: None,
            })?
    }
}

impl Conn {
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let permit = self.permit.take();
        let pool = Arc::clone(&self.pool);
        if client.is_closed() {
            return;
        }
        match self.state {
            State::Idle => pool.put(client),
            State::InTransaction => {
                let runtime = pool.runtime.clone();
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_ok() {
                        pool.put(client);
                    }
                    drop(permit);
                });
            }
            State::Busy => {
                let runtime = pool.runtime.clone();
                let tls = pool.tls.clone();
                runtime.spawn(async move {
                    // Best effort: if the cancel fails, closing the connection still ends the
                    // backend's work when its next write fails.
                    let _ = client.cancel_token().cancel_query(tls).await;
                    drop(client);
                    drop(permit);
                });
            }
        }
    }
}

impl Inner {
    fn put(&self, client: Client) {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(client);
    }
}

/// rustls on ring. In `prefer` and `require`, the handshake's signatures are verified but not
/// the certificate chain: encryption without authentication of the server, as libpq does
/// without a root certificate. In `verify-ca` and `verify-full`, the chain is verified against
/// `sslrootcert` or the system's roots, and in `verify-full` the name too.
fn tls_connector(
    settings: &Settings,
) -> std::result::Result<MakeRustlsConnect, (String, Option<String>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| (e.to_string(), None))?;
    let config = if settings.tls.verifies() {
        let roots = Arc::new(roots(settings)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(|e| (format!("the trusted roots are unusable: {e}"), None))?;
        let verifier: Arc<dyn ServerCertVerifier> = match settings.tls {
            TlsMode::VerifyCa => Arc::new(ChainOnly { webpki }),
            _ => webpki,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
    } else {
        let verifier = Arc::new(AnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        });
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The roots a verifying mode trusts: the certificates of `sslrootcert`, else the system's.
fn roots(settings: &Settings) -> std::result::Result<RootCertStore, (String, Option<String>)> {
    let mut store = RootCertStore::empty();
    match &settings.root_cert {
        Some(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| {
                    (
                        format!("cannot read the certificates of sslrootcert `{shown}`: {e}"),
                        Some("give `sslrootcert` (or PGSSLROOTCERT) the PEM file of the certificate authority that signed the server's certificate".to_string()),
                    )
                })?;
            let (added, _ignored) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err((
                    format!("sslrootcert `{shown}` holds no usable certificate"),
                    Some(
                        "it must be a PEM file with -----BEGIN CERTIFICATE----- blocks".to_string(),
                    ),
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err((
                    "no system root certificates were found to verify the server with".to_string(),
                    Some("give the PEM file of the server's certificate authority as `sslrootcert` (or PGSSLROOTCERT)".to_string()),
                ));
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must lead to a trusted root; the name in the certificate is not
/// compared with the host (webpki checks the chain first, so a name error means the chain
/// was good).
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Accepts any server certificate, as libpq does in `sslmode=require`; signatures are still
/// checked, so the session key belongs to whoever holds the certificate's private key.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
