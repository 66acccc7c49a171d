//! Per-request policy: RequestAuthentication (JWT) then AuthorizationPolicy with
//! the request's attributes, for one target workload.
use http::{header, HeaderValue, Response, StatusCode};

use mesh_model::{
    authz,
    identity::Identity,
    l7::jwt,
    state::{State, WorkloadInfo},
};

use super::server::{local, Conn, DownBody, RequestLog};
use crate::enforce::{self, Caller};

/// RequestAuthentication then AuthorizationPolicy of `target` for one request;
/// Err is the response that refuses it.
pub fn check(
    conn: &Conn,
    state: &State,
    target: &WorkloadInfo,
    source: Option<&Identity>,
    parts: &mut http::request::Parts,
    log: &mut RequestLog,
    grpc: bool,
) -> Result<(), Box<Response<DownBody>>> {
    let table = &state.l7;
    let jwt: Vec<&jwt::JwtPolicy> = table
        .jwt
        .iter()
        .filter(|p| p.applies(target.namespace(), target.labels()))
        .collect();
    let authn = match jwt::authenticate(&jwt, &parts.headers) {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(route = %log.route, source = %conn.source_key(), destination = %target.key(), "{e}");
            log.flags = "UAEX";
            let mut r = local(StatusCode::UNAUTHORIZED, "invalid token\n", grpc, None);
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(Box::new(r));
        }
    };
    let path = parts.uri.path().to_owned();
    let request = authz::Request {
        method: parts.method.as_str(),
        path: &path,
        host: &log.authority,
        headers: &parts.headers,
        principal: authn.as_ref().map(|a| a.principal.as_str()),
        claims: authn.as_ref().map(|a| &a.claims),
    };
    let caller = Caller {
        identity: source,
        ip: conn.client.ip(),
    };
    if enforce::request(target, caller, conn.original.port(), &request).is_err() {
        log.flags = "AZ";
        return Err(Box::new(local(
            StatusCode::FORBIDDEN,
            "access denied\n",
            grpc,
            None,
        )));
    }
    if let Some(a) = authn {
        if let Some(h) = &a.strip {
            parts.headers.remove(h.as_str());
        }
        for (h, v) in &a.headers {
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::from_bytes(h.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                parts.headers.insert(n, v);
            }
        }
    }
    Ok(())
}
