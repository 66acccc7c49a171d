//! Request spans over OTLP, end to end: both agents export to a real OTLP gRPC
//! collector (opentelemetry-proto's service) in the lab's fabric namespace; a
//! request through the waypoint is one server span that continues the caller's W3C
//! trace, and the traceparent the backend receives names that span as its parent.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use ferrymesh_tests::{
    collector::{Collector, ReceivedSpan},
    eventually, Lab, LabSpec, PodSpec,
};
use serde_json::Value;

/// `web` (VIP) is routed by the waypoint to `web-v1` on node b.
const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIPs: [198.18.100.50]
  selector: {svc: web}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec:
  clusterIPs: [198.18.100.51]
  selector: {version: v1}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs: [{name: web-v1, port: 80}]
"#;

/// The collector on the fabric bridge, where both nodes reach it.
const COLLECTOR: &str = "198.18.0.254:4317";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The traceparent `web-v1` received for a GET sent by `client` with `traceparent`.
fn upstream_traceparent(lab: &Lab, path: &str, traceparent: Option<&str>) -> String {
    let mut args = vec!["-s", "--max-time", "15"];
    let header = traceparent.map(|t| format!("traceparent: {t}"));
    if let Some(h) = &header {
        args.extend(["-H", h]);
    }
    let url = format!("http://198.18.100.50{path}");
    args.push(&url);
    let out = lab.run_in_pod("client", "curl", &args).expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON from web-v1: {text}"));
    v["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent upstream: {v}"))
        .to_owned()
}

fn span_with_path(collector: &Collector, path: &str) -> Result<ReceivedSpan, String> {
    let spans = collector.spans();
    spans
        .iter()
        .find(|s| s.attributes.get("url.path").map(String::as_str) == Some(path))
        .cloned()
        .ok_or_else(|| format!("{} spans, none for {path}: {spans:?}", spans.len()))
}

fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_request_span_continues_the_callers_trace_and_is_the_backends_parent() {
    let endpoint = format!("http://{COLLECTOR}");
    let mut lab = Lab::new(LabSpec {
        agent_args: ["--otlp-endpoint", &endpoint, "--trace-sampling", "100"]
            .map(String::from)
            .to_vec(),
        local_ca: false,
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![("shop".into(), true)],
        pods: vec![
            PodSpec::new("client", "shop", "a").label("app", "client"),
            PodSpec::new("web-v1", "shop", "b")
                .label("svc", "web")
                .label("app", "web")
                .label("version", "v1"),
        ],
        services: vec![],
    })
    .expect("lab");
    let fabric = PathBuf::from(format!("/run/netns/{}", lab.fabric_netns()));
    let collector = Collector::start(&fabric, COLLECTOR.parse().unwrap()).expect("collector");
    lab.set_extra_config(CONFIG).expect("config");
    lab.start_agents().expect("agents");
    let _web = lab.http_server("web-v1", "v1", &[]).expect("web-v1");

    // The caller decided not to sample: the decision travels on, nothing is recorded.
    let unsampled = format!("00-{TRACE}-{CALLER_SPAN}-00");
    let up = upstream_traceparent(&lab, "/unsampled", Some(&unsampled));
    assert!(
        up.starts_with(&format!("00-{TRACE}-")) && up.ends_with("-00"),
        "{up}"
    );

    // A sampled caller: the waypoint's span is its child and the backend's parent.
    let sampled = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let up = upstream_traceparent(&lab, "/sampled", Some(&sampled));
    let span = eventually(Duration::from_secs(20), "the span of /sampled", || {
        span_with_path(&collector, "/sampled")
    })
    .unwrap_or_else(|e| panic!("{e}\nagent a: {}", lab.agent_log("a")));
    assert_eq!(span.trace_id, TRACE, "{span:?}");
    assert_eq!(span.parent_span_id, CALLER_SPAN, "{span:?}");
    assert_eq!(up, format!("00-{TRACE}-{}-01", span.span_id), "{span:?}");
    let want = attrs(&[
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
        ("server.address", "198.18.100.50"),
        ("source_workload", "client"),
        ("source_workload_namespace", "shop"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/shop/sa/client",
        ),
        ("destination_workload", "web-v1"),
        ("destination_service", "web-v1.shop.svc.cluster.local"),
        ("request_protocol", "http"),
    ]);
    let got: BTreeMap<String, String> = span
        .attributes
        .iter()
        .filter(|(k, _)| want.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, want, "{span:?}");
    assert_eq!(
        span.resource.get("service.name").map(String::as_str),
        Some("ferrymesh-agent")
    );
    assert_eq!(
        span.resource.get("k8s.node.name").map(String::as_str),
        Some("a"),
        "{span:?}"
    );
    assert_eq!(span.status, 0, "a 200 is not an error: {span:?}");
    // Exports are in order: /unsampled came before /sampled and was never sent.
    assert!(span_with_path(&collector, "/unsampled").is_err());

    // No traceparent: a new trace, its root span here, named to the backend.
    let up = upstream_traceparent(&lab, "/new", None);
    let span = eventually(Duration::from_secs(20), "the span of /new", || {
        span_with_path(&collector, "/new")
    })
    .expect("span of a new trace");
    assert_eq!(span.parent_span_id, "", "{span:?}");
    assert_eq!(up, format!("00-{}-{}-01", span.trace_id, span.span_id));
}
