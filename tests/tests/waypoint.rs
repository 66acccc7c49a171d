//! The L7 waypoint, end to end in the lab: real curl, h2load, a tonic gRPC client and
//! a WebSocket client in meshed pods; lab-http servers behind Services with routes.
use std::time::Duration;

use ferrymesh_tests::{eventually, App, Lab, LabSpec, PodSpec};
use serde_json::Value;

/// Nodes a and b; `shop` is meshed. web-v1 (b) and web-v2 (a) back Service `web`;
/// `web-v1`/`web-v2` select one version each; `mirror` (b) receives copies.
const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIPs: [198.18.100.50]
  selector: {svc: web}
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: http}
  - {name: grpc, port: 9090, appProtocol: grpc}
  - {name: ws, port: 8081, appProtocol: http}
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec:
  clusterIPs: [198.18.100.51]
  selector: {version: v1}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 9090, appProtocol: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  clusterIPs: [198.18.100.52]
  selector: {version: v2}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 9090, appProtocol: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: mirror, namespace: shop}
spec:
  clusterIPs: [198.18.100.53]
  selector: {app: mirror}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

const WEB: &str = "198.18.100.50";

struct L7Lab {
    lab: Lab,
    _servers: Vec<App>,
}

fn l7_lab(extra_agent_args: &[&str]) -> L7Lab {
    l7_lab_with(extra_agent_args, vec![])
}

/// The L7 lab plus `extra` pods (and a `plain` namespace outside the mesh).
fn l7_lab_with(extra_agent_args: &[&str], extra: Vec<PodSpec>) -> L7Lab {
    let mut pods = vec![
        PodSpec::new("client", "shop", "a"),
        // `other` serves nothing: with web-v1 it backs Service `half`.
        PodSpec::new("other", "shop", "a").label("half", "yes"),
        PodSpec::new("web-v1", "shop", "b")
            .label("svc", "web")
            .label("version", "v1")
            .label("half", "yes"),
        PodSpec::new("web-v2", "shop", "a")
            .label("svc", "web")
            .label("version", "v2"),
        PodSpec::new("mirror", "shop", "b"),
    ];
    pods.extend(extra);
    let spec = LabSpec {
        agent_args: extra_agent_args.iter().map(|a| a.to_string()).collect(),
        local_ca: false,
        nodes: vec!["a".into(), "b".into()],
        namespaces: vec![
            ("shop".into(), true),
            ("plain".into(), false),
            ("tenant".into(), true),
        ],
        pods,
        services: vec![],
    };
    let mut lab = Lab::new(spec).expect("lab");
    lab.set_extra_config(SERVICES).expect("config");
    lab.start_agents().expect("agents");
    let servers = vec![
        // web-v1 is unhealthy on /unstable (outlier detection).
        lab.http_server("web-v1", "v1", &["--fail-path", "/unstable"])
            .expect("web-v1"),
        lab.http_server("web-v2", "v2", &[]).expect("web-v2"),
        lab.http_server("mirror", "mirror", &[]).expect("mirror"),
    ];
    L7Lab {
        lab,
        _servers: servers,
    }
}

impl L7Lab {
    fn apply(&mut self, routes: &str) {
        self.lab
            .apply_config(&format!("{SERVICES}---\n{routes}"))
            .expect("config applied");
    }

