//! Workload identities: SPIFFE ids.
use std::{fmt, str::FromStr};

pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{uri:?} is not a workload identity; expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
pub struct ParseError {
    pub uri: String,
}

impl Identity {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Identity {
        Identity {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }

    /// The principal as Istio's AuthorizationPolicy writes it: no scheme.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}", self.principal())
    }
}

impl FromStr for Identity {
    type Err = ParseError;
    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let err = || ParseError {
            uri: uri.to_owned(),
        };
        let rest = uri.strip_prefix("spiffe://").ok_or_else(err)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] if !td.is_empty() && !ns.is_empty() && !sa.is_empty() => {
                Ok(Identity::new(td, ns, sa))
            }
            _ => Err(err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let cases = [
            ("spiffe://cluster.local/ns/shop/sa/client", true),
            ("spiffe://cluster.local/ns/shop/sa/", false),
            ("spiffe://cluster.local/ns/shop", false),
            ("https://cluster.local/ns/shop/sa/x", false),
            ("spiffe://cluster.local/ns/shop/sa/x/extra", false),
        ];
        for (uri, ok) in cases {
            let parsed = uri.parse::<Identity>();
            assert_eq!(parsed.is_ok(), ok, "{uri}");
            if let Ok(id) = parsed {
                assert_eq!(id.to_string(), uri);
            }
        }
    }
}
