//! Node authentication: an agent proves its node by the bootstrap token registered
//! for it (`<token_dir>/<node>`), sent as `authorization: Bearer <token>`.
use std::path::Path;

use tonic::Status;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a node's bootstrap token (metadata `authorization: Bearer <token>`) against
/// `<token_dir>/<node>`.
pub fn authenticate_node(
    token_dir: &Path,
    node: &str,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<(), Status> {
    {
        if node.is_empty() || node.contains('/') || node.starts_with('.') {
            return Err(Status::invalid_argument(
                "node name is empty or not a plain name",
            ));
        }
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("missing bootstrap token (authorization: Bearer <token>)")
            })?;
        let expected = std::fs::read_to_string(token_dir.join(node)).map_err(|_| {
            Status::unauthenticated(format!("no bootstrap token is registered for node {node}"))
        })?;
        if !constant_time_eq(expected.trim().as_bytes(), presented.trim().as_bytes()) {
            return Err(Status::unauthenticated(format!(
                "wrong bootstrap token for node {node}"
            )));
        }
        Ok(())
    }
}