    /// curl from a pod: (status, headers + body text).
    fn curl(&self, pod: &str, args: &[&str]) -> (u16, String) {
        let mut all = vec!["-s", "-i", "--max-time", "15", "-w", "\n%{http_code}"];
        all.extend_from_slice(args);
        let out = self.lab.run_in_pod(pod, "curl", &all).expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// The JSON the echo server answered (the last line of curl's output).
    fn echo(&self, pod: &str, args: &[&str]) -> (u16, Value) {
        let (code, text) = self.curl(pod, args);
        let json = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or(Value::Null);
        (code, json)
    }

    fn get(&self, pod: &str, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        self.lab
            .http_app(pod, &all)
            .expect("lab-http get")
            .json_result(Duration::from_secs(120))
            .expect("get result")
    }

    /// Requests a server saw, by path and query.
    fn seen(&self, service_ip: &str) -> Value {
        let (_, v) = self.echo("client", &[&format!("http://{service_ip}/_stats")]);
        v
    }
}

fn url(path: &str) -> String {
    format!("http://{WEB}{path}")
}

const ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - name: exact-v1
    matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: web-v1, port: 80}]
  - name: prefix-v2
    matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: web-v2, port: 80}]
  - name: regex-v1
    matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
    backendRefs: [{name: web-v1, port: 80}]
  - name: method-v2
    matches: [{path: {type: PathPrefix, value: /m}, method: DELETE}]
    backendRefs: [{name: web-v2, port: 80}]
  - name: header-v2
    matches: [{headers: [{name: x-canary, value: "true"}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - name: query-v2
    matches: [{path: {type: PathPrefix, value: /q}, queryParams: [{name: beta, value: "1"}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - name: headers-filtered
    matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: by-route}]
        add: [{name: x-added, value: "yes"}]
        remove: [x-secret]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: x-response, value: from-route}]
    backendRefs: [{name: web-v1, port: 80}]
  - name: rewrite
    matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: rewritten.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs: [{name: web-v1, port: 80}]
  - name: redirect
    matches: [{path: {type: PathPrefix, value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: elsewhere.example, statusCode: 301}
  - name: maintenance
    matches: [{path: {type: PathPrefix, value: /maintenance}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: ferrymesh.io, kind: DirectResponse, name: down}
  - name: mirrored
    matches: [{path: {type: PathPrefix, value: /mirrored}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: mirror, port: 80}}
    backendRefs: [{name: web-v1, port: 80}]
  - name: canary
    backendRefs: [{name: web-v1, port: 80, weight: 80}, {name: web-v2, port: 80, weight: 20}]
---
apiVersion: ferrymesh.io/v1alpha1
kind: DirectResponse
metadata: {name: down, namespace: shop}
spec: {status: 503, body: "down for maintenance\n", headers: [{name: retry-after, value: "120"}]}
"#;

#[test]
fn http_routes_match_filter_and_split() {
    let mut l = l7_lab(&[]);
    l.apply(ROUTES);
    let server = |v: &Value| v["server"].as_str().unwrap_or("?").to_owned();

    // Every match kind.
    let cases: [(&str, Vec<String>, &str); 8] = [
        ("exact path", vec![url("/exact")], "v1"),
        ("path prefix", vec![url("/v2/anything")], "v2"),
        ("regular expression", vec![url("/items/42")], "v1"),
        (
            "method",
            vec!["-X".into(), "DELETE".into(), url("/m/1")],
            "v2",
        ),
        (
            "header",
            vec!["-H".into(), "x-canary: true".into(), url("/whatever")],
            "v2",
        ),
        ("query parameter", vec![url("/q?beta=1")], "v2"),
        (
            "exact does not match a longer path (goes to the split)",
            vec![url("/exact/more"), "-H".into(), "x-canary: true".into()],
            "v2",
        ),
        (
            "header match with the wrong value falls through",
            vec!["-H".into(), "x-canary: false".into(), url("/items/7")],
            "v1",
        ),
    ];
    for (name, args, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, v) = l.echo("client", &args);
        assert_eq!(code, 200, "{name}: {v}");
        assert_eq!(server(&v), *want, "{name}: {v}");
    }

    // Header filters: request headers set/added/removed, response header added.
    let (code, text) = l.curl(
        "client",
        &[
            "-H",
            "x-set: client",
            "-H",
            "x-secret: s3cr3t",
            &url("/headers"),
        ],
    );
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(text.lines().last().unwrap_or("")).expect("json");
    assert_eq!(v["headers"]["x-set"], "by-route", "{v}");
    assert_eq!(v["headers"]["x-added"], "yes", "{v}");
    assert!(v["headers"]["x-secret"].is_null(), "x-secret removed: {v}");
    assert!(
        text.to_ascii_lowercase().contains("x-response: from-route"),
        "{text}"
    );
    // A traceparent was created for the request and sent upstream.
    let tp = v["headers"]["traceparent"].as_str().unwrap_or("");
    assert_eq!(tp.len(), 55, "traceparent upstream: {v}");
    // ...and an incoming one is continued (same trace id, new span).
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, v) = l.echo(
        "client",
        &["-H", &format!("traceparent: {incoming}"), &url("/headers")],
    );
    let tp = v["headers"]["traceparent"].as_str().unwrap_or("");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{v}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "a new span id per hop: {tp}"
    );

    // URL rewrite: prefix replaced, query kept, Host rewritten.
    let (code, v) = l.echo("client", &[&url("/old/page?x=1")]);
    assert_eq!(code, 200);
    assert_eq!(v["path"], "/new/page", "{v}");
    assert_eq!(v["query"], "x=1", "{v}");
    assert_eq!(v["headers"]["host"], "rewritten.example", "{v}");

    // Redirect.
    let (code, text) = l.curl("client", &[&url("/moved/here?y=2")]);
    assert_eq!(code, 301, "{text}");
    assert!(
        text.contains("location: https://elsewhere.example/moved/here?y=2"),
        "{text}"
    );

    // Direct response.
    let (code, text) = l.curl("client", &[&url("/maintenance")]);
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("down for maintenance"), "{text}");
    assert!(text.contains("retry-after: 120"), "{text}");

    // Mirror: the mirror service gets a copy; the caller gets web-v1's answer.
    let (code, v) = l.echo("client", &[&url("/mirrored/1")]);
    assert_eq!((code, server(&v).as_str()), (200, "v1"), "{v}");
    let mirrored = eventually(Duration::from_secs(10), "the mirror to see a copy", || {
        let seen = l.seen("198.18.100.53");
        if seen["/mirrored/1"].as_u64().is_some() {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .expect("mirrored");
    assert_eq!(
        mirrored["/mirrored/1"], 1,
        "mirror saw one copy: {mirrored}"
    );

    // Weighted split 80/20 over 2,000 requests (keep-alive, 4 connections).
    let r = l.get(
        "client",
        &[
            "--url",
            &url("/split"),
            "--count",
            "2000",
            "--concurrency",
            "4",
        ],
    );
    assert_eq!(r["statuses"]["200"], 2000, "{r}");
    let v1 = r["servers"]["v1"].as_f64().unwrap_or(0.0);
    let v2 = r["servers"]["v2"].as_f64().unwrap_or(0.0);
    assert_eq!(v1 + v2, 2000.0, "{r}");
    // 80% of 2,000 = 1,600, sd = sqrt(2000*0.8*0.2) = 18: 5 sd is +-90.
    assert!(
        (v1 - 1600.0).abs() < 90.0,
        "v1 got {v1} of 2000 (want ~1600): {r}"
    );

    // No route matches (a route is attached, nothing matches this port's request) -> 404
    // comes only when no rule matches; the catch-all matches everything here, so
    // check with a config without it.
    let without_catch_all = ROUTES.replace(
        "  - name: canary\n    backendRefs: [{name: web-v1, port: 80, weight: 80}, {name: web-v2, port: 80, weight: 20}]\n",
        "",
    );
    assert_ne!(without_catch_all, ROUTES);
    l.apply(&without_catch_all);
    let (code, _) = l.curl("client", &[&url("/nowhere")]);
    assert_eq!(code, 404);

    // Per-request telemetry: access log lines with route, status, identities, and
    // Prometheus request metrics.
    let log = l.lab.agent_log("a");
    let line = log
        .lines()
        .find(|l| l.contains("\"reporter\":\"waypoint\"") && l.contains("/maintenance"))
        .expect("an access log line for /maintenance");
    for want in [
        "\"status\":503",
        "\"response_flags\":\"DR\"",
        "\"src.identity\":\"spiffe://cluster.local/ns/shop/sa/client\"",
        "HTTPRoute shop/web/maintenance",
        "\"trace_id\":",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    let metrics = l.lab.metrics("a").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|m| m.starts_with("istio_requests_total{")
                && m.contains("reporter=\"waypoint\"")
                && m.contains("destination_service=\"web-v1.shop.svc.cluster.local\"")
                && m.contains("destination_service_name=\"web-v1\"")
                && m.contains("request_protocol=\"http\"")
                && m.contains("response_code=\"200\"")),
        "{metrics}"
    );
    assert!(
        metrics.contains("istio_request_duration_milliseconds_bucket{"),
        "{metrics}"
    );
}

const RESILIENCE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - name: flaky
    matches: [{path: {type: PathPrefix, value: /flaky}}]
    retry: {codes: [503], attempts: 1, backoff: 10ms}
    backendRefs: [{name: web-v1, port: 80}]
  - name: always-failing
    matches: [{path: {type: Exact, value: /status/503}}]
    retry: {codes: [503], attempts: 2, backoff: 10ms}
    backendRefs: [{name: web-v1, port: 80}]
  - name: no-budget
    matches: [{path: {type: Exact, value: /status/502}}]
    retry: {codes: [502], attempts: 3, backoff: 10ms}
    backendRefs: [{name: web-v1, port: 80}]
  - name: slow
    matches: [{path: {type: PathPrefix, value: /delay}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: web-v1, port: 80}]
  - name: breaker
    matches: [{path: {type: PathPrefix, value: /delay}, headers: [{name: x-breaker, value: "1"}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - name: limited
    matches: [{path: {type: PathPrefix, value: /limited}}]
    backendRefs: [{name: web-v1, port: 80}]
  - name: faulty
    matches: [{path: {type: PathPrefix, value: /faulty}}]
    backendRefs: [{name: web-v1, port: 80}]
  - name: delayed
    matches: [{path: {type: PathPrefix, value: /delayed}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: web-v1, port: 80}]
  - name: idle-cut
    matches: [{path: {type: PathPrefix, value: /stream}}]
    backendRefs: [{name: web-v1, port: 80}]
  - name: rest
    backendRefs: [{name: web, port: 80}]
---
apiVersion: ferrymesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: no-retry-budget, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: no-budget}]
  retry: {budgetPercent: 0, minRetries: 0}
---
apiVersion: ferrymesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: per-client-limit, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: limited}]
  rateLimit:
    requests: 3
    interval: 1m
    perSource: true
    response: {statusCode: 429, body: "slow down\n", headers: [{name: x-limited, value: "1"}]}
---
apiVersion: ferrymesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: chaos, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: faulty}]
  faultInjection: {abort: {httpStatus: 418, percentage: 100}}
