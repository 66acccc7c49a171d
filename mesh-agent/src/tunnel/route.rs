//! Where an outbound captured connection goes. No I/O: table-tested.
use std::net::SocketAddr;

use mesh_model::state::State;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A service VIP resolved to one of its endpoints.
    Service {
        service: String,
        endpoint: SocketAddr,
    },
    /// A known workload addressed directly.
    Workload { workload: String, addr: SocketAddr },
    /// An address the mesh does not know: sent on unchanged.
    Passthrough { addr: SocketAddr },
}

impl Destination {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Destination::Service { endpoint, .. } => *endpoint,
            Destination::Workload { addr, .. } => *addr,
            Destination::Passthrough { addr } => *addr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("service {service} has no port {port}; check the Service's spec.ports")]
    NoSuchServicePort { service: String, port: u16 },
    #[error("service {service} port {port} has no endpoint of this address family; check the Service's selector and the workloads' labels and addresses")]
    NoEndpoint { service: String, port: u16 },
}

pub fn outbound(state: &State, original: SocketAddr) -> Result<Destination, Error> {
    let ip = original.ip().to_canonical();
    let original = SocketAddr::new(ip, original.port());
    if let Some(svc) = state.services_by_vip.get(&ip) {
        let port = svc
            .ports
            .iter()
            .find(|p| p.port == original.port())
            .ok_or_else(|| Error::NoSuchServicePort {
                service: svc.key(),
                port: original.port(),
            })?;
        let endpoint = port.pick(&original).ok_or_else(|| Error::NoEndpoint {
            service: svc.key(),
            port: original.port(),
        })?;
        return Ok(Destination::Service {
            service: svc.key(),
            endpoint,
        });
    }
    if let Some(w) = state.workloads_by_ip.get(&ip) {
        return Ok(Destination::Workload {
            workload: w.key(),
            addr: original,
        });
    }
    Ok(Destination::Passthrough { addr: original })
}

#[cfg(test)]
mod tests;
