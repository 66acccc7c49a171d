//! Parsing of the local config file: YAML documents of Kubernetes-shaped objects.
//!
//! Errors name the file, the line and column, the document's kind and name and the
//! field path, so an operator can fix the file without guessing. A file that fails
//! to parse or validate is refused as a whole.
use std::{collections::HashSet, net::IpAddr, path::Path};

use serde::de::DeserializeOwned;

use crate::model::{
    AuthorizationPolicy, DirectResponse, GrpcRoute, HttpRoute, Namespace, Node, Objects,
    PeerAuthentication, RequestAuthentication, Service, TrafficPolicy, TypeMeta, Workload,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {what}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        what: String,
        message: String,
    },
    #[error("{path}: document at line {line}: unknown kind {kind:?}; expected one of Node, Namespace, Workload, Service, AuthorizationPolicy, PeerAuthentication, HTTPRoute, GRPCRoute, TrafficPolicy, DirectResponse, RequestAuthentication")]
    UnknownKind {
        path: String,
        line: usize,
        kind: String,
    },
    #[error("{path}: document at line {line}: missing `kind`")]
    MissingKind { path: String, line: usize },
    #[error("{path}: {kind} {name:?}: {message}")]
    Invalid {
        path: String,
        kind: &'static str,
        name: String,
        message: String,
    },
}

pub fn load(path: &Path) -> Result<Objects, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&path.display().to_string(), &text)
}

/// One `---`-separated document and the 1-based line it starts on.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

fn decode<T: DeserializeOwned>(
    path: &str,
    start: usize,
    what: &str,
    doc: &str,
) -> Result<T, Error> {
    serde_yaml::from_str(doc).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (start + l.line() - 1, l.column()))
            .unwrap_or((start, 0));
        let mut message = e.to_string();
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        Error::Syntax {
            path: path.to_owned(),
            line,
            column,
            what: what.to_owned(),
            message,
        }
    })
}

pub fn parse(path: &str, text: &str) -> Result<Objects, Error> {
    let objects = parse_unchecked(path, text)?;
    validate(path, &objects)?;
    Ok(objects)
}

/// Every `*.yaml`/`*.yml` file of a directory (sorted by name) as one config:
/// parsed file by file (errors name the file), validated together.
pub fn load_dir(dir: &Path) -> Result<Objects, Error> {
    let read_err = |source| Error::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut all = Objects::default();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| Error::Read {
            path: f.display().to_string(),
            source,
        })?;
        all.extend(parse_unchecked(&f.display().to_string(), &text)?);
    }
    validate(&dir.display().to_string(), &all)?;
    Ok(all)
}

fn parse_unchecked(path: &str, text: &str) -> Result<Objects, Error> {
    let mut objects = Objects::default();
    for (start, doc) in documents(text) {
        let meta: TypeMeta = decode(path, start, "document", &doc)?;
        let kind = meta.kind.ok_or(Error::MissingKind {
            path: path.to_owned(),
            line: start,
        })?;
        match kind.as_str() {
            "Node" => objects
                .nodes
                .push(decode::<Node>(path, start, "Node", &doc)?),
            "Namespace" => {
                objects
                    .namespaces
                    .push(decode::<Namespace>(path, start, "Namespace", &doc)?)
            }
            "Workload" => objects
                .workloads
                .push(decode::<Workload>(path, start, "Workload", &doc)?),
            "Service" => objects
                .services
                .push(decode::<Service>(path, start, "Service", &doc)?),
            "AuthorizationPolicy" => objects.authorization_policies.push(decode::<
                AuthorizationPolicy,
            >(
                path,
                start,
                "AuthorizationPolicy",
                &doc,
            )?),
            "PeerAuthentication" => {
                objects
                    .peer_authentications
                    .push(decode::<PeerAuthentication>(
                        path,
                        start,
                        "PeerAuthentication",
                        &doc,
                    )?)
            }
            "HTTPRoute" => {
                objects
                    .http_routes
                    .push(decode::<HttpRoute>(path, start, "HTTPRoute", &doc)?)
            }
            "GRPCRoute" => {
                objects
                    .grpc_routes
                    .push(decode::<GrpcRoute>(path, start, "GRPCRoute", &doc)?)
            }
            "TrafficPolicy" => objects.traffic_policies.push(decode::<TrafficPolicy>(
                path,
                start,
                "TrafficPolicy",
                &doc,
            )?),
            "DirectResponse" => objects.direct_responses.push(decode::<DirectResponse>(
                path,
                start,
                "DirectResponse",
                &doc,
            )?),
            "RequestAuthentication" => objects.request_authentications.push(decode::<
                RequestAuthentication,
            >(
                path,
                start,
                "RequestAuthentication",
                &doc,
            )?),
            _ => {
                return Err(Error::UnknownKind {
                    path: path.to_owned(),
                    line: start,
                    kind,
                })
            }
        }
    }
    Ok(objects)
}

