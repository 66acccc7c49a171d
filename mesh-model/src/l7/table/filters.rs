//! Filters, backends and parents of route rules.

use crate::model::{BackendObjectRef, Cors, FilterType, ParentRef, RouteFilter};

use super::{ctx::*, types::*};

pub(super) fn filters(
    ctx: &Ctx<'_>,
    ns: &str,
    field: &str,
    fs: &[RouteFilter],
) -> Result<Vec<Filter>, BuildError> {
    let mut out = Vec::new();
    for (i, f) in fs.iter().enumerate() {
        let field = format!("{field}.filters[{i}]");
        let missing = |what: &str| ctx.err(format!("{field}: type {:?} needs {what}", f.kind));
        out.push(match f.kind {
            FilterType::RequestHeaderModifier => {
                let m = f.request_header_modifier.clone().ok_or_else(|| missing("requestHeaderModifier"))?;
                check_modifier(ctx, &field, &m)?;
                Filter::RequestHeaders(m)
            }
            FilterType::ResponseHeaderModifier => {
                let m = f.response_header_modifier.clone().ok_or_else(|| missing("responseHeaderModifier"))?;
                check_modifier(ctx, &field, &m)?;
                Filter::ResponseHeaders(m)
            }
            FilterType::URLRewrite => Filter::Rewrite(f.url_rewrite.clone().ok_or_else(|| missing("urlRewrite"))?),
            FilterType::RequestRedirect => {
                let r = f.request_redirect.clone().ok_or_else(|| missing("requestRedirect"))?;
                if let Some(code) = r.status_code {
                    if !matches!(code, 301 | 302 | 303 | 307 | 308) {
                        return Err(ctx.err(format!("{field}.requestRedirect.statusCode: {code} is not a redirect (301, 302, 303, 307, 308)")));
                    }
                }
                Filter::Redirect(r)
            }
            FilterType::RequestMirror => {
                let m = f.request_mirror.as_ref().ok_or_else(|| missing("requestMirror"))?;
                let fraction = match (&m.percent, &m.fraction) {
                    (Some(_), Some(_)) => return Err(ctx.err(format!("{field}.requestMirror: give percent or fraction, not both"))),
                    (Some(p), None) => ((*p).min(100), 100),
                    (None, Some(f)) if f.denominator == 0 || f.numerator > f.denominator => {
                        return Err(ctx.err(format!("{field}.requestMirror.fraction: {}/{} is not a fraction (numerator <= denominator, denominator > 0)", f.numerator, f.denominator)))
                    }
                    (None, Some(f)) => (f.numerator, f.denominator),
                    (None, None) => (1, 1),
                };
                match backend_of(ctx, ns, &field, &m.backend_ref, None)? {
                    Some(backend) => Filter::Mirror { backend, fraction },
                    None => return Err(ctx.err(format!("{field}.requestMirror.backendRef: a port is required"))),
                }
            }
            FilterType::ExtensionRef => {
                let r = f.extension_ref.as_ref().ok_or_else(|| missing("extensionRef"))?;
                if r.group != "ferrymesh.io" || r.kind != "DirectResponse" {
                    return Err(ctx.err(format!("{field}.extensionRef: only group ferrymesh.io kind DirectResponse is supported, not {}/{}", r.group, r.kind)));
                }
                match ctx
                    .objects
                    .direct_responses
                    .iter()
                    .find(|d| d.metadata.name == r.name && d.metadata.namespace() == ns)
                {
                    Some(d) => Filter::Direct(d.spec.clone()),
                    None => Filter::Invalid(format!("DirectResponse {ns}/{} not found", r.name)),
                }
            }
            FilterType::Cors => Filter::Cors(cors(ctx, &field, f.cors.as_ref().ok_or_else(|| missing("cors"))?)?),
        });
    }
    Ok(out)
}

/// `https://*.example.com` as an anchored pattern; `*` alone is any origin.
fn origin_pattern(ctx: &Ctx<'_>, field: &str, o: &str) -> Result<regex::Regex, BuildError> {
    if o == "*" {
        return ctx.regex(field, ".+");
    }
    let (scheme, host) = o.split_once("://").ok_or_else(|| {
        ctx.err(format!(
            "{field}: {o:?} is not an origin (scheme://host[:port]) or *"
        ))
    })?;
    let host = regex::escape(&host.to_ascii_lowercase()).replace(r"\*", "[^/]*");
    ctx.regex(
        field,
        &format!("{}://{host}", regex::escape(&scheme.to_ascii_lowercase())),
    )
}

fn cors(ctx: &Ctx<'_>, field: &str, c: &Cors) -> Result<CorsPolicy, BuildError> {
    let origins = c
        .allow_origins
        .iter()
        .enumerate()
        .map(|(i, o)| origin_pattern(ctx, &format!("{field}.cors.allowOrigins[{i}]"), o))
        .collect::<Result<_, _>>()?;
    for m in &c.allow_methods {
        if m != "*" && http::Method::from_bytes(m.as_bytes()).is_err() {
            return Err(ctx.err(format!(
                "{field}.cors.allowMethods: {m:?} is not an HTTP method or *"
            )));
        }
    }
    for h in c.allow_headers.iter().chain(&c.expose_headers) {
        if h != "*" && http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            return Err(ctx.err(format!("{field}.cors: {h:?} is not a header name or *")));
        }
    }
    Ok(CorsPolicy {
        origins,
        credentials: c.allow_credentials == Some(true),
        methods: c.allow_methods.clone(),
        headers: c.allow_headers.clone(),
        expose: c.expose_headers.clone(),
        max_age: c.max_age.unwrap_or(5),
    })
}

/// Whether a backendRef names a kind ferrymesh can send to (a core Service).
pub(super) fn is_service(group: Option<&str>, kind: Option<&str>) -> bool {
    is_core(group) && kind.is_none_or(|k| k == "Service")
}

pub(super) fn backend_of(
    ctx: &Ctx<'_>,
    ns: &str,
    field: &str,
    r: &BackendObjectRef,
    default_port: Option<u16>,
) -> Result<Option<Backend>, BuildError> {
    if !is_service(r.group.as_deref(), r.kind.as_deref()) {
        return Err(ctx.err(format!("{field}: only Service backends are supported")));
    }
    let ns = r.namespace.as_deref().unwrap_or(ns);
    Ok(r.port.or(default_port).map(|port| Backend {
        service: format!("{ns}/{}", r.name),
        port,
    }))
}

pub(super) fn parent_key(ctx: &Ctx<'_>, ns: &str, p: &ParentRef) -> Result<ParentKey, BuildError> {
    let pns = p.namespace.as_deref().unwrap_or(ns);
    let key = format!("{pns}/{}", p.name);
    match (p.group.as_deref(), p.kind.as_deref()) {
        (g, Some("Service")) if is_core(g) => Ok(ParentKey::Service(key)),
        (None | Some("gateway.networking.k8s.io"), None | Some("Gateway")) => Ok(ParentKey::Gateway(key)),
        (g, k) => Err(ctx.err(format!(
            "parentRefs: {}/{} is not a parent ferrymesh serves; use kind Service (group \"\") or Gateway",
            g.unwrap_or(""),
            k.unwrap_or("")
        ))),
    }
}
