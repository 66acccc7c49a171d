//! Node authentication: an agent proves its node with a token sent as
//! `authorization: Bearer <token>`. Either the bootstrap token registered for the
//! node (`<token_dir>/<node>`, file mode: each agent holds only its own), or, in a
//! cluster, the agent pod's bound ServiceAccount token, checked with a
//! TokenReview: the token must belong to the agents' ServiceAccount and be bound to
//! a pod on that very node (as istiod checks ztunnel), so no token is shared.
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tonic::Status;

/// How agents prove their node.
#[derive(Clone)]
pub enum NodeAuth {
    /// One bootstrap token file per node.
    Files(PathBuf),
    /// Bound ServiceAccount tokens, reviewed by the API server.
    TokenReview {
        client: kube::Client,
        /// The audience the agents' projected tokens carry.
        audience: String,
        /// `system:serviceaccount:<namespace>:<name>` of the agents.
        username: String,
    },
}

/// The node a reviewed token's pod runs on (the API server sets it for bound
/// tokens).
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<&str, Status> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Status::unauthenticated("missing token (authorization: Bearer <token>)"))
}

impl NodeAuth {
    /// Whether the caller proved it is `node`'s agent.
    pub async fn check(
        &self,
        node: &str,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(), Status> {
        match self {
            NodeAuth::Files(dir) => authenticate_node(dir, node, metadata),
            NodeAuth::TokenReview {
                client,
                audience,
                username,
            } => review(client, audience, username, node, bearer(metadata)?).await,
        }
    }
}

async fn review(
    client: &kube::Client,
    audience: &str,
    username: &str,
    node: &str,
    token: &str,
) -> Result<(), Status> {
    let tr = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![audience.to_owned()]),
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let out = api.create(&PostParams::default(), &tr).await.map_err(|e| {
        Status::unavailable(format!(
            "TokenReview failed: {e}; is the API server reachable?"
        ))
    })?;
    let status = out.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(Status::unauthenticated(format!(
            "the token was not accepted by the API server{}",
            status.error.map(|e| format!(": {e}")).unwrap_or_default()
        )));
    }
    let user = status.user.unwrap_or_default();
    if user.username.as_deref() != Some(username) {
        return Err(Status::permission_denied(format!(
            "the token is {:?}'s, not the node agents' ({username})",
            user.username.unwrap_or_default()
        )));
    }
    let bound = user
        .extra
        .as_ref()
        .and_then(|e| e.get(NODE_NAME_EXTRA))
        .and_then(|v| v.first());
    if bound.map(String::as_str) != Some(node) {
        return Err(Status::permission_denied(format!(
            "the token is bound to a pod on node {:?}, not on {node}",
            bound.map(String::as_str).unwrap_or("(none)")
        )));
    }
    Ok(())
}

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
