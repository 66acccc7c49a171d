//! The SPIFFE verifier: a peer is accepted only with a certificate chained to the
//! trust roots, valid now, whose URI SAN is the identity expected.
use std::time::{Duration, SystemTime};

use mesh_model::ca::Ca;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};

use super::*;

struct Fixture {
    dir: std::path::PathBuf,
    ca: Ca,
    other: Ca,
}

impl Fixture {
    fn new() -> Fixture {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fm-tls-test-{}-{n}", std::process::id()));
        let ca = Ca::load_or_create(&dir.join("ca"), "cluster.local").expect("ca");
        let other = Ca::load_or_create(&dir.join("other"), "cluster.local").expect("other ca");
        Fixture { dir, ca, other }
    }

    fn leaf(ca: &Ca, id: &str, not_after: SystemTime) -> CertificateDer<'static> {
        let id: Identity = id.parse().expect("identity");
        let (pem, _key) = ca
            .issue(
                &id,
                SystemTime::now() - Duration::from_secs(3600),
                not_after,
            )
            .expect("issue");
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn verify(
    roots: &Arc<RootCertStore>,
    expected: &str,
    cert: &CertificateDer<'_>,
) -> Result<(), String> {
    let v = SpiffeVerifier {
        roots: roots.clone(),
        expected: expected.parse().expect("identity"),
    };
    let name = ServerName::try_from("198.19.2.10").expect("name");
    v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn the_verifier_accepts_only_the_expected_identity_from_the_roots() {
    let f = Fixture::new();
    let roots = roots_from_pem(f.ca.root_pem()).expect("roots");
    let server = "spiffe://cluster.local/ns/shop/sa/server";
    let later = SystemTime::now() + Duration::from_secs(3600);
    let cases = [
        (
            "the expected identity",
            Fixture::leaf(&f.ca, server, later),
            Ok(()),
        ),
        (
            "another identity of the same CA",
            Fixture::leaf(&f.ca, "spiffe://cluster.local/ns/shop/sa/other", later),
            Err("peer identity is spiffe://cluster.local/ns/shop/sa/other"),
        ),
        (
            "the expected identity from another CA",
            Fixture::leaf(&f.other, server, later),
            Err("invalid peer certificate"),
        ),
        (
            "expired",
            Fixture::leaf(&f.ca, server, SystemTime::now() - Duration::from_secs(60)),
            Err("invalid peer certificate"),
        ),
    ];
    for (name, cert, want) in cases {
        let got = verify(&roots, server, &cert);
        match want {
            Ok(()) => assert_eq!(got, Ok(()), "{name}"),
            Err(part) => {
                let e = got.expect_err(name);
                assert!(e.contains(part), "{name}: {e}");
            }
        }
    }
}

#[test]
fn the_identity_is_the_uri_san() {
    let f = Fixture::new();
    let id = "spiffe://cluster.local/ns/shop/sa/client";
    let cert = Fixture::leaf(&f.ca, id, SystemTime::now() + Duration::from_secs(60));
    assert_eq!(peer_identity(&[cert]).expect("identity").to_string(), id);
    assert!(matches!(peer_identity(&[]), Err(Error::NoCertificate)));
    let root = CertificateDer::from_pem_slice(f.ca.root_pem().as_bytes()).expect("root");
    assert!(
        matches!(peer_identity(&[root]), Err(Error::NoIdentity)),
        "a certificate without a SPIFFE URI SAN has no identity"
    );
}
