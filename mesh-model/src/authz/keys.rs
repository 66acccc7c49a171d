//! What a `when` condition reads (Istio's attribute names) and the typed values it
//! is compared with, parsed once when the policy is compiled.
use super::patterns::{Cidr, Pattern};

/// A `when` key. Istio's webhook refuses any other (`validate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    SourceIp,
    /// The client's address as the first hop saw it.
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    /// `namespace/serviceAccount` of the peer certificate.
    SourceServiceAccount,
    DestinationIp,
    DestinationPort,
    /// `request.headers[name]` (and the experimental inline form), lower-cased.
    Header(String),
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    /// `request.auth.claims[a][b]`: the path into the claims.
    Claim(Vec<String>),
    /// The TLS SNI of the connection: ferrymesh terminates no application TLS, so
    /// it has no value.
    ConnectionSni,
    /// `experimental.envoy.filters.*`: Envoy filter metadata, which has no value here.
    Experimental(String),
}

/// `a[b]`: the key's bracketed part, as Istio's `validateMapKey` wants it.
fn map_key<'k>(key: &'k str, prefix: &str) -> Result<Option<&'k str>, String> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    let open = key.find('[');
    match (
        rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')),
        open,
    ) {
        (Some(inner), Some(open)) if open > 0 && !inner.is_empty() => Ok(Some(inner)),
        _ => Err(format!("bad key ({key}): should have format a[b]")),
    }
}

impl ConditionKey {
    /// Istio's attribute names, with its webhook's messages for the others.
    pub fn parse(key: &str) -> Result<ConditionKey, String> {
        for prefix in ["request.headers", "request.experimental.inline.headers"] {
            if let Some(h) = map_key(key, prefix)? {
                return Ok(ConditionKey::Header(h.to_ascii_lowercase()));
            }
        }
        if let Some(c) = map_key(key, "request.auth.claims")? {
            return Ok(ConditionKey::Claim(
                c.split("][").map(str::to_owned).collect(),
            ));
        }
        if key.starts_with("experimental.envoy.filters.") {
            let open = key.find('[');
            if !(key.ends_with(']') && open.is_some_and(|o| o > 0 && o < key.len() - 2)) {
                return Err(format!("bad key ({key}): should have format a[b]"));
            }
            return Ok(ConditionKey::Experimental(key.to_owned()));
        }
        Ok(match key {
            "source.ip" => ConditionKey::SourceIp,
            "remote.ip" => ConditionKey::RemoteIp,
            "source.namespace" => ConditionKey::SourceNamespace,
            "source.principal" => ConditionKey::SourcePrincipal,
            "source.serviceAccount" => ConditionKey::SourceServiceAccount,
            "destination.ip" => ConditionKey::DestinationIp,
            "destination.port" => ConditionKey::DestinationPort,
            "request.auth.principal" => ConditionKey::RequestPrincipal,
            "request.auth.audiences" => ConditionKey::RequestAudiences,
            "request.auth.presenter" => ConditionKey::RequestPresenter,
            "connection.sni" => ConditionKey::ConnectionSni,
            "destination.namespace" => {
                return Err(format!(
                    "attribute {key} is replaced by the metadata.namespace"
                ))
            }
            k if k.starts_with("destination.labels") => {
                return Err(format!(
                    "attribute {key} is replaced by the workload selector"
                ))
            }
            "destination.name" | "destination.user" => {
                return Err(format!(
                    "deprecated attribute {key}: only supported in v1alpha1"
                ))
            }
            _ => return Err(format!("unknown attribute: {key}")),
        })
    }

    /// ztunnel enforces it at L4 (istiod's `l4WhenAttributes`); any other key is an
    /// HTTP attribute there.
    pub fn l4(&self) -> bool {
        matches!(
            self,
            ConditionKey::SourceIp
                | ConditionKey::SourceNamespace
                | ConditionKey::SourcePrincipal
                | ConditionKey::DestinationIp
                | ConditionKey::DestinationPort
        )
    }
}

/// A service account a rule names: `sa` (of the policy's namespace) or `ns/sa`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    pub fn parse(v: &str, policy_namespace: &str) -> ServiceAccount {
        match v.split_once('/') {
            Some((ns, sa)) => ServiceAccount {
                namespace: ns.to_owned(),
                name: sa.to_owned(),
            },
            None => ServiceAccount {
                namespace: policy_namespace.to_owned(),
                name: v.to_owned(),
            },
        }
    }
}

/// A condition's values, typed by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    Strings(Vec<Pattern>),
    Cidrs(Vec<Cidr>),
    Ports(Vec<u16>),
    Accounts(Vec<ServiceAccount>),
}

impl Values {
    /// Parses `v` for `key` (validated already: a value that does not parse is
    /// refused before this).
    pub fn new(key: &ConditionKey, v: &[String], policy_namespace: &str) -> Values {
        match key {
            ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
                Values::Cidrs(v.iter().filter_map(|s| Cidr::parse(s)).collect())
            }
            ConditionKey::DestinationPort => {
                Values::Ports(v.iter().filter_map(|s| s.parse().ok()).collect())
            }
            ConditionKey::SourceServiceAccount => Values::Accounts(
                v.iter()
                    .map(|s| ServiceAccount::parse(s, policy_namespace))
                    .collect(),
            ),
            _ => Values::Strings(v.iter().map(|s| Pattern::new(s)).collect()),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Values::Strings(v) => v.is_empty(),
            Values::Cidrs(v) => v.is_empty(),
            Values::Ports(v) => v.is_empty(),
            Values::Accounts(v) => v.is_empty(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub key: ConditionKey,
    pub values: Values,
    pub not_values: Values,
}
