//! The Kubernetes watchers against a test API server that replays real API objects
//! (as `kubectl get -o json` prints them: uid, managedFields, status and all) and
//! watch events, with dropped watches and 410 Gone. No real cluster can run here.
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use mesh_model::model::Objects;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

/// Collection path -> (apiVersion, kind).
const KINDS: [(&str, &str, &str); 6] = [
    ("/api/v1/namespaces", "v1", "Namespace"),
    ("/api/v1/pods", "v1", "Pod"),
    ("/api/v1/services", "v1", "Service"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSlice",
    ),
    (
        "/apis/gateway.networking.k8s.io/v1/httproutes",
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
    ),
    (
        "/apis/security.istio.io/v1/authorizationpolicies",
        "security.istio.io/v1",
        "AuthorizationPolicy",
    ),
];

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    path: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Cluster {
    rv: u64,
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    events: Vec<Event>,
    /// Watches from below this resourceVersion get 410 Gone.
    gone_below: u64,
    /// Bumped to end every open watch (a dropped connection).
    epoch: u64,
}

struct Api {
    cluster: Mutex<Cluster>,
    tx: broadcast::Sender<Event>,
    epoch: watch::Sender<u64>,
    /// Route status patches received: (namespace/name, status).
    statuses: Mutex<Vec<(String, Value)>>,
    /// Signalled at each status patch.
    status_patched: tokio::sync::Notify,
}

fn key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

impl Api {
    fn path_of(o: &Value) -> String {
        let kind = o["kind"].as_str().unwrap_or("");
        KINDS
            .iter()
            .find(|k| k.2 == kind)
            .map(|k| k.0.to_owned())
            .unwrap_or_else(|| panic!("no path for kind {kind}"))
    }

    /// ADDED/MODIFIED/DELETED as the API server would: a new resourceVersion each.
    fn change(&self, kind: &'static str, mut o: Value) {
        let mut c = self.cluster.lock().expect("lock");
        c.rv += 1;
        o["metadata"]["resourceVersion"] = json!(c.rv.to_string());
        let path = Self::path_of(&o);
        let k = key(&o);
        let store = c.objects.entry(path.clone()).or_default();
        match kind {
            "DELETED" => {
                store.remove(&k);
            }
            _ => {
                store.insert(k, o.clone());
            }
        }
        let e = Event {
            rv: c.rv,
            path,
            kind,
            object: o,
        };
        c.events.push(e.clone());
        let _ = self.tx.send(e);
    }

    fn apply(&self, o: Value) {
        let exists = {
            let c = self.cluster.lock().expect("lock");
            c.objects
                .get(&Self::path_of(&o))
                .is_some_and(|s| s.contains_key(&key(&o)))
        };
        self.change(if exists { "MODIFIED" } else { "ADDED" }, o);
    }

    fn delete(&self, o: Value) {
        self.change("DELETED", o);
    }

    /// Ends every open watch, as a dropped connection would.
    fn drop_watches(&self) {
        let e = {
            let mut c = self.cluster.lock().expect("lock");
            c.epoch += 1;
            c.epoch
        };
        let _ = self.epoch.send(e);
    }

    /// Changes an object without any watcher seeing the event, and makes every
    /// older resourceVersion expire: watchers get 410 Gone and must relist.
    fn compact_and_change(&self, o: Value) {
        {
            let mut c = self.cluster.lock().expect("lock");
            c.rv += 1;
            let rv = c.rv;
            let mut o = o;
            o["metadata"]["resourceVersion"] = json!(rv.to_string());
            let path = Self::path_of(&o);
            c.objects.entry(path).or_default().insert(key(&o), o);
            c.gone_below = rv + 1;
            c.events.clear();
        }
        self.drop_watches();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn query(uri: &hyper::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn line(v: &Value) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from(format!("{v}\n"))))
}

/// PATCH /api/v1/namespaces/<name> with a merge patch of labels (what
/// `meshctl ns enable` sends).
async fn patch_namespace(
    api: &Api,
    name: &str,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let current = {
        let c = api.cluster.lock().expect("lock");
        c.objects
            .get("/api/v1/namespaces")
            .and_then(|s| s.get(&format!("/{name}")).cloned())
    };
    let Some(mut ns) = current else {
        let mut r = Response::new(Full::new(Bytes::from("{}")).boxed());
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        return r;
    };
    if let Some(labels) = patch["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            match v {
                Value::Null => {
                    ns["metadata"]["labels"]
                        .as_object_mut()
                        .map(|l| l.remove(k));
                }
                v => ns["metadata"]["labels"][k] = v.clone(),
            }
        }
    }
    api.apply(ns.clone());
    Response::new(Full::new(Bytes::from(ns.to_string())).boxed())
}