---
apiVersion: ferrymesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: slow-down, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: delayed}]
  faultInjection: {delay: {fixedDelay: 5s, percentage: 100}}
---
apiVersion: ferrymesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: stream-idle, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: idle-cut}]
  timeout: {idle: 100ms}
---
apiVersion: ferrymesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: v2-breaker, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: web-v2}]
  circuitBreaker: {maxParallelRequests: 1}
---
apiVersion: v1
kind: Service
metadata: {name: half, namespace: shop}
spec:
  clusterIPs: [198.18.100.54]
  selector: {half: "yes"}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: ferrymesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: half-retry, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: half}]
  retry: {attempts: 1, retryOn: [connect-failure], backoff: 5ms}
---
apiVersion: ferrymesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web-outliers, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: web}]
  outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 60s, maxEjectionPercent: 50}
"#;

/// The same-node counters a connection moves, on node a.
fn same_node_counters(lab: &Lab) -> [u64; 5] {
    let c = |w: &str, n: &str| lab.counter("a", w, n).expect("stats");
    [
        c("shop/web-v2", "inbound_captured"),
        c("shop/web-v2", "inbound_delivered"),
        c("shop/web-v2", "inbound_denied"),
        c("shop/client", "outbound_same_node"),
        c("shop/client", "outbound_failed"),
    ]
}

fn delta(before: [u64; 5], after: [u64; 5]) -> [u64; 5] {
    std::array::from_fn(|i| after[i] - before[i])
}

#[test]
fn same_node_counters_agree_between_l4_and_l7() {
    // One executor delivers same-node connections for the L4 path and for the
    // waypoint's upstream: one connection moves the same counters either way.
    let mut l = l7_lab(&[]);
    l.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: shop}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]\n  rules: [{backendRefs: [{name: web-v2, port: 80}]}]\n",
    );
    let direct = format!("http://{}/", l.lab.pod("web-v2").addr4(8080));
    let before = same_node_counters(&l.lab);
    let (code, v) = l.echo("client", &[&direct]);
    let server = |v: &Value| v["server"].as_str().unwrap_or("?").to_owned();
    assert_eq!(
        (code, server(&v).as_str()),
        (200, "v2"),
        "L4 to the pod: {v}"
    );
    let l4 = delta(before, same_node_counters(&l.lab));
    let before = same_node_counters(&l.lab);
    let (code, v) = l.echo("client", &[&url("/")]);
    assert_eq!(
        (code, server(&v).as_str()),
        (200, "v2"),
        "L7 through the waypoint: {v}"
    );
    let l7 = delta(before, same_node_counters(&l.lab));
    assert_eq!(
        l4,
        [1, 1, 0, 1, 0],
        "L4: captured, delivered, denied, same-node, failed"
    );
    assert_eq!(l7, l4, "L7 counts the same-node delivery as L4 does");
}

