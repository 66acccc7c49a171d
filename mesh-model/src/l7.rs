//! The compiled L7 configuration: the route table (`table`), JWT rules (`jwt`, with
//! `jwks_file` for keys in files) and Gateway API durations (`duration`). Pure; the waypoint executes it.
pub mod duration;
pub mod jwks_file;
pub mod jwks_uri;
pub mod jwt;
pub mod status;
pub mod table;
