//! The certificate authority's core: a P-256 root it creates and persists (or is
//! given as files), and signing of workload CSRs. No I/O beyond the root files.
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};

use crate::identity::Identity;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CA root files in {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("CA root in {dir} is unusable: {source}; remove root-cert.pem and root-key.pem to create a new root, or fix them")]
    BadRoot { dir: PathBuf, source: rcgen::Error },
    #[error("the CSR cannot be parsed or its signature is wrong: {0}")]
    BadCsr(rcgen::Error),
    #[error("the CSR must carry exactly one URI SAN with a SPIFFE workload identity, found {0:?}")]
    CsrIdentity(Vec<String>),
    #[error("identity {identity} is outside this CA's trust domain {trust_domain}")]
    TrustDomain {
        identity: Identity,
        trust_domain: String,
    },
    #[error("signing failed: {0}")]
    Sign(rcgen::Error),
    #[error("CA root in {dir} is half there: {present} exists but {missing} does not; restore {missing}, or remove {present} to create a new root (every workload certificate then changes trust)")]
    HalfRoot {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
}

/// DNS name in the CA's serving certificate; clients verify it against the root.
pub const CA_SERVER_NAME: &str = "ferrymesh-ca";

pub const ROOT_CERT: &str = "root-cert.pem";
pub const ROOT_KEY: &str = "root-key.pem";
/// Longest leaf lifetime the CA grants, whatever is asked.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
    trust_domain: String,
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

