//! Process infrastructure shared by the node agent, the waypoint and the control
//! plane: the file watcher (`watch`), the admin/metrics HTTP server (`admin`),
//! backoff (`backoff`), connection caps (`caps`) and atomic file replacement
//! (`file`). Builds without eBPF.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backoff;
pub mod caps;
pub mod file;
pub mod watch;
