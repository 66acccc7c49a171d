//! Fetching `jwksUri` JWKS: HTTPS only, verified against the agent's JWKS trust
//! roots (`--jwks-ca`, else the system bundle), at most `MAX_BYTES`, within
//! `TIMEOUT`, refreshed every `REFRESH`. A JWKS that changed is stored in
//! `mesh_model::l7::jwks_uri` and the config in force is compiled again, so rules
//! that refused tokens while the keys were missing start to validate them.
use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use mesh_model::l7::jwks_uri;
use rustls::pki_types::ServerName;

/// The largest JWKS accepted.
pub const MAX_BYTES: usize = 64 << 10;
/// One fetch, from name resolution to the last byte.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How often every URI is fetched again.
pub const REFRESH: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not an https:// URI")]
    NotHttps(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: no answer within {TIMEOUT:?}")]
    Timeout(String),
    #[error("{0}: HTTP: {1}")]
    Http(String, String),
    #[error("{0}: answered HTTP {1}")]
    Status(String, u16),
    #[error("{0}: the answer is larger than {MAX_BYTES} bytes or not UTF-8")]
    Body(String),
}

/// The trust roots for JWKS servers: a PEM bundle file.
pub fn roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::tls::roots_from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// One GET of `uri`.
pub async fn fetch(uri: &str, roots: Arc<rustls::RootCertStore>) -> Result<String, Error> {
    tokio::time::timeout(TIMEOUT, get(uri, roots))
        .await
        .map_err(|_| Error::Timeout(uri.to_owned()))?
}

async fn get(uri: &str, roots: Arc<rustls::RootCertStore>) -> Result<String, Error> {
    let u = || uri.to_owned();
    let (host, port, path) = jwks_uri::parse(uri).ok_or_else(|| Error::NotHttps(u()))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| Error::Io(u(), e))?;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Http(u(), e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|e| Error::Http(u(), e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Io(u(), e))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| Error::Http(u(), e.to_string()))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::Http(u(), e.to_string()))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| Error::Http(u(), e.to_string()))?;
    if resp.status() != http::StatusCode::OK {
        return Err(Error::Status(u(), resp.status().as_u16()));
    }
    let body = Limited::new(resp.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|_| Error::Body(u()))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| Error::Body(u()))
}

/// Fetches every jwksUri of the config in force now and every `REFRESH`, and
/// when one changed asks `recompile` to compile the config again.
pub async fn run(
    state: mesh_model::state::StateHandle,
    roots: Arc<rustls::RootCertStore>,
    recompile: impl Fn() + Send + 'static,
) {
    // Each second: URIs never fetched (new, or failing: retried each second);
    // every REFRESH: all of them.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_round = tokio::time::Instant::now();
    let mut fetched = std::collections::HashSet::new();
    loop {
        tick.tick().await;
        let due = last_round.elapsed() >= REFRESH;
        if due {
            last_round = tokio::time::Instant::now();
            fetched.clear();
        }
        let mut changed = false;
        for uri in jwks_uri::uris(&state.load().objects) {
            if fetched.contains(&uri) {
                continue;
            }
            match fetch(&uri, roots.clone()).await {
                Ok(jwks) => {
                    changed |= jwks_uri::put(&uri, jwks);
                    fetched.insert(uri);
                }
                Err(e) => {
                    tracing::warn!("jwksUri not fetched (its rule refuses tokens until it is): {e}")
                }
            }
        }
        if changed {
            recompile();
        }
    }
}