async fn handle(
    api: Arc<Api>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == hyper::Method::PATCH && path.ends_with("/status") {
        // /apis/gateway.networking.k8s.io/v1/namespaces/<ns>/httproutes/<name>/status
        let parts: Vec<&str> = path.split('/').collect();
        let (ns, name) = (parts[5].to_owned(), parts[7].to_owned());
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        api.statuses
            .lock()
            .expect("lock")
            .push((format!("{ns}/{name}"), patch["status"].clone()));
        api.status_patched.notify_one();
        let answer = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                            "metadata": {"name": name, "namespace": ns}, "status": patch["status"]});
        return Ok(Response::new(
            Full::new(Bytes::from(answer.to_string())).boxed(),
        ));
    }
    if req.method() == hyper::Method::PATCH {
        if let Some(name) = path.strip_prefix("/api/v1/namespaces/") {
            let name = name.to_owned();
            return Ok(patch_namespace(&api, &name, req).await);
        }
    }
    let q = query(req.uri());
    let Some((_, api_version, kind)) = KINDS.iter().find(|k| k.0 == path) else {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                            "message": format!("the server could not find the requested resource ({path})")});
        let mut r = Response::new(Full::new(Bytes::from(status.to_string())).boxed());
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        return Ok(r);
    };
    if q.get("watch").map(String::as_str) == Some("true")
        || q.get("watch").map(String::as_str) == Some("1")
    {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (backlog, gone, epoch) = {
            let c = api.cluster.lock().expect("lock");
            let backlog: Vec<Event> = c
                .events
                .iter()
                .filter(|e| e.rv > from && e.path == path)
                .cloned()
                .collect();
            (backlog, from < c.gone_below, c.epoch)
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        if gone {
            let _ = tx
                .send(line(&json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Expired", "code": 410, "message": format!("too old resource version: {from}")}})))
                .await;
        } else {
            let mut live = api.tx.subscribe();
            let mut epochs = api.epoch.subscribe();
            tokio::spawn(async move {
                for e in backlog {
                    if tx
                        .send(line(&json!({"type": e.kind, "object": e.object})))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                loop {
                    tokio::select! {
                        e = live.recv() => match e {
                            Ok(e) if e.path == path && e.rv > from => {
                                if tx.send(line(&json!({"type": e.kind, "object": e.object}))).await.is_err() { return; }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        },
                        _ = epochs.changed() => if *epochs.borrow() != epoch { return },
                    }
                }
            });
        }
        let mut rx = rx;
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    let c = api.cluster.lock().expect("lock");
    let items: Vec<Value> = c
        .objects
        .get(&path)
        .map(|s| s.values().cloned().collect())
        .unwrap_or_default();
    let list = json!({"kind": format!("{kind}List"), "apiVersion": api_version, "metadata": {"resourceVersion": c.rv.to_string()}, "items": items});
    Ok(Response::new(
        Full::new(Bytes::from(list.to_string())).boxed(),
    ))
}

async fn start_api() -> (Arc<Api>, SocketAddr) {
    let (tx, _) = broadcast::channel(1024);
    let (epoch, _) = watch::channel(0);
    let api = Arc::new(Api {
        cluster: Mutex::new(Cluster {
            rv: 100,
            ..Cluster::default()
        }),
        tx,
        epoch,
        statuses: Mutex::default(),
        status_patched: tokio::sync::Notify::new(),
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let a = api.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let a = a.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(a.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (api, addr)
}

fn namespace(name: &str, ambient: bool) -> Value {
    let labels = if ambient {
        json!({"kubernetes.io/metadata.name": name, "ferrymesh.io/dataplane-mode": "ambient"})
    } else {
        json!({"kubernetes.io/metadata.name": name})
    };
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": format!("uid-ns-{name}"), "creationTimestamp": "2026-11-01T10:00:00Z",
                     "labels": labels,
                     "managedFields": [{"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1", "time": "2026-11-01T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}]},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

fn pod(name: &str, ns: &str, node: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-pod-{name}"), "creationTimestamp": "2026-11-01T10:01:00Z",
                     "generateName": "web-7d9f8b6c5-", "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5", "uid": "uid-rs", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                 "resources": {}, "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
                 "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                 "serviceAccountName": "web", "serviceAccount": "web", "nodeName": node, "securityContext": {}, "schedulerName": "default-scheduler",
                 "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
                 "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-11-01T10:01:05Z"}],
                   "hostIP": "172.18.0.2", "hostIPs": [{"ip": "172.18.0.2"}], "podIP": ip, "podIPs": [{"ip": ip}],
                   "startTime": "2026-11-01T10:01:00Z", "qosClass": "BestEffort"}
    })
}

fn service(port: i64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-svc-web", "creationTimestamp": "2026-11-01T10:00:30Z",
                     "labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"ports": [{"name": "http", "protocol": "TCP", "appProtocol": "http", "port": port, "targetPort": 8080}],
                 "selector": {"app": "web"}, "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"], "type": "ClusterIP",
                 "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}}
    })
}

fn route(weight: i64) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-route", "generation": 2, "creationTimestamp": "2026-11-01T10:02:00Z"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80, "weight": weight}]}]},
        "status": {"parents": [{"parentRef": {"group": "", "kind": "Service", "name": "web", "port": 80},
                                "controllerName": "ferrymesh.io/control", "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                "message": "", "lastTransitionTime": "2026-11-01T10:02:01Z", "observedGeneration": 2}]}]}
    })
}

/// Waits until the published objects satisfy `cond`.
async fn until(
    rx: &mut watch::Receiver<mesh_control::source::Published>,
    what: &str,
    cond: impl Fn(&Objects) -> bool,
) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        {
            let p = rx.borrow_and_update().clone();
            let (v, o) = (&p.version, &p.objects);
            if cond(o) {
                return *v;
            }
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            let p = rx.borrow().clone();
            let (v, o) = (&p.version, &p.objects);
            panic!("timed out waiting for {what}; version {v}: {o:#?}");
        }
    }
}

fn ambient(o: &Objects, ns: &str) -> bool {
    o.namespaces.iter().any(|n| {
        n.metadata.name == ns
            && n.metadata
                .labels
                .get("ferrymesh.io/dataplane-mode")
                .map(String::as_str)
                == Some("ambient")
    })
}

fn pods(o: &Objects) -> Vec<String> {
    o.workloads
        .iter()
        .map(|w| w.metadata.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_follow_the_cluster() {
    let (api, addr) = start_api().await;
    api.apply(namespace("shop", true));
    api.apply(namespace("plain", false));
    api.apply(pod("web-1", "shop", "node-a", "10.244.1.5"));
    api.apply(pod("client", "shop", "node-b", "10.244.2.7"));
    api.apply(service(80));
    api.apply(route(100));

    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let (mut rx, _task) = mesh_control::source::kube::watch_cluster(
        client,
        Duration::from_millis(50),
        "mesh-root".into(),
    )
    .await;

    // The first version: everything listed, translated.
    let v1 = until(&mut rx, "the initial list", |o| {
        o.namespaces.len() == 2
            && pods(o) == ["client", "web-1"]
            && o.services.len() == 1
            && o.http_routes.len() == 1
    })
    .await;
    {
        let p = rx.borrow().clone();
        let o = &p.objects;
        let w = o
            .workloads
            .iter()
            .find(|w| w.metadata.name == "web-1")
            .expect("web-1");
        assert_eq!(
            (w.spec.node.as_str(), w.spec.service_account.as_str()),
            ("node-a", "web")
        );
        assert_eq!(
            o.services[0].spec.ports[0].app_protocol.as_deref(),
            Some("http")
        );
        assert!(ambient(o, "shop") && !ambient(o, "plain"));
        assert_eq!(
            o.root_namespace(),
            "mesh-root",
            "the flag's root namespace is sent"
        );
    }

    // Label toggle.
    api.apply(namespace("plain", true));
    let v2 = until(&mut rx, "plain labelled ambient", |o| ambient(o, "plain")).await;
    assert!(v2 > v1, "a new version");
    api.apply(namespace("plain", false));
    until(&mut rx, "plain unlabelled", |o| !ambient(o, "plain")).await;

    // Pod churn.
    api.apply(pod("web-2", "shop", "node-b", "10.244.2.9"));
    api.delete(pod("client", "shop", "node-b", "10.244.2.7"));
    until(&mut rx, "web-2 in, client out", |o| {
        pods(o) == ["web-1", "web-2"]
    })
    .await;

    // Service and route changes.
    api.apply(service(8000));
    api.apply(route(40));
    until(&mut rx, "service port and route weight", |o| {
        o.services[0].spec.ports[0].port == 8000
            && o.http_routes
                .first()
                .is_some_and(|r| r.spec.rules[0].backend_refs[0].weight == 40)
    })
    .await;

    // A tenant's object that cannot be read (rules is not a list) does not hold up
    // anyone else's config: shop's route change still flows, and the broken DENY
    // policy is replaced by its fail-closed stand-in instead of vanishing.
    api.apply(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "broken", "namespace": "evil", "uid": "u-b", "resourceVersion": "1"},
        "spec": {"action": "DENY", "rules": 7}
    }));
    api.apply(route(70));
    until(
        &mut rx,
        "shop's route change next to evil's broken policy",
        |o| {
            o.http_routes
                .first()
                .is_some_and(|r| r.spec.rules[0].backend_refs[0].weight == 70)
                && o.authorization_policies.iter().any(|p| {
                    p.metadata.name == "broken"
                        && p.spec.action == mesh_model::model::Action::Deny
                        && p.spec.rules.len() == 1
                })
        },
    )
    .await;

    // Route status is written back: the tenant's route on prod's Gateway is not
    // accepted there (allowedRoutes Same), with the Gateway API's reason.
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "sneaky", "namespace": "evil", "uid": "u-s", "generation": 4},
        "spec": {"parentRefs": [{"name": "edge", "namespace": "prod"}],
                 "rules": [{"backendRefs": [{"name": "sink", "port": 80}]}]}
    }));
    let written = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let found = api
                .statuses
                .lock()
                .expect("lock")
                .iter()
                .find(|(k, _)| k == "evil/sneaky")
                .cloned();
            if let Some(s) = found {
                return s.1;
            }
            api.status_patched.notified().await;
        }
    })
    .await
    .expect("status written for evil/sneaky");
    let accepted = &written["parents"][0]["conditions"][0];
    assert_eq!(
        (
            accepted["type"].as_str(),
            accepted["status"].as_str(),
            accepted["reason"].as_str()
        ),
        (
            Some("Accepted"),
            Some("False"),
            Some("NotAllowedByListeners")
        ),
        "{written}"
    );
    assert_eq!(written["parents"][0]["controllerName"], "ferrymesh.io/mesh");
    // The conditions say which generation of the route they judged.
    assert_eq!(accepted["observedGeneration"], 4, "{written}");

    // A dropped watch: the watchers watch again from where they were.
    api.drop_watches();
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.apply(pod("web-3", "shop", "node-a", "10.244.1.8"));
    until(&mut rx, "web-3 after a dropped watch", |o| {
        pods(o).contains(&"web-3".to_owned())
    })
    .await;

    // 410 Gone: history compacted past the watchers' resourceVersion, and a change
    // they never saw as an event; they relist and catch up.
    api.compact_and_change(pod("web-4", "shop", "node-a", "10.244.1.9"));
    until(&mut rx, "web-4 after a relist", |o| {
        pods(o).contains(&"web-4".to_owned())
    })
    .await;

    // meshctl ns enable|disable labels the namespace through the API server.
    let kubeconfig = std::env::temp_dir().join(format!(
        "ferrymesh-replay-{}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters: [{{name: replay, cluster: {{server: \"http://{addr}\"}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: replay, user: u}}}}]\ncurrent-context: c\n"),
    )
    .expect("kubeconfig");
    let meshctl = |args: &'static [&'static str]| {
        let kc = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
                .args(args)
                .env("KUBECONFIG", &kc)
                .output()
                .expect("meshctl");
            assert!(
                out.status.success(),
                "meshctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let said = meshctl(&["ns", "enable", "plain"]).await.expect("join");
    assert!(said.contains("namespace plain is in the mesh"), "{said}");
    until(&mut rx, "plain enabled by meshctl", |o| ambient(o, "plain")).await;
    meshctl(&["ns", "disable", "plain"]).await.expect("join");
    until(&mut rx, "plain disabled by meshctl", |o| {
        !ambient(o, "plain")
    })
    .await;
    let _ = std::fs::remove_file(&kubeconfig);

    // Unchanged objects make no new version: re-applying a pod as it is, then a
    // real change, gives exactly one more version. A version of an earlier step
    // still on its way can land in between once; an unchanged object that makes
    // versions does so every time, so a second try tells them apart.
    let mut extra = Vec::new();
    for (same, (new, ip)) in [
        ("web-4", ("web-5", "10.244.1.10")),
        ("web-5", ("web-6", "10.244.1.11")),
    ] {
        let before = rx.borrow().version;
        let ip_same = if same == "web-4" {
            "10.244.1.9"
        } else {
            "10.244.1.10"
        };
        api.apply(pod(same, "shop", "node-a", ip_same));
        api.apply(pod(new, "shop", "node-a", ip));
        let after = until(&mut rx, new, |o| pods(o).contains(&new.to_owned())).await;
        if after == before + 1 {
            extra.clear();
            break;
        }
        extra.push(after - before - 1);
    }
    assert!(
        extra.is_empty(),
        "an unchanged pod made a version of its own (extra versions: {extra:?})"
    );
}
