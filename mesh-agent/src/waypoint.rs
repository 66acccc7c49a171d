//! L7: the waypoint. A captured connection whose destination has L7 configuration
//! (`plan` decides: a route, route-side TrafficPolicy, `appProtocol` http/http2/grpc,
//! or an L7 AuthorizationPolicy / RequestAuthentication for the destination workload)
//! is served here instead of being spliced: hyper terminates HTTP/1.1 and HTTP/2, and
//! each request is routed, filtered, checked and sent upstream with the source
//! workload's identity.
//!
//! `server` terminates HTTP (after `detect` read its first bytes in time) and runs each request through the named `phases`
//! (route, filter, admit, choose, authorize, forward, respond; then `log`), which
//! answer with a `reply::LocalReply` when they end a request. `mesh_model::l7`
//! holds the compiled config; `router`, `filters` and `trace` decide without I/O;
//! `backend` keeps state that outlives config changes; `attempt` and `upstream`
//! send requests over routes that `connect` executes.
mod attempt;
pub mod backend;
pub mod body;
pub mod conn;
mod cors;
mod detect;
pub mod filters;
pub mod log;
pub mod phases;
pub mod ratelimit;
pub mod reply;
pub mod router;
pub mod runtime;
pub mod server;
pub mod standalone;
pub mod trace;
pub mod upstream;

pub use crate::plan::Parent;
pub use runtime::Runtime;