impl Ca {
    /// Loads the root from `dir`, or creates and persists one (key file mode 0600).
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Ca, Error> {
        let io = |source| Error::Io {
            dir: dir.to_owned(),
            source,
        };
        let bad = |source| Error::BadRoot {
            dir: dir.to_owned(),
            source,
        };
        let (cert_path, key_path) = (dir.join(ROOT_CERT), dir.join(ROOT_KEY));
        let half = |present, missing| Error::HalfRoot {
            dir: dir.to_owned(),
            present,
            missing,
        };
        match (cert_path.exists(), key_path.exists()) {
            (true, false) => return Err(half(ROOT_CERT, ROOT_KEY)),
            (false, true) => return Err(half(ROOT_KEY, ROOT_CERT)),
            _ => {}
        }
        if cert_path.exists() && key_path.exists() {
            let root_pem = std::fs::read_to_string(&cert_path).map_err(io)?;
            let key =
                KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io)?).map_err(bad)?;
            let issuer = Issuer::from_ca_cert_pem(&root_pem, key).map_err(bad)?;
            return Ok(Ca {
                issuer,
                root_pem,
                trust_domain: trust_domain.to_owned(),
            });
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(bad)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "ferrymesh");
        dn.push(
            DnType::CommonName,
            format!("ferrymesh root CA ({trust_domain})"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = offset(now - Duration::from_secs(3600));
        params.not_after = offset(now + Duration::from_secs(10 * 365 * 24 * 3600));
        let cert = params.self_signed(&key).map_err(bad)?;
        let root_pem = cert.pem();
        write_private(&key_path, &key.serialize_pem()).map_err(io)?;
        std::fs::write(&cert_path, &root_pem).map_err(io)?;
        let issuer = Issuer::new(params, key);
        Ok(Ca {
            issuer,
            root_pem,
            trust_domain: trust_domain.to_owned(),
        })
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The identity a CSR asks for, after checking its signature and form.
    pub fn csr_identity(
        &self,
        csr_pem: &str,
    ) -> Result<(Identity, CertificateSigningRequestParams), Error> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(Error::BadCsr)?;
        let uris: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|s| match s {
                SanType::URI(u) => u.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        let identity = match uris.as_slice() {
            [one] => one
                .parse::<Identity>()
                .map_err(|_| Error::CsrIdentity(uris.clone()))?,
            _ => return Err(Error::CsrIdentity(uris)),
        };
        if identity.trust_domain != self.trust_domain {
            return Err(Error::TrustDomain {
                identity,
                trust_domain: self.trust_domain.clone(),
            });
        }
        Ok((identity, csr))
    }

    /// Signs a leaf for the CSR's key. Only the identity is taken from the CSR; every
    /// other field is the CA's choice.
    pub fn sign(
        &self,
        csr: &CertificateSigningRequestParams,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<String, Error> {
        let now = SystemTime::now();
        let ttl = ttl.min(MAX_TTL);
        let params = leaf_params(identity, now - Duration::from_secs(60), now + ttl)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(Error::Sign)?;
        Ok(cert.pem())
    }

    /// A serving certificate for the CA's own gRPC endpoint: (cert pem, key pem).
    pub fn issue_server(&self, dns_name: &str) -> Result<(String, String), Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::Sign)?;
        let mut params = CertificateParams::new(vec![dns_name.to_owned()]).map_err(Error::Sign)?;
        let now = SystemTime::now();
        params.not_before = offset(now - Duration::from_secs(60));
        params.not_after = offset(now + Duration::from_secs(365 * 24 * 3600));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(Error::Sign)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issues a key and leaf directly (tools and tests: e.g. an already expired cert).
    pub fn issue(
        &self,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<(String, String), Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::Sign)?;
        let params = leaf_params(identity, not_before, not_after)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(Error::Sign)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn leaf_params(
    identity: &Identity,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let uri = identity.to_string().try_into().map_err(Error::Sign)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.distinguished_name = DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = offset(not_before);
    params.not_after = offset(not_after);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A CSR for `identity` with a fresh P-256 key: (csr pem, key pem).
pub fn new_csr(identity: &Identity) -> Result<(String, String), Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::Sign)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(
        identity.to_string().try_into().map_err(Error::Sign)?,
    )];
    let csr = params.serialize_request(&key).map_err(Error::Sign)?;
    Ok((csr.pem().map_err(Error::Sign)?, key.serialize_pem()))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_only_the_identity_of_a_well_formed_csr() {
        let dir = std::env::temp_dir().join(format!("fm-ca-test-{}", std::process::id()));
        let ca = Ca::load_or_create(&dir, "cluster.local").expect("ca");
        let id = Identity::new("cluster.local", "shop", "client");
        let (csr, _key) = new_csr(&id).expect("csr");
        let (got, parsed) = ca.csr_identity(&csr).expect("identity");
        assert_eq!(got, id);
        let pem = ca
            .sign(&parsed, &id, Duration::from_secs(3600))
            .expect("sign");
        assert!(pem.contains("BEGIN CERTIFICATE"));

        let other = Identity::new("other.domain", "shop", "client");
        let (csr, _) = new_csr(&other).expect("csr");
        assert!(matches!(
            ca.csr_identity(&csr),
            Err(Error::TrustDomain { .. })
        ));
        assert!(matches!(
            ca.csr_identity("not a csr"),
            Err(Error::BadCsr(_))
        ));

        // The root persists: a second load signs with the same root.
        let again = Ca::load_or_create(&dir, "cluster.local").expect("reload");
        assert_eq!(again.root_pem(), ca.root_pem());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_half_present_root_is_refused_not_replaced() {
        let dir = std::env::temp_dir().join(format!("fm-ca-half-{}", std::process::id()));
        let ca = Ca::load_or_create(&dir, "cluster.local").expect("ca");
        let key = std::fs::read(dir.join(ROOT_KEY)).expect("key");
        std::fs::remove_file(dir.join(ROOT_KEY)).expect("remove key");
        let e = Ca::load_or_create(&dir, "cluster.local")
            .err()
            .expect("refused");
        assert!(
            matches!(
                e,
                Error::HalfRoot {
                    missing: ROOT_KEY,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("restore root-key.pem"), "{e}");
        // Nothing was overwritten: restoring the key brings the same root back.
        std::fs::write(dir.join(ROOT_KEY), key).expect("restore");
        let again = Ca::load_or_create(&dir, "cluster.local").expect("reload");
        assert_eq!(again.root_pem(), ca.root_pem());
        std::fs::remove_file(dir.join(ROOT_CERT)).expect("remove cert");
        assert!(matches!(
            Ca::load_or_create(&dir, "cluster.local"),
            Err(Error::HalfRoot {
                missing: ROOT_CERT,
                ..
            })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
