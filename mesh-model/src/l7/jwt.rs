//! RequestAuthentication: JWT validation against JWKS given inline or in a file.
//! Istio semantics: a request without a token passes (without a request principal)
//! and policy decides; a request with a token that fails validation gets 401.
use std::collections::HashSet;

use crate::model::Labels;

use http::HeaderMap;
use jsonwebtoken::{jwk::JwkSet, Algorithm, DecodingKey, Validation};

use crate::model::Objects;

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    alg: Algorithm,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct JwtRule {
    issuer: String,
    audiences: Vec<String>,
    keys: Vec<Key>,
    /// (header, prefix)
    from: Vec<(String, String)>,
    forward: bool,
    claim_headers: Vec<(String, String)>,
    leeway: u64,
}

#[derive(Debug, Clone)]
pub struct JwtPolicy {
    namespace: String,
    /// In the mesh's root namespace: applies in every namespace.
    mesh_wide: bool,
    selector: Option<Labels>,
    rules: Vec<JwtRule>,
}

/// A validated token.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// `iss/sub`
    pub principal: String,
    pub claims: serde_json::Value,
    /// Headers to add from claims.
    pub headers: Vec<(String, String)>,
    /// Header the token came in, to strip unless forwarded.
    pub strip: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("JWT rejected: {0}")]
    Invalid(String),
}

fn algorithm(
    s: Option<&jsonwebtoken::jwk::KeyAlgorithm>,
    key: &jsonwebtoken::jwk::Jwk,
) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, KeyAlgorithm as K};
    Some(match s {
        Some(K::RS256) => Algorithm::RS256,
        Some(K::RS384) => Algorithm::RS384,
        Some(K::RS512) => Algorithm::RS512,
        Some(K::PS256) => Algorithm::PS256,
        Some(K::ES256) => Algorithm::ES256,
        Some(K::ES384) => Algorithm::ES384,
        Some(K::EdDSA) => Algorithm::EdDSA,
        Some(K::HS256) => Algorithm::HS256,
        Some(_) => return None,
        None => match &key.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
            AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
        },
    })
}

/// The token locations of a rule (`fromHeaders`, default `Authorization: Bearer`).
fn locations(r: &crate::model::JwtRule) -> Vec<(String, String)> {
    if r.from_headers.is_empty() {
        return vec![("authorization".to_owned(), "Bearer ".to_owned())];
    }
    r.from_headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.prefix.clone()))
        .collect()
}

fn claim_headers_of(r: &crate::model::JwtRule) -> Vec<(String, String)> {
    r.output_claim_to_headers
        .iter()
        .map(|c| (c.header.clone(), c.claim.clone()))
        .collect()
}

/// One jwtRule; Err is the message naming the bad field.
fn compile_rule(r: &crate::model::JwtRule, field: &str) -> Result<JwtRule, String> {
    let text = match (&r.jwks, &r.jwks_file, &r.jwks_uri) {
        (Some(j), None, None) => j.clone(),
        (None, Some(f), None) => super::jwks_file::read(super::jwks_file::dir(), f)
            .map_err(|e| format!("{field}.jwksFile: {e}"))?,
        (None, None, Some(u)) => {
            if super::jwks_uri::parse(u).is_none() {
                return Err(format!("{field}.jwksUri: {u:?} is not an https:// URI"));
            }
            super::jwks_uri::get(u).ok_or_else(|| {
                format!("{field}.jwksUri: {u} not fetched yet, or its last fetch failed")
            })?
        }
        _ => {
            return Err(format!(
                "{field}: give exactly one of jwks, jwksFile and jwksUri"
            ))
        }
    };
    let set: JwkSet =
        serde_json::from_str(&text).map_err(|e| format!("{field}: the JWKS is not valid: {e}"))?;
    let mut keys = Vec::new();
    for (k, jwk) in set.keys.iter().enumerate() {
        let alg = algorithm(jwk.common.key_algorithm.as_ref(), jwk)
            .ok_or_else(|| format!("{field}: key {k}: algorithm not supported"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{field}: key {k}: {e}"))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            key,
            alg,
        });
    }
    if keys.is_empty() {
        return Err(format!("{field}: the JWKS has no keys"));
    }
    Ok(JwtRule {
        issuer: r.issuer.clone(),
        audiences: r.audiences.clone(),
        keys,
        from: locations(r),
        forward: r.forward_original_token,
        claim_headers: claim_headers_of(r),
        leeway: r.clock_skew_seconds.unwrap_or(60),
    })
}