#[test]
fn retries_timeouts_breakers_limits_and_faults() {
    let mut l = l7_lab(&[]);
    l.apply(RESILIENCE);

    // A retry turns web-v1's injected 503 (odd requests to /flaky/*) into a 200.
    let (code, v) = l.echo("client", &[&url("/flaky/a")]);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["count"], 2, "the second attempt answered: {v}");
    // Retries stop at `attempts`: 1 + 2 tries, then the 503 is returned.
    let (code, _) = l.curl("client", &[&url("/status/503")]);
    assert_eq!(code, 503);
    // ...and at the retry budget: none allowed, so one try only.
    let (code, _) = l.curl("client", &[&url("/status/502")]);
    assert_eq!(code, 502);
    let seen = l.seen("198.18.100.51");
    assert_eq!(seen["/flaky/a"], 2, "{seen}");
    assert_eq!(seen["/status/503"], 3, "{seen}");
    assert_eq!(seen["/status/502"], 1, "the budget stopped retries: {seen}");

    // Retry on connect failure: `half` is web-v1 and `other`, where nothing
    // listens; every request ends on web-v1, whatever the round robin picks first.
    let r = l.get(
        "client",
        &["--url", "http://198.18.100.54/", "--count", "20"],
    );
    assert_eq!(r["statuses"]["200"], 20, "{r}");
    assert_eq!(r["servers"]["v1"], 20, "{r}");

    // Request timeout: 504 (the server would answer 200 after 5 s).
    let (code, text) = l.curl("client", &[&url("/delay/5000")]);
    assert_eq!(code, 504, "{text}");

    // Circuit breaker: one request in flight to web-v2; the others at the same
    // time get 503 at once.
    let r = l.get(
        "client",
        &[
            "--url",
            &url("/delay/1000"),
            "--header",
            "x-breaker: 1",
            "--count",
            "6",
            "--concurrency",
            "6",
        ],
    );
    let ok = r["statuses"]["200"].as_u64().unwrap_or(0);
    let overflow = r["statuses"]["503"].as_u64().unwrap_or(0);
    assert!(ok >= 1 && overflow >= 1 && ok + overflow == 6, "{r}");

    // Local rate limit per source: 3 per minute for client, then 429 with the
    // configured body and header; another source has its own bucket.
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(l.curl("client", &[&url("/limited")]));
    }
    assert_eq!(
        codes.iter().map(|c| c.0).collect::<Vec<_>>(),
        [200, 200, 200, 429]
    );
    assert!(
        codes[3].1.contains("slow down") && codes[3].1.contains("x-limited: 1"),
        "{}",
        codes[3].1
    );
    assert_eq!(
        l.curl("other", &[&url("/limited")]).0,
        200,
        "other source, other bucket"
    );

    // Fault injection: abort with 418, the backend never sees the request.
    assert_eq!(l.curl("client", &[&url("/faulty")]).0, 418);
    assert!(l.seen("198.18.100.51")["/faulty"].is_null());

    // Fault injection: a 5 s delay, so the route's 300 ms request timeout fires
    // before the request is even sent.
    assert_eq!(l.curl("client", &[&url("/delayed")]).0, 504);
    assert!(l.seen("198.18.100.51")["/delayed"].is_null());
    // Idle timeout: the server sends a chunk every 200 ms; the route allows 100 ms
    // of silence, so the response stream is cut after the first chunk.
    let (_, text) = l.curl("client", &[&url("/stream/5")]);
    assert!(text.contains("chunk 0"), "{text}");
    assert!(!text.contains("chunk 4"), "stream cut when idle: {text}");

    // Outlier detection: web-v1 fails /unstable; after 2 consecutive 5xx it is
    // ejected and web-v2 serves everything.
    let r = l.get("client", &["--url", &url("/unstable"), "--count", "30"]);
    let failures = r["statuses"]["503"].as_u64().unwrap_or(0);
    assert!(failures <= 3, "ejected after 2 consecutive failures: {r}");
    let r = l.get("client", &["--url", &url("/unstable"), "--count", "20"]);
    assert_eq!(r["statuses"]["200"], 20, "v1 stays ejected: {r}");
    assert_eq!(r["servers"]["v2"], 20, "{r}");
}

const SECRET: &[u8] = b"ferrymesh-lab-jwt-secret-0123456789";

const POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: web-jwt, namespace: shop}
spec:
  selector: {matchLabels: {svc: web}}
  jwtRules:
  - issuer: https://issuer.lab
    audiences: [web]
    jwks: '{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"ZmVycnltZXNoLWxhYi1qd3Qtc2VjcmV0LTAxMjM0NTY3ODk"}]}'
    outputClaimToHeaders: [{header: x-user, claim: sub}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-l7, namespace: shop}
