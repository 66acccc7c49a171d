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
        // An empty token file (or one of blanks) registers no token: it must never
        // match an empty `Bearer `.
        if expected.trim().is_empty() || presented.trim().is_empty() {
            return Err(Status::unauthenticated(format!(
                "no usable bootstrap token for node {node} (the registered or presented token is empty)"
            )));
        }
        if !constant_time_eq(expected.trim().as_bytes(), presented.trim().as_bytes()) {
            return Err(Status::unauthenticated(format!(
                "wrong bootstrap token for node {node}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(dir: &Path, node: &str, bearer: &str) -> Result<(), tonic::Code> {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("authorization", bearer.parse().expect("ascii"));
        authenticate_node(dir, node, &m).map_err(|s| s.code())
    }

    #[test]
    fn only_the_nodes_own_non_empty_token_passes() {
        let dir = std::env::temp_dir().join(format!("fm-node-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("a"), "token-a\n").expect("a");
        std::fs::write(dir.join("b"), "token-b\n").expect("b");
        std::fs::write(dir.join("empty"), "\n").expect("empty");
        let unauth = Err(tonic::Code::Unauthenticated);
        let cases = [
            ("own token", "a", "Bearer token-a", Ok(())),
            ("another node's token", "a", "Bearer token-b", unauth),
            ("empty presented", "a", "Bearer ", unauth),
            (
                "empty registered, empty presented",
                "empty",
                "Bearer ",
                unauth,
            ),
            (
                "empty registered, blanks presented",
                "empty",
                "Bearer   ",
                unauth,
            ),
            ("no token registered", "c", "Bearer token-a", unauth),
            ("not Bearer", "a", "Basic token-a", unauth),
            (
                "a path as node",
                "../a",
                "Bearer token-a",
                Err(tonic::Code::InvalidArgument),
            ),
        ];
        for (name, node, bearer, want) in cases {
            assert_eq!(ask(&dir, node, bearer), want, "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
