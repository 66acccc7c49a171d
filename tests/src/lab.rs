//! Building, running and tearing down a lab cluster.
mod agents;
pub use agents::OldAgent;
mod apps;
mod build;
mod control;
mod core;
mod spec;

pub use self::core::Lab;
pub use apps::Waypoint;
pub use spec::*;