spec:
  selector: {matchLabels: {svc: web}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
    to: [{operation: {methods: [GET], paths: ["/public/*"]}}]
  - from: [{source: {requestPrincipals: ["https://issuer.lab/*"]}}]
    to: [{operation: {paths: ["/private/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-delete, namespace: shop}
spec:
  selector: {matchLabels: {svc: web}}
  action: DENY
  rules:
  - to: [{operation: {methods: [DELETE]}}]
  - to: [{operation: {paths: ["/public/secret"]}}]
  - to: [{operation: {hosts: ["forbidden.shop"]}}]
"#;

fn token(iss: &str, aud: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims =
        serde_json::json!({"iss": iss, "sub": "alice", "aud": aud, "exp": now + exp_offset});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("token")
}

#[test]
fn l7_authorization_and_jwt() {
    let mut l = l7_lab(&[]);
    l.apply(POLICY);
    let bearer = |t: &str| format!("authorization: Bearer {t}");
    let good = token("https://issuer.lab", "web", 600);
    let expired = token("https://issuer.lab", "web", -3600);
    let wrong_issuer = token("https://other.issuer", "web", 600);
    let wrong_audience = token("https://issuer.lab", "api", 600);
    let pod_ip = l.lab.pod("web-v1").addr4(8080); // addressed directly, not by VIP
    let cases: Vec<(&str, &str, Vec<String>, u16)> = vec![
        (
            "allowed method and path",
            "client",
            vec![url("/public/a")],
            200,
        ),
        (
            "method not allowed",
            "client",
            vec!["-X".into(), "POST".into(), url("/public/a")],
            403,
        ),
        ("path not allowed", "client", vec![url("/admin")], 403),
        (
            "principal not allowed",
            "other",
            vec![url("/public/a")],
            403,
        ),
        (
            "DENY by method",
            "client",
            vec!["-X".into(), "DELETE".into(), url("/public/a")],
            403,
        ),
        (
            "pod addressed directly is judged too",
            "client",
            vec![
                "-X".into(),
                "POST".into(),
                format!("http://{pod_ip}/public/a"),
            ],
            403,
        ),
        (
            "good JWT",
            "other",
            vec!["-H".into(), bearer(&good), url("/private/x")],
            200,
        ),
        ("missing JWT", "other", vec![url("/private/x")], 403),
        (
            "expired JWT",
            "other",
            vec!["-H".into(), bearer(&expired), url("/private/x")],
            401,
        ),
        (
            "wrong issuer",
            "other",
            vec!["-H".into(), bearer(&wrong_issuer), url("/private/x")],
            401,
        ),
        (
            "wrong audience",
            "other",
            vec!["-H".into(), bearer(&wrong_audience), url("/private/x")],
            401,
        ),
        (
            "malformed token",
            "other",
            vec!["-H".into(), bearer("not.a.jwt"), url("/private/x")],
            401,
        ),
    ];
    for (name, pod, args, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, text) = l.curl(pod, &args);
        assert_eq!(code, *want, "{name}: {text}");
        if *want == 403 {
            assert!(
                text.ends_with("access denied\n"),
                "{name}: short body: {text}"
            );
        }
        if *want == 401 {
            assert!(text.ends_with("invalid token\n"), "{name}: {text}");
        }
    }
    // Paths are normalised once, before authorization and routing: every spelling
    // of /public/secret meets the DENY rule (curl --path-as-is sends them as
    // written), and the application receives the normalised path.
    for spelling in [
        "/public/secret",
        "/public//secret",
        "//public/secret",
        "/public/%73ecret",
        "/public/./secret",
        "/public/x/../secret",
        "/public/x/%2e%2e/secret",
    ] {
        let (code, text) = l.curl("client", &["--path-as-is", &url(spelling)]);
        assert_eq!(code, 403, "{spelling}: {text}");
    }
    let (code, v) = l.echo("client", &["--path-as-is", &url("/public/x/..//a/./b")]);
    assert_eq!(
        (code, v["path"].as_str()),
        (200, Some("/public/a/b")),
        "{v}"
    );
    let (code, text) = l.curl("client", &["--path-as-is", &url("/public/bad%zz")]);
    assert_eq!(code, 400, "{text}");
    // Hosts match case-insensitively; Host and the request target must agree.
    let (code, text) = l.curl("client", &["-H", "host: FORBIDDEN.shop", &url("/public/a")]);
    assert_eq!(code, 403, "{text}");
    // A validated token: claim to header, and the token itself not forwarded.
    let (code, v) = l.echo("other", &["-H", &bearer(&good), &url("/private/x")]);
    assert_eq!(code, 200);
    assert_eq!(v["headers"]["x-user"], "alice", "{v}");
    assert!(v["headers"]["authorization"].is_null(), "{v}");
    // Header trust: a client cannot set the claim header itself, with or without a
    // token; a second Authorization header is refused, not passed on unchecked; the
    // scheme is case-insensitive.
    let (code, v) = l.echo("client", &["-H", "x-user: admin", &url("/public/a")]);
    assert_eq!(code, 200, "{v}");
    assert!(v["headers"]["x-user"].is_null(), "{v}");
    let (code, v) = l.echo(
        "other",
        &[
            "-H",
            "x-user: admin",
            "-H",
            &bearer(&good),
            &url("/private/x"),
        ],
    );
    assert_eq!(
        (code, v["headers"]["x-user"].as_str()),
        (200, Some("alice")),
        "{v}"
    );
    let (code, text) = l.curl(
        "other",
        &[
            "-H",
            &bearer(&good),
            "-H",
            "authorization: Bearer forged",
            &url("/private/x"),
        ],
    );
    assert_eq!(code, 401, "{text}");
    let (code, v) = l.echo(
        "other",
        &[
            "-H",
            &format!("authorization: bearer {good}"),
            &url("/private/x"),
        ],
    );
    assert_eq!(code, 200, "{v}");
    assert!(v["headers"]["authorization"].is_null(), "{v}");
    // Denials are logged with both identities and counted.
    let log = l.lab.agent_log("a");
    assert!(
        log.lines().any(|x| x.contains("request denied")
            && x.contains("spiffe://cluster.local/ns/shop/sa/other")
            && x.contains("shop/web-v")),
        "{log}"
    );
    let metrics = l.lab.metrics("a").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|m| m.starts_with("istio_requests_total{")
                && m.contains("response_code=\"403\"")
                && m.contains("response_flags=\"AZ\"")),
        "{metrics}"
    );
}

const GRPC_AND_ROUTE_A: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 9090}]
  rules:
  - matches: [{method: {service: echo.Echo, method: Unary}}]
    backendRefs: [{name: web-v1, port: 9090}]
  - matches: [{method: {service: echo.Echo, method: Bidi}}]
    backendRefs: [{name: web-v2, port: 9090}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules: [{backendRefs: [{name: web-v1, port: 80}]}]
"#;

#[test]
fn grpc_websocket_h2load_and_live_config_change() {
    let mut l = l7_lab(&[]);
    l.apply(GRPC_AND_ROUTE_A);

    // gRPC through GRPCRoute: unary to v1, bidirectional streaming to v2, status and
    // message of a failed call carried in trailers.
    let r = l
        .lab
        .http_app(
            "client",
            &[
                "grpc-client",
                "--to",
                &format!("{WEB}:9090"),
                "--count",
                "5",
            ],
        )
        .expect("grpc client")
        .json_result(Duration::from_secs(60))
        .expect("grpc result");
    assert_eq!(r["unary_ok"], 5, "{r}");
    assert_eq!(r["servers"]["v1"], 5, "{r}");
    assert_eq!(r["served_by"], "v1", "response metadata: {r}");
    assert_eq!(r["bidi_ok"], 5, "{r}");
    assert_eq!(r["bidi_server"], "v2", "{r}");
    assert_eq!(
        r["error_code"], 9,
        "FAILED_PRECONDITION from the server's trailers: {r}"
    );
    assert_eq!(r["error_message"], "asked to fail", "{r}");
    assert_eq!(r["stream_closed_cleanly"], true, "{r}");

    // WebSocket upgrade through the waypoint (port 8081 is appProtocol http).
    let r = l
        .lab
        .http_app(
            "client",
            &["ws-client", "--to", &format!("{WEB}:8081"), "--count", "3"],
        )
        .expect("ws client")
        .json_result(Duration::from_secs(30))
        .expect("ws result");
    assert_eq!(r["status"], 101, "{r}");
    let replies: Vec<String> = r["replies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect();
    assert_eq!(replies.len(), 3, "{r}");
    assert!(
        replies
            .iter()
            .all(|x| x.ends_with(": m0") || x.ends_with(": m1") || x.ends_with(": m2")),
        "{r}"
    );

    // h2load (HTTP/2, 4 connections x 10 streams) through the waypoint.
    let out = l
        .lab
        .run_in_pod(
            "client",
            "h2load",
            &["-n", "1000", "-c", "4", "-m", "10", &url("/load")],
        )
        .expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status codes: 1000 2xx"), "{text}");

    // A config change applies to new requests; a request in flight completes.
    let in_flight = l
        .lab
        .http_app("client", &["get", "--url", &url("/delay/1500")])
        .expect("in-flight request");
    // The request reached a backend before the route changes.
    eventually(
        Duration::from_secs(10),
        "the delayed request at a backend",
        || {
            let at = |ip| l.seen(ip)["/delay/1500"].as_u64().unwrap_or(0);
            (at("198.18.100.51") + at("198.18.100.52") > 0)
                .then_some(())
                .ok_or("not yet")
        },
    )
    .expect("in flight");
    l.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: shop}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]\n  rules: [{backendRefs: [{name: web-v2, port: 80}]}]\n",
    );
    let r = in_flight
        .json_result(Duration::from_secs(30))
        .expect("in-flight result");
    assert_eq!(
        r["statuses"]["200"], 1,
        "in-flight request survived the change: {r}"
    );
    assert_eq!(r["servers"]["v1"], 1, "{r}");
    let (code, v) = l.echo("client", &[&url("/after")]);
    assert_eq!((code, v["server"].as_str()), (200, Some("v2")), "{v}");
}