/// A rule that could not be compiled, kept fail-closed: its token locations are
/// still looked at, and any token found there is refused (401); its claim headers
/// are still removed from requests.
fn refusing(r: &crate::model::JwtRule) -> JwtRule {
    JwtRule {
        issuer: r.issuer.clone(),
        audiences: Vec::new(),
        keys: Vec::new(),
        from: locations(r),
        forward: false,
        claim_headers: claim_headers_of(r),
        leeway: 0,
    }
}

/// Compiles every RequestAuthentication. A rule that cannot be compiled does not
/// stop the others: it refuses every token (see `refusing`) and is reported as
/// (`RequestAuthentication ns/name`, why).
pub fn compile(o: &Objects) -> (Vec<JwtPolicy>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut degraded = Vec::new();
    for ra in &o.request_authentications {
        let name = format!("{}/{}", ra.metadata.namespace(), ra.metadata.name);
        let mut rules = Vec::new();
        for (i, r) in ra.spec.jwt_rules.iter().enumerate() {
            match compile_rule(r, &format!("spec.jwtRules[{i}]")) {
                Ok(rule) => rules.push(rule),
                Err(why) => {
                    degraded.push((
                        format!("RequestAuthentication {name}"),
                        format!(
                            "{why}: every token for issuer {} is refused (401)",
                            r.issuer
                        ),
                    ));
                    rules.push(refusing(r));
                }
            }
        }
        out.push(JwtPolicy {
            namespace: ra.metadata.namespace().to_owned(),
            mesh_wide: ra.metadata.namespace() == o.root_namespace(),
            selector: ra.spec.selector.as_ref().map(|s| s.match_labels.clone()),
            rules,
        });
    }
    (out, degraded)
}

/// `v` without `prefix`, the prefix compared case-insensitively (an auth scheme
/// such as `Bearer ` is case-insensitive, RFC 9110 11.1).
fn strip_prefix_ci<'v>(v: &'v str, prefix: &str) -> Option<&'v str> {
    let head = v.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &v[prefix.len()..])
}

/// The token of the first location that carries one. A location given twice is
/// refused: the app could read the other copy, one that was never checked.
fn token<'h>(
    headers: &'h HeaderMap,
    from: &[(String, String)],
) -> Result<Option<(String, &'h str)>, String> {
    for (name, prefix) in from {
        let mut values = headers.get_all(name.as_str()).iter();
        let Some(first) = values.next() else {
            continue;
        };
        if values.next().is_some() {
            return Err(format!("more than one {name} header"));
        }
        let Some(t) = first
            .to_str()
            .ok()
            .and_then(|v| strip_prefix_ci(v, prefix))
            .map(str::trim)
        else {
            continue;
        };
        if !t.is_empty() {
            return Ok(Some((name.clone(), t)));
        }
    }
    Ok(None)
}

