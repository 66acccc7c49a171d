//! The bodies of the fuzz targets (`fuzz/`, run by `cargo xtask fuzz`), here so
//! that `cargo test` replays every corpus and regression input through the same
//! code (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes, must never panic, and
//! checks the properties its parser promises.
use std::{net::IpAddr, sync::OnceLock};

use http::{HeaderName, HeaderValue, Method, Request};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets, by name (the file names under `fuzz/fuzz_targets`).
pub const TARGETS: [(&str, Target); 5] = [
    ("config", config),
    ("hbone_connect", hbone_connect),
    ("http_head", http_head),
    ("jwt", jwt),
    ("csr", csr),
];

/// The config loader, as every config source runs it (parse, validate, compile):
/// any text is accepted or refused with a message, never a panic, and the same
/// text gets the same answer (no hidden state between loads).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = mesh_model::config::check("fuzz.yaml", text).map(|s| {
        (
            s.workloads.len(),
            s.services_by_key.len(),
            s.objects.iter().count(),
        )
    });
    let again = mesh_model::config::check("fuzz.yaml", text).map(|s| {
        (
            s.workloads.len(),
            s.services_by_key.len(),
            s.objects.iter().count(),
        )
    });
    assert_eq!(
        first.as_ref().map_err(ToString::to_string),
        again.as_ref().map_err(ToString::to_string)
    );
}

/// Splits input into lines: a request head as a fuzzer can grow one.
fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == b'\n').collect()
}

/// A request from `method\nuri\nname: value...`, as far as `http` accepts it.
fn request(data: &[u8]) -> Option<Request<()>> {
    let l = lines(data);
    let method = Method::from_bytes(l.first()?).ok()?;
    let mut b = Request::builder().method(method).uri(l.get(1).copied()?);
    for h in l.iter().skip(2) {
        let Some(colon) = h.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&h[..colon]),
            HeaderValue::from_bytes(h[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        b = b.header(n, v);
    }
    b.body(()).ok()
}

/// CONNECT validation of the HBONE server: a target it accepts is one of the pod's
/// addresses and never one of the agent's own ports.
pub fn hbone_connect(data: &[u8]) {
    let Some(req) = request(data) else {
        return;
    };
    let mine: [IpAddr; 2] = [
        IpAddr::from([198, 19, 2, 10]),
        "2001:db8:1:2::10".parse().expect("literal"),
    ];
    if let Ok(target) = crate::tunnel::hbone::server::connect_target(&req, &mine) {
        assert!(mine.contains(&target.ip()), "{target}");
        assert!(!crate::guard::is_agent_port(target.port()), "{target}");
        assert_eq!(req.method(), Method::CONNECT);
    }
}

/// The waypoint's normalize phase on a request head: the result is a fixed point
/// (normalising again changes nothing), starts with `/`, has no empty, `.` or `..`
/// segment, and routing/authorization/upstream agree on it.
pub fn http_head(data: &[u8]) {
    let Some(req) = request(data) else {
        return;
    };
    let (mut parts, ()) = req.into_parts();
    let mut log = crate::waypoint::log::RequestLog::default();
    if crate::waypoint::phases::normalize::apply(&mut parts, &mut log).is_err() {
        return;
    }
    if parts.method == Method::CONNECT
        || parts.uri.path_and_query().is_none()
        || parts.uri.path() == "*"
    {
        return;
    }
    let path = parts.uri.path();
    assert_eq!(path, log.path, "the log and the request agree");
    let again = crate::waypoint::phases::normalize::path(path).expect("normal form parses");
    assert_eq!(again, path, "a fixed point");
    assert!(path.starts_with('/'), "{path}");
    for seg in path[1..].split('/').rev().skip(1) {
        assert!(!matches!(seg, "" | "." | ".."), "{path}");
    }
    for connection_specific in [
        "connection",
        "transfer-encoding",
        "keep-alive",
        "http2-settings",
    ] {
        if connection_specific == "connection"
            && parts
                .headers
                .get("upgrade")
                .is_some_and(|u| u == "websocket")
        {
            continue;
        }
        assert!(
            !parts.headers.contains_key(connection_specific),
            "{connection_specific}"
        );
    }
}

fn jwt_policies() -> &'static [mesh_model::l7::jwt::JwtPolicy] {
    static P: OnceLock<Vec<mesh_model::l7::jwt::JwtPolicy>> = OnceLock::new();
    P.get_or_init(|| {
        let yaml = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: j, namespace: shop}
spec:
  jwtRules:
  - issuer: https://issuer.fuzz
    audiences: [web]
    jwks: '{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"ZnV6ei1zZWNyZXQtZnV6ei1zZWNyZXQtZnV6ei1zZWNyZXQ"}]}'
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
"#;
        let objects = mesh_model::config::parse("fuzz", yaml).expect("policy");
        let (policies, degraded) = mesh_model::l7::jwt::compile(&objects);
        assert!(degraded.is_empty(), "{degraded:?}");
        policies
    })
}

/// JWT parsing and validation: bytes as an Authorization header (one or more
/// lines = repeated headers). Nothing is accepted without the key.
pub fn jwt(data: &[u8]) {
    let refs: Vec<&mesh_model::l7::jwt::JwtPolicy> = jwt_policies().iter().collect();
    let mut headers = http::HeaderMap::new();
    for l in lines(data) {
        if let Ok(v) = HeaderValue::from_bytes(l) {
            headers.append(http::header::AUTHORIZATION, v);
        }
    }
    if let Ok(Some(a)) = mesh_model::l7::jwt::authenticate(&refs, &headers) {
        // Only a token signed with the fuzz key passes; a fuzzer finding one has
        // found a signature bypass.
        panic!("a token was accepted: {}", a.principal);
    }
}

fn ca() -> &'static mesh_model::ca::Ca {
    static CA: OnceLock<mesh_model::ca::Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferrymesh-fuzz-ca-{}", std::process::id()));
        mesh_model::ca::Ca::load_or_create(&dir, "cluster.local").expect("fuzz CA")
    })
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The CA's CSR handling: PEM text as given, or the bytes as DER inside PEM (to
/// reach the DER parser). An accepted CSR names one SPIFFE identity of the trust
/// domain.
pub fn csr(data: &[u8]) {
    let pem = match std::str::from_utf8(data) {
        Ok(t) if t.contains("-----BEGIN") => t.to_owned(),
        _ => format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64(data)
        ),
    };
    if let Ok((identity, _)) = ca().csr_identity(&pem) {
        assert_eq!(identity.trust_domain, "cluster.local");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_the_standard_alphabet_with_padding() {
        for (raw, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
        ] {
            assert_eq!(super::base64(raw), want);
        }
    }
}