#[test]
fn hostile_input_is_refused_and_others_keep_being_served() {
    let mut l = l7_lab(&[]);
    l.apply(GRPC_AND_ROUTE_A);
    let raw = |send: &str, wait_ms: &str| -> Value {
        l.lab
            .http_app(
                "client",
                &[
                    "raw",
                    "--to",
                    &format!("{WEB}:80"),
                    "--send",
                    send,
                    "--wait-ms",
                    wait_ms,
                ],
            )
            .expect("raw")
            .json_result(Duration::from_secs(60))
            .expect("raw result")
    };
    // A slowloris client: a request head that never ends.
    let slow = l
        .lab
        .http_app(
            "client",
            &[
                "raw",
                "--to",
                &format!("{WEB}:80"),
                "--send",
                "GET / HTTP/1.1\\r\\nHost: web\\r\\nX-Slow: 1\\r\\n",
                "--wait-ms",
                "30000",
            ],
        )
        .expect("slowloris");
    // Half of HTTP/2's preface, then silence: protocol detection has a deadline.
    let half_preface = l
        .lab
        .http_app(
            "client",
            &[
                "raw",
                "--to",
                &format!("{WEB}:80"),
                "--send",
                "PRI * HTTP/2.0\\r\\n",
                "--wait-ms",
                "30000",
            ],
        )
        .expect("half preface");

    // Oversized headers: 431.
    let big = format!("x-big: {}", "a".repeat(100 << 10));
    assert_eq!(l.curl("client", &["-H", &big, &url("/big")]).0, 431);
    // Request smuggling attempts: conflicting Content-Length, a transfer coding
    // other than chunked, an invalid chunk size.
    for (name, req) in [
        ("conflicting Content-Length", "POST /smuggle1 HTTP/1.1\\r\\nHost: web\\r\\nContent-Length: 5\\r\\nContent-Length: 40\\r\\n\\r\\nhello"),
        ("unknown transfer coding", "POST /smuggle2 HTTP/1.1\\r\\nHost: web\\r\\nTransfer-Encoding: gzip\\r\\nContent-Length: 5\\r\\n\\r\\nhello"),
        ("bad chunk size", "POST /smuggle3 HTTP/1.1\\r\\nHost: web\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\nzz\\r\\nGET /inner HTTP/1.1\\r\\n\\r\\n"),
        ("not HTTP at all", "\\u{16}\\u{3}\\u{1}garbage\\r\\n\\r\\n"),
    ] {
        let r = raw(req, "5000");
        let resp = r["response"].as_str().unwrap_or("");
        assert!(resp.starts_with("HTTP/1.1 400"), "{name}: {r}");
        assert_eq!(r["closed"], true, "{name}: connection closed: {r}");
    }
    let seen = l.seen("198.18.100.51");
    // (/smuggle3's head is valid and streams upstream before its body fails, as
    // with any streaming proxy; what follows the bad chunk never does.)
    for p in ["/smuggle1", "/smuggle2", "/inner"] {
        assert!(seen[p].is_null(), "{p} reached the backend: {seen}");
    }
    // h2c smuggling: the upgrade is dropped (no 101), the request is an ordinary
    // one, and no hop-by-hop header (nor one `Connection` names) reaches the app.
    let (code, v) = l.echo(
        "client",
        &[
            "--http1.1",
            "-H",
            "upgrade: h2c",
            "-H",
            "http2-settings: AAMAAABkAARAAAAAAAIAAAAA",
            "-H",
            "connection: Upgrade, HTTP2-Settings, x-internal",
            "-H",
            "x-internal: secret",
            &url("/h2c"),
        ],
    );
    assert_eq!(code, 200, "{v}");
    for h in ["upgrade", "http2-settings", "connection", "x-internal"] {
        assert!(v["headers"][h].is_null(), "{h} reached the app: {v}");
    }
    let m = l.lab.metrics("a").expect("metrics");
    assert!(
        m.contains("ferrymesh_hostile_refused_total{reason=\"upgrade_not_allowed\"} 1"),
        "{m}"
    );
    // HTTP/2 rapid reset: thousands of streams cancelled at once.
    let r = l
        .lab
        .http_app(
            "client",
            &[
                "rapid-reset",
                "--to",
                &format!("{WEB}:80"),
                "--streams",
                "5000",
            ],
        )
        .expect("rapid reset")
        .json_result(Duration::from_secs(60))
        .expect("rapid reset result");
    assert!(
        // GOAWAY "too_many_resets": the client sees it while sending, or (when the
        // whole burst fit in the socket buffers before the waypoint read it) as the
        // connection ending while the client still holds it open.
        (r["refused"].is_string() && r["reset_streams"].as_u64() < Some(5000))
            || r["connection_ended"] == true,
        "the waypoint cut the connection (GOAWAY): {r}"
    );
    // Meanwhile and after all that, other clients are served.
    let r = l.get(
        "other",
        &[
            "--url",
            &url("/fine"),
            "--count",
            "50",
            "--concurrency",
            "5",
        ],
    );
    assert_eq!(r["statuses"]["200"], 50, "{r}");
    let r = l.get(
        "other",
        &[
            "--url",
            &url("/fine-h2"),
            "--count",
            "50",
            "--concurrency",
            "5",
            "--h2",
        ],
    );
    assert_eq!(r["statuses"]["200"], 50, "{r}");
    assert!(l.lab.agent_pid("a").is_some(), "agent alive");
    // The slowloris connection was closed by the waypoint (header read timeout).
    let r = slow
        .json_result(Duration::from_secs(60))
        .expect("slowloris result");
    assert_eq!(r["closed"], true, "{r}");
    assert!(
        l.seen("198.18.100.51")["/"].is_null(),
        "the unfinished request never went upstream"
    );
    let r = half_preface
        .json_result(Duration::from_secs(60))
        .expect("half preface result");
    assert_eq!(r["closed"], true, "{r}");
    let m = l.lab.metrics("a").expect("metrics");
    assert!(
        m.contains("ferrymesh_hostile_refused_total{reason=\"header_timeout\"} 1"),
        "{m}"
    );
}

const STANDALONE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: shared, namespace: shop, labels: {ferrymesh.io/use-waypoint: waypoint}}
spec:
  clusterIPs: [198.18.100.60]
  selector: {svc: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shared, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: shared, port: 80}]
  rules:
  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-via, value: shared-waypoint}]}}]
    backendRefs: [{name: web-v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edge, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  rules:
  - name: app
    matches: [{path: {type: PathPrefix, value: /app}}]
    backendRefs: [{name: web-v2, port: 80}]
  - name: secure
    matches: [{path: {type: PathPrefix, value: /secure}}]
    backendRefs: [{name: web-v1, port: 80}]
---
apiVersion: ferrymesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: edge-limit, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: edge, sectionName: app}]
  rateLimit: {requests: 3, interval: 1m, perSource: true}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: edge-jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: gateway}}
  jwtRules:
  - issuer: https://issuer.lab
    jwks: '{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"ZmVycnltZXNoLWxhYi1qd3Qtc2VjcmV0LTAxMjM0NTY3ODk"}]}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-authz, namespace: shop}
