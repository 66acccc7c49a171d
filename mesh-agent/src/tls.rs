//! rustls configurations for HBONE and verification of peers against expected
//! SPIFFE identities (URI SANs; no DNS names are involved).
use std::{sync::Arc, time::SystemTime};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    server::{ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};

use mesh_model::identity::Identity;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error("peer certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("peer certificate has no SPIFFE workload identity (URI SAN)")]
    NoIdentity,
    #[error("trust bundle: {0}")]
    Roots(String),
    #[error("TLS settings: {0}")]
    Config(#[from] rustls::Error),
}

pub const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// The SPIFFE identity in a leaf certificate's URI SAN.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Result<Identity, Error> {
    let leaf = certs.first().ok_or(Error::NoCertificate)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| Error::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::Parse(e.to_string()))?
        .ok_or(Error::NoIdentity)?;
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => u.parse::<Identity>().ok(),
            _ => None,
        })
        .ok_or(Error::NoIdentity)
}

/// (not before, not after) of a certificate.
pub fn validity(cert: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), Error> {
    let (_, c) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| Error::Parse(e.to_string()))?;
    let t = |ts: i64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(ts.max(0) as u64);
    Ok((
        t(c.validity().not_before.timestamp()),
        t(c.validity().not_after.timestamp()),
    ))
}

/// A certificate's serial number, in hex.
pub fn serial(cert: &CertificateDer<'_>) -> Result<String, Error> {
    let (_, c) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| Error::Parse(e.to_string()))?;
    Ok(c.raw_serial_as_string().replace(':', ""))
}

pub fn roots_from_pem(pem: &str) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::Roots(e.to_string()))?;
        roots.add(cert).map_err(|e| Error::Roots(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(Error::Roots("no certificate in the trust bundle".into()));
    }
    Ok(Arc::new(roots))
}

/// HBONE server side: TLS 1.3, client certificate required and chained to the roots.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    roots: Arc<RootCertStore>,
) -> Result<Arc<ServerConfig>, Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| Error::Roots(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(cfg))
}

/// HBONE client side: presents `source`, accepts only a server proving `expected`.
pub fn client_config(
    source: Arc<CertifiedKey>,
    expected: Identity,
    roots: Arc<RootCertStore>,
) -> Result<Arc<ClientConfig>, Error> {
    let verifier = Arc::new(SpiffeVerifier { roots, expected });
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(FixedClientCert(source)));
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Chain to the trust roots, then the URI SAN must be the expected identity.
#[derive(Debug)]
pub struct SpiffeVerifier {
    roots: Arc<RootCertStore>,
    expected: Identity,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            algorithms().all,
        )?;
        let got = peer_identity(std::slice::from_ref(end_entity))
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if got != self.expected {
            return Err(rustls::Error::General(format!(
                "peer identity is {got}, expected {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

#[cfg(test)]
mod tests;
