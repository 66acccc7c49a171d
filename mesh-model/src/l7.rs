//! The compiled L7 configuration: the route table (`table`), JWT rules (`jwt`) and
//! Gateway API durations (`duration`). Pure; the waypoint executes it.
pub mod duration;
pub mod jwt;
pub mod table;