spec:
  selector: {matchLabels: {app: gateway}}
  rules:
  - to: [{operation: {paths: ["/app", "/app/*"]}}]
  - from: [{source: {requestPrincipals: ["https://issuer.lab/*"]}}]
    to: [{operation: {paths: ["/secure/*"]}}]
"#;

#[test]
fn standalone_shared_waypoint_and_ingress_gateway() {
    let opted_out = |name: &str, node: &str| {
        PodSpec::new(name, "shop", node).label("ferrymesh.io/dataplane-mode", "none")
    };
    let mut l = l7_lab_with(
        &[],
        vec![
            opted_out("waypoint", "a"),
            opted_out("gateway", "a"),
            PodSpec::new("outsider", "plain", "b"),
        ],
    );
    l.apply(STANDALONE);
    // Edge certificate for edge.lab.
    let (cert, key) = (l.lab.dir.join("edge.crt"), l.lab.dir.join("edge.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=edge.lab",
            "-addext",
            "subjectAltName=DNS:edge.lab",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shared = l
        .lab
        .start_waypoint("waypoint", &["--hbone"])
        .expect("shared waypoint");
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let gateway = l
        .lab
        .start_waypoint(
            "gateway",
            &[
                "--gateway",
                "shop/edge",
                "--http",
                "[::]:8000",
                "--https",
                "[::]:8443",
                "--tls-cert",
                &cert_s,
                "--tls-key",
                &key_s,
            ],
        )
        .expect("gateway");

    // Shared waypoint: the client's agent sends the Service's traffic to it over
    // HBONE; the waypoint routes (its filter adds x-via) and calls web-v1 with its
    // own identity.
    let (code, v) = l.echo("client", &["http://198.18.100.60/through"]);
    assert_eq!(code, 200, "{v}\n{}", shared.log_text());
    assert_eq!(v["server"], "v1", "{v}");
    assert_eq!(v["headers"]["x-via"], "shared-waypoint", "{v}");
    let (_, metrics) = shared.get("/metrics").expect("waypoint metrics");
    assert!(
        metrics
            .lines()
            .any(|m| m.starts_with("istio_requests_total{")
                && m.contains("source_principal=\"spiffe://cluster.local/ns/shop/sa/client\"")
                && m.contains(
                    "destination_principal=\"spiffe://cluster.local/ns/shop/sa/web-v1\""
                )),
        "{metrics}"
    );
    assert!(
        !l.lab.agent_log("a").contains("\"path\":\"/through\""),
        "the node agent did not terminate HTTP itself"
    );

    // Ingress gateway: a client outside the mesh, plain HTTP and TLS.
    let gw = l.lab.pod("gateway").ip4;
    let (code, v) = l.echo("outsider", &[&format!("http://{gw}:8000/app/1")]);
    assert_eq!(
        (code, v["server"].as_str()),
        (200, Some("v2")),
        "{v}\n{}",
        gateway.log_text()
    );
    let (code, v) = l.echo(
        "outsider",
        &[
            "--http1.1",
            "--cacert",
            &cert_s,
            "--resolve",
            &format!("edge.lab:8443:{gw}"),
            "https://edge.lab:8443/app/2",
        ],
    );
    assert_eq!(
        (code, v["server"].as_str()),
        (200, Some("v2")),
        "TLS at the edge: {v}"
    );
    assert_eq!(v["version"], "HTTP/1.1", "{v}");
    let (code, v) = l.echo(
        "outsider",
        &[
            "--http2",
            "--cacert",
            &cert_s,
            "--resolve",
            &format!("edge.lab:8443:{gw}"),
            "https://edge.lab:8443/app/3",
        ],
    );
    assert_eq!(code, 200, "HTTP/2 over TLS (ALPN h2) at the edge: {v}");
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    // Rate limit at the edge: 3 per minute per client address.
    assert_eq!(
        l.curl("outsider", &[&format!("http://{gw}:8000/app/4")]).0,
        429
    );
    // JWT at the edge: /secure needs a valid token.
    assert_eq!(
        l.curl("outsider", &[&format!("http://{gw}:8000/secure/x")])
            .0,
        403
    );
    let bad = token("https://issuer.lab", "web", -3600);
    assert_eq!(
        l.curl(
            "outsider",
            &[
                "-H",
                &format!("authorization: Bearer {bad}"),
                &format!("http://{gw}:8000/secure/x")
            ]
        )
        .0,
        401
    );
    let good = token("https://issuer.lab", "web", 600);
    let (code, v) = l.echo(
        "outsider",
        &[
            "-H",
            &format!("authorization: Bearer {good}"),
            &format!("http://{gw}:8000/secure/x"),
        ],
    );
    assert_eq!((code, v["server"].as_str()), (200, Some("v1")), "{v}");
    // No route at the edge: 404.
    assert_eq!(
        l.curl("outsider", &[&format!("http://{gw}:8000/nothing")])
            .0,
        404
    );
}

const CONSUMER_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules: [{backendRefs: [{name: web-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: takeover, namespace: tenant}
spec:
  parentRefs: [{group: "", kind: Service, name: web, namespace: shop, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /steal}}]
    backendRefs: [{name: web-v2, namespace: shop, port: 80}]
  - filters:
    - type: RequestRedirect
      requestRedirect: {hostname: tenant.example, statusCode: 302}
"#;

#[test]
fn a_route_from_another_namespace_applies_to_its_own_clients_only() {
    let mut l = l7_lab_with(&[], vec![PodSpec::new("tenant-client", "tenant", "a")]);
    l.apply(CONSUMER_ROUTE);
    // The Service's own clients keep the producer's route.
    let (code, v) = l.echo("client", &[&url("/x")]);
    assert_eq!((code, v["server"].as_str()), (200, Some("v1")), "{v}");
    // The tenant's clients get the tenant's (consumer) route...
    let (code, text) = l.curl("tenant-client", &[&url("/x")]);
    assert_eq!(code, 302, "{text}");
    assert!(text.contains("tenant.example"), "{text}");
    // ...and its backendRef into shop has no ReferenceGrant: 500, never shop's pod.
    let (code, text) = l.curl("tenant-client", &[&url("/steal")]);
    assert_eq!(code, 500, "{text}");
    assert!(text.ends_with("backend not permitted\n"), "{text}");
    assert!(
        l.seen("198.18.100.52")["/steal"].is_null(),
        "reached web-v2"
    );
    // shop's owner grants tenant's routes the use of web-v2: now it is reached.
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: tenant-to-v2, namespace: shop}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: tenant}]\n  to: [{group: \"\", kind: Service, name: web-v2}]\n";
    l.apply(&format!("{CONSUMER_ROUTE}{grant}"));
    let (code, v) = l.echo("tenant-client", &[&url("/steal")]);
    assert_eq!((code, v["server"].as_str()), (200, Some("v2")), "{v}");
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn jwks_fetched_over_https_validates_tokens_and_until_then_none_pass() {
    let mut l = l7_lab(&[]);
    // A real HTTPS server (openssl s_server) in pod `other` serves the JWKS.
    let dir = l.lab.dir.join("jwks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("jwks.json"),
        r#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"ZmVycnltZXNoLWxhYi1qd3Qtc2VjcmV0LTAxMjM0NTY3ODk"}]}"#,
    )
    .unwrap();
    let ip = l.lab.pod("other").ip4.to_string();
    // A CA and a server certificate for the pod's address.
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let (ca, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let openssl = |args: Vec<String>| {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |x: &std::path::Path| x.display().to_string();
    let s = |x: &str| x.to_owned();
    let mut a: Vec<String> = vec![s("req"), s("-x509")];
    a.extend(ec.iter().map(|x| s(x)));
    a.extend([
        s("-days"),
        s("1"),
        s("-subj"),
        s("/CN=jwks-ca"),
        s("-keyout"),
        p(&ca_key),
        s("-out"),
        p(&ca),
    ]);
    openssl(a);
    let mut a: Vec<String> = vec![s("req")];
    a.extend(ec.iter().map(|x| s(x)));
    let csr = dir.join("server.csr");
    a.extend([
        s("-subj"),
        s("/CN=jwks"),
        s("-keyout"),
        p(&key),
        s("-out"),
        p(&csr),
    ]);
    openssl(a);
    openssl(vec![
        s("x509"),
        s("-req"),
        s("-in"),
        p(&csr),
        s("-CA"),
        p(&ca),
        s("-CAkey"),
        p(&ca_key),
        s("-CAcreateserial"),
        s("-days"),
        s("1"),
        s("-extfile"),
        p(&ext),
        s("-out"),
        p(&cert),
    ]);
    let serve = format!(
        "cd {} && exec openssl s_server -WWW -accept 8443 -cert {} -key {} -quiet",
        dir.display(),
        cert.display(),
        key.display()
    );
    let _server = Killed(l.lab.spawn_in_pod("other", "sh", &["-c", &serve]).unwrap());
    l.lab
        .restart_agents(&["--jwks-ca", &ca.display().to_string()])
        .unwrap();
    l.apply(&format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: fetched, namespace: shop}}
spec:
  selector: {{matchLabels: {{svc: web}}}}
  jwtRules:
  - issuer: https://issuer.lab
    audiences: [web]
    jwksUri: https://{ip}:8443/jwks.json
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: token-required, namespace: shop}}
spec:
  selector: {{matchLabels: {{svc: web}}}}
  rules:
  - from: [{{source: {{requestPrincipals: ["https://issuer.lab/*"]}}}}]
"#
    ));
    let good = format!(
        "authorization: Bearer {}",
        token("https://issuer.lab", "web", 600)
    );
    // Once both agents fetched the keys, a good token passes everywhere.
    eventually(
        Duration::from_secs(30),
        "the JWKS fetched by the agents",
        || {
            let codes: Vec<u16> = (0..4)
                .map(|_| l.curl("client", &["-H", &good, &url("/x")]).0)
                .collect();
            if codes.iter().all(|c| *c == 200) {
                Ok(())
            } else {
                Err(format!("{codes:?}"))
            }
        },
    )
    .unwrap_or_else(|e| {
        let log = l.lab.agent_log("a") + &l.lab.agent_log("b");
        let jwks: Vec<&str> = log.lines().filter(|x| x.contains("jwks")).collect();
        panic!("{e}\n{}", jwks.join("\n"))
    });
    // Without a token the ALLOW rule is not met; a token signed otherwise is refused.
    assert_eq!(l.curl("client", &[&url("/x")]).0, 403);
    let forged = {
        let claims = serde_json::json!({"iss": "https://issuer.lab", "sub": "x", "aud": "web", "exp": 4102444800i64});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"another-secret"),
        )
        .expect("token")
    };
    let (code, _) = l.curl(
        "client",
        &["-H", &format!("authorization: Bearer {forged}"), &url("/x")],
    );
    assert_eq!(code, 401);
}

