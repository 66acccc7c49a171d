//! L4 data path: the routing decision (pure) and the outbound/inbound proxies (I/O).
pub mod access;
pub mod hbone;
pub mod inbound;
pub mod outbound;
pub mod reset;
pub mod splice;
