//! Filter: the rule's filters in order (and, once a backend is chosen, its
//! backendRef's). DirectResponse (`DR`), RequestRedirect and a CORS preflight
//! answer; a filter the config could not resolve answers 500 (`NC`); header
//! modifiers and URL rewrites change the request; response header modifiers,
//! CORS response headers and mirrors are kept for later phases.
use http::{header, request::Parts, HeaderValue, StatusCode};
use mesh_model::{
    l7::table::{Backend, Filter},
    model::{self, HeaderModifier},
};

use super::route::Routed;
use crate::waypoint::{
    cors::{self, Cors},
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

/// The rule's filters.
pub fn apply(routed: &Routed, parts: &mut Parts, log: &RequestLog) -> Result<Filtered, LocalReply> {
    let mut out = Filtered::default();
    run(&routed.rule.filters, routed, parts, log, &mut out)?;
    Ok(out)
}

/// The chosen backendRef's own filters, after the rule's.
pub fn backend(
    routed: &Routed,
    weighted: Option<usize>,
    parts: &mut Parts,
    log: &RequestLog,
    out: &mut Filtered,
) -> Result<(), LocalReply> {
    match weighted.and_then(|i| routed.rule.backends.get(i)) {
        Some(w) if !w.filters.is_empty() => run(&w.filters, routed, parts, log, out),
        _ => Ok(()),
    }
}

/// CORS response headers as a modifier the respond phase applies.
fn set_all(h: &http::HeaderMap) -> HeaderModifier {
    let set = h
        .iter()
        .filter_map(|(n, v)| {
            Some(model::HeaderValue {
                name: n.to_string(),
                value: v.to_str().ok()?.to_owned(),
            })
        })
        .collect();
    HeaderModifier {
        set,
        ..HeaderModifier::default()
    }
}

fn run(
    filters: &[Filter],
    routed: &Routed,
    parts: &mut Parts,
    log: &RequestLog,
    out: &mut Filtered,
) -> Result<(), LocalReply> {
    for f in filters {
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
            Filter::Mirror {
                backend,
                fraction: (num, den),
            } => {
                if fastrand::u32(..(*den).max(1)) < *num {
                    out.mirrors.push(backend.clone());
                }
            }
            Filter::Cors(c) => match cors::apply(c, &parts.method, &parts.headers) {
                Cors::Preflight(h) => {
                    let mut r = LocalReply::new(StatusCode::OK, "", ResponseFlag::None).http_only();
                    for (n, v) in &h {
                        r = r.header(n.clone(), v.clone());
                    }
                    return Err(r);
                }
                Cors::Response(h) => out.response_headers.push(set_all(&h)),
                Cors::Pass => {}
            },
        }
    }
    Ok(())
}
