//! Istio's string matches (exact, prefix, suffix, presence; path templates) and
//! address blocks, parsed once.
use std::net::IpAddr;

/// Istio string match: exact, `*`, `prefix*` or `*suffix`; for paths also a
/// template (`{*}` one segment, `{**}` one or more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Template(Vec<Segment>),
}

/// One `/`-separated part of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    One,
    Many,
}

fn template_matches(t: &[Segment], path: &[&str]) -> bool {
    match (t.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((Segment::Literal(l), t)), Some((p, path))) => l == p && template_matches(t, path),
        (Some((Segment::One, t)), Some((p, path))) => !p.is_empty() && template_matches(t, path),
        (Some((Segment::Many, t)), Some(_)) => {
            (1..=path.len()).any(|n| template_matches(t, &path[n..]))
        }
        _ => false,
    }
}

impl Pattern {
    pub fn new(p: &str) -> Pattern {
        if p == "*" {
            Pattern::Any
        } else if let Some(prefix) = p.strip_suffix('*') {
            Pattern::Prefix(prefix.to_owned())
        } else if let Some(suffix) = p.strip_prefix('*') {
            Pattern::Suffix(suffix.to_owned())
        } else {
            Pattern::Exact(p.to_owned())
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => e == v,
            Pattern::Prefix(p) => v.starts_with(p.as_str()),
            Pattern::Suffix(s) => v.ends_with(s.as_str()),
            Pattern::Template(t) => v
                .strip_prefix('/')
                .is_some_and(|v| template_matches(t, &v.split('/').collect::<Vec<_>>())),
        }
    }

    /// A path: a template if it has `{*}` or `{**}` (validated already).
    pub(super) fn path(p: &str) -> Pattern {
        if !(p.contains("{*}") || p.contains("{**}")) {
            return Pattern::new(p);
        }
        let segments = p
            .trim_matches('/')
            .split('/')
            .map(|s| match s {
                "{*}" => Segment::One,
                "{**}" => Segment::Many,
                lit => Segment::Literal(lit.to_owned()),
            })
            .collect();
        Pattern::Template(segments)
    }
}

/// An address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or one address.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (net, len) = match s.split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
            None => {
                let ip = s.parse::<IpAddr>().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if net.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Cidr { net, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let len = u32::from(self.len);
        match (ip.to_canonical(), self.net) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }
}
