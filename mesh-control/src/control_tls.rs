//! The control port's TLS (CA and config distribution): TLS 1.3 only, ALPN h2,
//! each handshake in its own task and within `HANDSHAKE_TIMEOUT`, so one slow or
//! silent client never holds up the others. tonic's own TLS settings cannot pin
//! the protocol version, so the server is given these connections ready-made.
use std::{sync::Arc, time::Duration};

use futures_util::Stream;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the control port's certificate: {0}")]
    Pem(String),
    #[error("the control port's TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// TLS 1.3 only, with the serving certificate and key (PEM).
pub fn acceptor(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor, Error> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::Pem(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The TLS connections of `listener`, handshakes done.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut backoff = mesh_infra::backoff::Backoff::accept();
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("control port accept failed: {e}");
                    backoff.wait().await;
                    continue;
                }
            };
            backoff.reset();
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, "control port TLS refused: {e}"),
                    Err(_) => tracing::info!(%peer, "control port TLS handshake timed out"),
                }
            });
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
