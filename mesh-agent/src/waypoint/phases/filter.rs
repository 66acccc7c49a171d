//! Filter: the rule's filters in order. DirectResponse (`DR`) and RequestRedirect
//! answer; a filter the config could not resolve answers 500 (`NC`); header
//! modifiers and URL rewrites change the request; response header modifiers and
//! mirrors are kept for later phases.
use http::{header, request::Parts, HeaderValue, StatusCode};
use mesh_model::{
    l7::table::{Backend, Filter},
    model::HeaderModifier,
};

use super::route::Routed;
use crate::waypoint::{
    filters,
    log::RequestLog,
    reply::{LocalReply, ResponseFlag},
};

/// What later phases do with the filters.
#[derive(Default)]
pub struct Filtered {
    pub response_headers: Vec<HeaderModifier>,
    /// Mirrors chosen for this request (after their percentage).
    pub mirrors: Vec<Backend>,
}

pub fn apply(routed: &Routed, parts: &mut Parts, log: &RequestLog) -> Result<Filtered, LocalReply> {
    let mut out = Filtered::default();
    for f in &routed.rule.filters {
        match f {
            Filter::Direct(d) => {
                let status = LocalReply::status_or(d.status, StatusCode::OK);
                let headers = d.headers.iter().map(|h| (&h.name, &h.value));
                return Err(
                    LocalReply::new(status, d.body.clone(), ResponseFlag::DirectResponse)
                        .headers(headers)
                        .http_only(),
                );
            }
            Filter::Redirect(rd) => {
                let matched = routed.matched.as_ref();
                let (status, location) = filters::redirect(&parts.uri, &log.authority, rd, matched);
                let mut r = LocalReply::new(status, "", ResponseFlag::None).http_only();
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r = r.header(header::LOCATION, v);
                }
                return Err(r);
            }
            Filter::Invalid(why) => {
                tracing::warn!(route = %log.route, "{why}; answering 500");
                return Err(LocalReply::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "route misconfigured\n",
                    ResponseFlag::NoClusterFound,
                ));
            }
            Filter::RequestHeaders(m) => filters::modify_headers(&mut parts.headers, m),
            Filter::Rewrite(r) => {
                let matched = routed.matched.as_ref();
                if let Some(uri) = filters::rewrite(&parts.uri, &mut parts.headers, r, matched) {
                    parts.uri = uri;
                }
            }
            Filter::ResponseHeaders(m) => out.response_headers.push(m.clone()),
            Filter::Mirror { backend, percent } => {
                if fastrand::u32(..100) < *percent {
                    out.mirrors.push(backend.clone());
                }
            }
        }
    }
    Ok(out)
}