fn validate(path: &str, o: &Objects) -> Result<(), Error> {
    let invalid = |kind, name: &str, message: String| Error::Invalid {
        path: path.to_owned(),
        kind,
        name: name.to_owned(),
        message,
    };
    let mut names = HashSet::new();
    let mut ips: HashSet<IpAddr> = HashSet::new();
    for w in &o.workloads {
        let name = format!("{}/{}", w.metadata.namespace(), w.metadata.name);
        if !names.insert(name.clone()) {
            return Err(invalid("Workload", &name, "defined twice".into()));
        }
        let v4 = w.spec.addresses.iter().filter(|a| a.is_ipv4()).count();
        let v6 = w.spec.addresses.len() - v4;
        if w.spec.addresses.is_empty() || v4 > 1 || v6 > 1 {
            return Err(invalid(
                "Workload",
                &name,
                "spec.addresses must hold one IPv4 and/or one IPv6 address".into(),
            ));
        }
        for a in &w.spec.addresses {
            if !ips.insert(*a) {
                return Err(invalid(
                    "Workload",
                    &name,
                    format!("spec.addresses: {a} is already used by another workload"),
                ));
            }
        }
    }
    let mut svc_names = HashSet::new();
    for s in &o.services {
        let name = format!("{}/{}", s.metadata.namespace(), s.metadata.name);
        if !svc_names.insert(name.clone()) {
            return Err(invalid("Service", &name, "defined twice".into()));
        }
        for ip in &s.spec.cluster_ips {
            if !ips.insert(*ip) {
                return Err(invalid(
                    "Service",
                    &name,
                    format!("spec.clusterIPs: {ip} is already used by another object"),
                ));
            }
        }
        for (i, p) in s.spec.ports.iter().enumerate() {
            if p.port == 0 || p.target_port == Some(0) {
                return Err(invalid(
                    "Service",
                    &name,
                    format!("spec.ports[{i}]: port 0 is not a valid port"),
                ));
            }
            if p.protocol != "TCP" {
                return Err(invalid(
                    "Service",
                    &name,
                    format!(
                        "spec.ports[{i}].protocol: {:?} is not supported; only TCP",
                        p.protocol
                    ),
                ));
            }
        }
    }
    for p in &o.authorization_policies {
        let name = format!("{}/{}", p.metadata.namespace(), p.metadata.name);
        for (i, r) in p.spec.rules.iter().enumerate() {
            for (j, f) in r.from.iter().enumerate() {
                for b in f.source.ip_blocks.iter().chain(&f.source.not_ip_blocks) {
                    if crate::authz::parse_cidr(b).is_none() {
                        return Err(invalid(
                            "AuthorizationPolicy",
                            &name,
                            format!("spec.rules[{i}].from[{j}].source.ipBlocks: {b:?} is not an address or CIDR"),
                        ));
                    }
                }
            }
            for (j, t) in r.to.iter().enumerate() {
                for port in t.operation.ports.iter().chain(&t.operation.not_ports) {
                    if port.parse::<u16>().is_err() {
                        return Err(invalid(
                            "AuthorizationPolicy",
                            &name,
                            format!("spec.rules[{i}].to[{j}].operation.ports: {port:?} is not a port number"),
                        ));
                    }
                }
            }
        }
    }
    crate::l7::table::Table::build(o).map_err(|e| Error::Invalid {
        path: path.to_owned(),
        kind: e.kind,
        name: e.name,
        message: e.message,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;