fn verify(rule: &JwtRule, token: &str) -> Result<serde_json::Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
    let candidates = rule
        .keys
        .iter()
        .filter(|k| k.alg == header.alg && (header.kid.is_none() || k.kid == header.kid));
    let mut last = "no key of the JWKS matches the token's kid and algorithm".to_owned();
    for k in candidates {
        let mut v = Validation::new(k.alg);
        v.leeway = rule.leeway;
        v.set_issuer(&[rule.issuer.as_str()]);
        v.validate_nbf = true;
        if rule.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&rule.audiences);
        }
        v.required_spec_claims = HashSet::from(["exp".to_owned(), "iss".to_owned()]);
        match jsonwebtoken::decode::<serde_json::Value>(token, &k.key, &v) {
            Ok(data) => return Ok(data.claims),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

impl JwtPolicy {
    pub fn applies(&self, namespace: &str, labels: &Labels) -> bool {
        (self.namespace == namespace || self.mesh_wide)
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// Every header the policies set from claims (`outputClaimToHeaders`): a client
/// must never set one itself, so they are removed before authentication.
pub fn claim_headers<'p>(policies: &[&'p JwtPolicy]) -> impl Iterator<Item = &'p str> + 'p {
    let policies: Vec<&'p JwtPolicy> = policies.to_vec();
    policies
        .into_iter()
        .flat_map(|p| &p.rules)
        .flat_map(|r| r.claim_headers.iter().map(|(h, _)| h.as_str()))
}

/// Validates the request's token against the policies that apply.
pub fn authenticate(
    policies: &[&JwtPolicy],
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, Error> {
    let mut errors = Vec::new();
    let mut found = false;
    for rule in policies.iter().flat_map(|p| &p.rules) {
        let Some((header, t)) = token(headers, &rule.from).map_err(Error::Invalid)? else {
            continue;
        };
        found = true;
        match verify(rule, t) {
            Ok(claims) => {
                let sub = claims.get("sub").and_then(|s| s.as_str()).unwrap_or("");
                let headers = rule
                    .claim_headers
                    .iter()
                    .filter_map(|(h, c)| {
                        let v = claims.get(c)?;
                        Some((
                            h.clone(),
                            v.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string()),
                        ))
                    })
                    .collect();
                return Ok(Some(Authenticated {
                    principal: format!("{}/{sub}", rule.issuer),
                    headers,
                    strip: (!rule.forward).then_some(header),
                    claims,
                }));
            }
            Err(e) => errors.push(format!("issuer {}: {e}", rule.issuer)),
        }
    }
    if found {
        return Err(Error::Invalid(errors.join("; ")));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"ferrymesh-unit-test-secret-0123456789";
    // base64url of SECRET
    const K: &str = "ZmVycnltZXNoLXVuaXQtdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ";

    fn policies(extra: &str) -> Vec<JwtPolicy> {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: j, namespace: shop}}\nspec:\n  jwtRules:\n  - issuer: https://issuer.test\n    audiences: [web]\n    jwks: '{{\"keys\":[{{\"kty\":\"oct\",\"kid\":\"k1\",\"alg\":\"HS256\",\"k\":\"{K}\"}}]}}'\n    outputClaimToHeaders: [{{header: x-sub, claim: sub}}]\n{extra}"
        );
        compile(&crate::config::parse("t", &yaml).expect("yaml")).0
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn token(claims: serde_json::Value, kid: &str, secret: &[u8]) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.into());
        encode(&h, &claims, &EncodingKey::from_secret(secret)).expect("encode")
    }

    #[test]
    fn tokens() {
        let p = policies("");
        let refs: Vec<&JwtPolicy> = p.iter().collect();
        let good = serde_json::json!({"iss": "https://issuer.test", "sub": "alice", "aud": "web", "exp": now() + 600});
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = good.clone();
            f(&mut c);
            c
        };
        // (name, Authorization header, Ok(Some(principal)) / Ok(None) / Err)
        type Want = Result<Option<&'static str>, ()>;
        let cases: Vec<(&str, Option<String>, Want)> = vec![
            ("no token", None, Ok(None)),
            (
                "good",
                Some(token(good.clone(), "k1", SECRET)),
                Ok(Some("https://issuer.test/alice")),
            ),
            (
                "expired",
                Some(token(
                    with(&|c| c["exp"] = (now() - 3600).into()),
                    "k1",
                    SECRET,
                )),
                Err(()),
            ),
            (
                "expired within the clock skew",
                Some(token(
                    with(&|c| c["exp"] = (now() - 30).into()),
                    "k1",
                    SECRET,
                )),
                Ok(Some("https://issuer.test/alice")),
            ),
            (
                "not yet valid",
                Some(token(
                    with(&|c| c["nbf"] = (now() + 3600).into()),
                    "k1",
                    SECRET,
                )),
                Err(()),
            ),
            (
                "wrong issuer",
                Some(token(
                    with(&|c| c["iss"] = "https://evil.test".into()),
                    "k1",
                    SECRET,
                )),
                Err(()),
            ),
            (
                "wrong audience",
                Some(token(with(&|c| c["aud"] = "api".into()), "k1", SECRET)),
                Err(()),
            ),
            (
                "no exp",
                Some(token(
                    with(&|c| {
                        c.as_object_mut().map(|o| o.remove("exp"));
                    }),
                    "k1",
                    SECRET,
                )),
                Err(()),
            ),
            (
                "unknown kid",
                Some(token(good.clone(), "k2", SECRET)),
                Err(()),
            ),
            (
                "wrong key",
                Some(token(
                    good.clone(),
                    "k1",
                    b"another-secret-of-enough-length-xx",
                )),
                Err(()),
            ),
            ("garbage", Some("a.b.c".into()), Err(())),
        ];
        for (name, tok, want) in cases {
            let mut h = HeaderMap::new();
            if let Some(t) = tok {
                h.insert(
                    "authorization",
                    format!("Bearer {t}").parse().expect("header"),
                );
            }
            let got = authenticate(&refs, &h);
            match (got, want) {
                (Ok(Some(a)), Ok(Some(p))) => {
                    assert_eq!(a.principal, p, "{name}");
                    assert_eq!(
                        a.headers,
                        vec![("x-sub".to_owned(), "alice".to_owned())],
                        "{name}"
                    );
                    assert_eq!(
                        a.strip.as_deref(),
                        Some("authorization"),
                        "{name}: not forwarded by default"
                    );
                }
                (Ok(None), Ok(None)) | (Err(_), Err(())) => {}
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_rule_that_cannot_compile_refuses_tokens_and_leaves_the_rest() {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: j, namespace: shop}}\nspec:\n  jwtRules:\n  - issuer: https://broken\n    jwks: '{{\"keys\":[{{\"kty\":\"oct\",\"kid\":\"x\",\"alg\":\"HS999\",\"k\":\"AA\"}}]}}'\n    outputClaimToHeaders: [{{header: x-broken, claim: sub}}]\n---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: ok, namespace: shop}}\nspec:\n  jwtRules:\n  - issuer: https://issuer.test\n    audiences: [web]\n    jwks: '{{\"keys\":[{{\"kty\":\"oct\",\"kid\":\"k1\",\"alg\":\"HS256\",\"k\":\"{K}\"}}]}}'\n"
        );
        let objects = crate::config::parse("t", &yaml).expect("yaml");
        let (p, degraded) = compile(&objects);
        assert_eq!(p.len(), 2, "the other policy still applies");
        assert_eq!(degraded.len(), 1, "{degraded:?}");
        assert!(degraded[0].1.contains("refused (401)"), "{degraded:?}");
        let refs: Vec<&JwtPolicy> = p.iter().collect();
        // Any token is refused (the broken rule looks at Authorization too)...
        let good = token(
            serde_json::json!({"iss": "https://issuer.test", "sub": "a", "aud": "web", "exp": now() + 600}),
            "k1",
            SECRET,
        );
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            format!("Bearer {good}").parse().expect("header"),
        );
        assert!(
            authenticate(&refs[..1], &h).is_err(),
            "broken rule alone: refused"
        );
        // ...while the healthy policy alone still validates it.
        assert!(authenticate(&refs[1..], &h).expect("valid").is_some());
        // Its claim header is still stripped from every request.
        assert_eq!(claim_headers(&refs[..1]).collect::<Vec<_>>(), ["x-broken"]);
    }

    #[test]
    fn custom_header_and_selector() {
        let p = policies(
            "    fromHeaders: [{name: x-jwt, prefix: \"\"}]\n    forwardOriginalToken: true\n",
        );
        let refs: Vec<&JwtPolicy> = p.iter().collect();
        let t = token(
            serde_json::json!({"iss": "https://issuer.test", "sub": "bob", "aud": "web", "exp": now() + 600}),
            "k1",
            SECRET,
        );
        let mut h = HeaderMap::new();
        h.insert("x-jwt", t.parse().expect("header"));
        let a = authenticate(&refs, &h)
            .expect("valid")
            .expect("token found");
        assert_eq!(a.principal, "https://issuer.test/bob");
        assert_eq!(a.strip, None, "forwardOriginalToken keeps it");
        // A bearer token in Authorization is not looked at by this rule.
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
        assert!(authenticate(&refs, &h)
            .expect("no token for this rule")
            .is_none());
        let labels = Labels::new();
        assert!(p[0].applies("shop", &labels));
        assert!(!p[0].applies("other", &labels));
    }

    #[test]
    fn a_second_token_header_or_a_lower_case_scheme_is_not_waved_through() {
        let p = policies("");
        let refs: Vec<&JwtPolicy> = p.iter().collect();
        let good = token(
            serde_json::json!({"iss": "https://issuer.test", "sub": "alice", "aud": "web", "exp": now() + 600}),
            "k1",
            SECRET,
        );
        // Two Authorization headers: the app could read the unchecked one.
        let mut h = HeaderMap::new();
        h.append(
            "authorization",
            format!("Bearer {good}").parse().expect("header"),
        );
        h.append("authorization", "Bearer forged".parse().expect("header"));
        assert!(authenticate(&refs, &h).is_err());
        // `bearer` is the same scheme: the token is checked (and stripped).
        let mut h = HeaderMap::new();
        h.insert("authorization", "bearer not.a.jwt".parse().expect("header"));
        assert!(authenticate(&refs, &h).is_err(), "checked, and invalid");
        h.insert(
            "authorization",
            format!("bEaReR {good}").parse().expect("header"),
        );
        let a = authenticate(&refs, &h).expect("valid").expect("found");
        assert_eq!(a.strip.as_deref(), Some("authorization"));
        // The headers set from claims are known, to be removed from every request.
        assert_eq!(claim_headers(&refs).collect::<Vec<_>>(), ["x-sub"]);
    }
}