/// Only the client pod's address may call web, by `ipBlocks` (an L7 rule too, so
/// requests are judged by the waypoint).
fn ip_block_policy(client_ip: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: web-from-client-ip, namespace: shop}}
spec:
  selector: {{matchLabels: {{svc: web}}}}
  rules:
  - from: [{{source: {{ipBlocks: ["{client_ip}/32"]}}}}]
    to: [{{operation: {{methods: [GET]}}}}]
"#
    )
}

#[test]
fn ip_blocks_see_the_pods_address_at_the_node_waypoint() {
    let mut l = l7_lab(&[]);
    let client = l.lab.pod("client").ip4.to_string();
    l.apply(&ip_block_policy(&client));
    // web's endpoints: web-v2 on this node (judged by node a's waypoint, which
    // once saw the client as 127.0.0.1) and web-v1 on node b.
    let r = l.get("client", &["--url", &url("/ip"), "--count", "20"]);
    assert_eq!(r["statuses"]["200"], 20, "{r}");
    assert!(r["servers"]["v2"].as_u64().unwrap_or(0) > 0, "{r}");
    // Another pod's address is served nowhere: 403 where node a's waypoint judges
    // (web-v2); web-v1's agent refuses the HBONE stream at its L4 part, which the
    // source's waypoint answers as 503.
    let r = l.get("other", &["--url", &url("/ip"), "--count", "10"]);
    assert!(r["statuses"]["200"].is_null(), "another pod's address: {r}");
    assert!(r["statuses"]["403"].as_u64().unwrap_or(0) > 0, "{r}");
}
