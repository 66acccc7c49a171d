//! The Gateway API's CORS filter on a request head. No I/O: table-tested.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from
//! an allowed origin is answered here, as Envoy does; any other request from an
//! allowed origin goes on and its response gets `Access-Control-Allow-Origin`
//! (and `-Credentials`, `-Expose-Headers`). A request from an origin that is not
//! allowed goes on untouched: without the headers the browser refuses it.
use http::{header, HeaderMap, HeaderValue, Method};
use mesh_model::l7::table::CorsPolicy;

/// What the filter does with one request.
#[derive(Debug, PartialEq)]
pub enum Cors {
    /// Answer now (200) with these headers.
    Preflight(HeaderMap),
    /// Forward; add these headers to the response.
    Response(HeaderMap),
    /// Not a cross-origin request from an allowed origin: nothing to do.
    Pass,
}

fn value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// The allowed list, or what the request asked for when the list is `*`.
fn allowed(list: &[String], asked: Option<&HeaderValue>) -> Option<HeaderValue> {
    if list.iter().any(|m| m == "*") {
        return asked.cloned().or_else(|| value("*"));
    }
    (!list.is_empty())
        .then(|| value(&list.join(", ")))
        .flatten()
}

pub fn apply(p: &CorsPolicy, method: &Method, req: &HeaderMap) -> Cors {
    let Some(origin) = req.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Cors::Pass;
    };
    if !p
        .origins
        .iter()
        .any(|r| r.is_match(&origin.to_ascii_lowercase()))
    {
        return Cors::Pass;
    }
    let mut h = HeaderMap::new();
    if let Some(v) = value(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if p.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    let asked_method = req.get(header::ACCESS_CONTROL_REQUEST_METHOD);
    if method == Method::OPTIONS && asked_method.is_some() {
        if let Some(v) = allowed(&p.methods, asked_method) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        let asked_headers = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(v) = allowed(&p.headers, asked_headers) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Some(v) = allowed(&p.expose, None) {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, p.max_age.into());
        return Cors::Preflight(h);
    }
    if let Some(v) = allowed(&p.expose, None) {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    Cors::Response(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_model::{
        config,
        l7::table::{Filter, ParentKey, Table},
    };

    const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors, namespace: app}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cors-1}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
  - matches: [{path: {type: PathPrefix, value: /cors-2}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["*"], allowMethods: ["*"]}
"#;

    fn policies() -> Vec<CorsPolicy> {
        let objects = config::parse("t", ROUTE).expect("config");
        let table = Table::build(&objects).expect("table");
        let entries = &table.parents[&ParentKey::Gateway("app/edge".into())].entries;
        let mut out: Vec<(String, CorsPolicy)> = entries
            .iter()
            .map(|e| match (&e.m.path, &e.rule.filters[0]) {
                (Some(p), Filter::Cors(c)) => (format!("{p:?}"), c.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, c)| c).collect()
    }

    fn req(method: Method, headers: &[(&str, &str)]) -> (Method, HeaderMap) {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        (method, h)
    }

    fn get<'a>(c: &'a Cors, name: &str) -> Option<&'a str> {
        match c {
            Cors::Preflight(h) | Cors::Response(h) => h.get(name).and_then(|v| v.to_str().ok()),
            Cors::Pass => None,
        }
    }

    #[test]
    fn preflights_and_simple_requests_as_httproute_cors_expects() {
        let p = policies();
        let (one, any) = (&p[0], &p[1]);
        let pre = |origin| {
            req(
                Method::OPTIONS,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "x-header-1, x-header-2"),
                ],
            )
        };
        for origin in [
            "https://www.foo.com",
            "https://www.bar.com",
            "https://xpto.www.bar.com",
        ] {
            let (m, h) = pre(origin);
            let c = apply(one, &m, &h);
            assert!(matches!(c, Cors::Preflight(_)), "{origin}: {c:?}");
            assert_eq!(get(&c, "access-control-allow-origin"), Some(origin));
            assert_eq!(
                get(&c, "access-control-allow-methods"),
                Some("GET, OPTIONS")
            );
            assert_eq!(
                get(&c, "access-control-allow-headers"),
                Some("x-header-1, x-header-2")
            );
            assert_eq!(
                get(&c, "access-control-expose-headers"),
                Some("x-header-3, x-header-4")
            );
            assert_eq!(get(&c, "access-control-max-age"), Some("3600"));
            assert_eq!(get(&c, "access-control-allow-credentials"), Some("true"));
        }
        // Not an allowed origin (nor a suffix trick): untouched.
        for origin in [
            "https://foobar.com",
            "https://bar.com",
            "http://www.foo.com",
        ] {
            let (m, h) = pre(origin);
            assert_eq!(apply(one, &m, &h), Cors::Pass, "{origin}");
        }
        // A simple request from an allowed origin: forwarded, response headers.
        let (m, h) = req(Method::GET, &[("origin", "https://www.bar.com")]);
        let c = apply(one, &m, &h);
        assert!(matches!(c, Cors::Response(_)), "{c:?}");
        assert_eq!(
            get(&c, "access-control-allow-origin"),
            Some("https://www.bar.com")
        );
        // Wildcards: any origin (a port too), the requested method, no credentials.
        let (m, h) = req(
            Method::OPTIONS,
            &[
                ("origin", "https://foobar.com:12345"),
                ("access-control-request-method", "PUT"),
            ],
        );
        let c = apply(any, &m, &h);
        assert_eq!(
            get(&c, "access-control-allow-origin"),
            Some("https://foobar.com:12345")
        );
        assert_eq!(get(&c, "access-control-allow-methods"), Some("PUT"));
        assert_eq!(get(&c, "access-control-allow-credentials"), None);
        // No Origin: not a CORS request.
        let (m, h) = req(Method::OPTIONS, &[("access-control-request-method", "PUT")]);
        assert_eq!(apply(any, &m, &h), Cors::Pass);
    }
}
