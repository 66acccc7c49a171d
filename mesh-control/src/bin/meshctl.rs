//! `meshctl`: what ferrymesh is doing, for people (tables) and scripts (`-o json`).
//! Reads the control plane's admin API; `ns enable|disable` labels the namespace
//! through the Kubernetes API (as `kubectl label` would).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use bytes::Bytes;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_control::admin::api;
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "meshctl",
    version,
    about = "ferrymesh: status, config and checks"
)]
struct Cli {
    /// The control plane's admin API.
    #[arg(
        long,
        env = "FERRYMESH_CONTROL",
        default_value = "127.0.0.1:15014",
        global = true
    )]
    control: String,
    /// Output: a table for people, or JSON for scripts.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Node agents: connected, the config version sent and acknowledged, errors.
    Status,
    /// Objects refused, not attached or enforced fail-closed, and why.
    Problems,
    /// Each HTTPRoute's and GRPCRoute's Gateway API conditions (Accepted,
    /// ResolvedRefs) per parent, as written to `status` in a cluster.
    Routes,
    /// The config one node's agent receives.
    ConfigDump { node: String },
    /// Is a pod in the mesh, why (not), its identity, the policies and routes that apply.
    Check {
        /// namespace/pod
        pod: String,
    },
    /// Put a namespace in the mesh (label ferrymesh.io/dataplane-mode=ambient) or take it out.
    Ns {
        #[command(subcommand)]
        action: NsAction,
    },
    /// Why a pod's connection would be served or refused: capture, the plan (same
    /// node, HBONE, waypoint, passthrough), the identities, each policy considered
    /// and the verdict, computed by the pod's node agent with its data path's own
    /// functions.
    Explain {
        /// namespace/pod (a pod of the agent's node).
        pod: String,
        /// ip:port the pod connects to (a pod's or a Service's address).
        target: String,
        /// Also the route an HTTP request takes where the waypoint serves it.
        #[arg(long, num_args = 2, value_names = ["METHOD", "PATH"])]
        http: Option<Vec<String>>,
        /// The pod's node agent's admin API.
        #[arg(long, env = "FERRYMESH_AGENT", default_value = "127.0.0.1:15000")]
        agent: String,
    },
    /// A node agent's recent refusals (connections and requests): who, where, which
    /// policy, why. Reads the agent's admin API (in a cluster: `kubectl
    /// port-forward` to the node's agent pod, port 15000).
    Denials {
        /// The agent's admin API.
        #[arg(long, env = "FERRYMESH_AGENT", default_value = "127.0.0.1:15000")]
        agent: String,
        /// Only refusals of connections or requests to this pod (namespace/name).
        #[arg(long)]
        pod: Option<String>,
    },
    /// What one node agent holds, as `istioctl ztunnel-config` shows ztunnel's:
    /// workloads, services, policies, certificates or live connections per pod.
    Agent {
        #[arg(value_enum)]
        view: View,
        /// The agent's admin API.
        #[arg(long, env = "FERRYMESH_AGENT", default_value = "127.0.0.1:15000")]
        agent: String,
    },
    /// Shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Clone, Copy, ValueEnum)]
enum View {
    Workloads,
    Services,
    Policies,
    Certificates,
    Connections,
}

#[derive(Subcommand)]
enum NsAction {
    Enable { namespace: String },
    Disable { namespace: String },
}

/// GETs `path` from the control plane's admin API and decodes its typed answer
/// (or its error).
async fn get<T: serde::de::DeserializeOwned>(control: &str, path: &str) -> Result<T, String> {
    let unreachable = "is mesh-control running, and --control right?";
    get_from(control, path, ("the control plane admin API", unreachable)).await
}

/// GETs `path` from `addr`; `(what, hint)` name the API and what to check when it
/// cannot be reached.
async fn get_from<T: serde::de::DeserializeOwned>(
    control: &str,
    path: &str,
    (what, hint): (&str, &str),
) -> Result<T, String> {
    let tcp = tokio::net::TcpStream::connect(control)
        .await
        .map_err(|e| format!("cannot reach {what} at {control}: {e}; {hint}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", control)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let ok = resp.status().is_success();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !ok {
        return Err(match serde_json::from_slice::<api::ApiError>(&body) {
            Ok(e) => e.error,
            Err(_) => format!("{what}: {}", String::from_utf8_lossy(&body).trim()),
        });
    }
    serde_json::from_slice(&body).map_err(|e| format!("the admin API answered what this meshctl does not understand: {e}; are meshctl and mesh-control the same version?"))
}

fn dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_owned()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, String> {
    serde_json::to_string_pretty(v).map_err(|e| e.to_string())
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.clone()));
    }
    out
}

async fn ns(namespace: &str, enable: bool) -> Result<String, String> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, Patch, PatchParams};
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}; set KUBECONFIG (with the control plane reading a directory, set the label in its Namespace object instead)"))?;
    let api: Api<Namespace> = Api::all(client);
    let value = if enable {
        Value::from("ambient")
    } else {
        Value::Null
    };
    let patch = serde_json::json!({"metadata": {"labels": {"ferrymesh.io/dataplane-mode": value}}});
    api.patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("labelling namespace {namespace}: {e}"))?;
    Ok(if enable {
        format!("namespace {namespace} is in the mesh (ferrymesh.io/dataplane-mode=ambient); its pods are captured within seconds, no restart")
    } else {
        format!("namespace {namespace} left the mesh; established connections stay, new ones are not captured")
    })
}

async fn status(control: &str, as_json: bool) -> Result<String, String> {
    let st: api::Status = get(control, "/v1/status").await?;
    if as_json {
        return json(&st);
    }
    let rows: Vec<Vec<String>> = st
        .nodes
        .iter()
        .map(|(n, s)| {
            vec![
                n.clone(),
                yes(s.connected),
                s.sent_version.to_string(),
                s.acked_version.to_string(),
                dash(s.last_error.as_deref()),
            ]
        })
        .collect();
    let header = ["NODE", "CONNECTED", "SENT", "ACKED", "LAST ERROR"];
    Ok(format!(
        "config version {}\n{}",
        st.version,
        table(&header, &rows)
    ))
}

async fn problems(control: &str, as_json: bool) -> Result<String, String> {
    let p: api::Problems = get(control, "/v1/problems").await?;
    if as_json {
        return json(&p);
    }
    if p.problems.is_empty() {
        return Ok(format!("config version {}: no problems\n", p.version));
    }
    let rows: Vec<Vec<String>> = p
        .problems
        .iter()
        .map(|x| vec![x.object.clone(), x.problem.clone()])
        .collect();
    Ok(format!(
        "config version {}\n{}",
        p.version,
        table(&["OBJECT", "PROBLEM"], &rows)
    ))
}

async fn routes(control: &str, as_json: bool) -> Result<String, String> {
    let r: api::Routes = get(control, "/v1/routes").await?;
    if as_json {
        return json(&r);
    }
    let mut rows = Vec::new();
    for route in &r.routes {
        for p in &route.parents {
            let parent = format!(
                "{} {}/{}",
                p.parent_ref.kind.as_deref().unwrap_or("Gateway"),
                p.parent_ref
                    .namespace
                    .as_deref()
                    .unwrap_or(&route.namespace),
                p.parent_ref.name
            );
            let cond = |c: &mesh_model::l7::status::Condition| {
                format!("{:?}={} {}", c.kind, c.status, c.reason)
            };
            let conditions: Vec<String> = p.conditions.iter().map(cond).collect();
            let message = p
                .conditions
                .iter()
                .find(|c| !c.status)
                .map_or(String::new(), |c| c.message.clone());
            rows.push(vec![
                format!("{} {}/{}", route.kind, route.namespace, route.name),
                parent,
                conditions.join(", "),
                message,
            ]);
        }
    }
    Ok(format!(
        "config version {}\n{}",
        r.version,
        table(&["ROUTE", "PARENT", "CONDITIONS", "MESSAGE"], &rows)
    ))
}

async fn config_dump(control: &str, node: &str, as_json: bool) -> Result<String, String> {
    let c: api::NodeConfig = get(control, &format!("/v1/config/{node}")).await?;
    if as_json {
        return json(&c);
    }
    let mut out = format!("# config version {} for node {node}\n", c.version);
    for o in &c.objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&o.object).unwrap_or_default());
    }
    Ok(out)
}

async fn check(control: &str, pod: &str, as_json: bool) -> Result<String, String> {
    let (ns, name) = pod
        .split_once('/')
        .ok_or_else(|| format!("{pod:?}: give namespace/pod"))?;
    let c: api::Check = get(control, &format!("/v1/check/{ns}/{name}")).await?;
    if as_json {
        return json(&c);
    }
    let policies: Vec<String> = c
        .authorization_policies
        .iter()
        .map(|p| {
            format!(
                "{} ({}{})",
                p.name,
                p.action,
                if p.l7 { ", L7" } else { "" }
            )
        })
        .collect();
    let addresses: Vec<String> = c.addresses.iter().map(ToString::to_string).collect();
    let rows = [
        ("pod", c.pod.clone()),
        ("node", c.node.clone()),
        ("captured", format!("{} ({})", yes(c.captured), c.reason)),
        ("identity", c.identity.clone()),
        ("addresses", list(&addresses)),
        ("services", list(&c.services)),
        ("routes", list(&c.routes)),
        ("policies", list(&policies)),
        ("L7 (waypoint)", yes(c.l7)),
    ]
    .map(|(k, v)| vec![k.to_owned(), v]);
    Ok(table(&["", ""], &rows)
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n"))
}

async fn denials(agent: &str, pod: Option<&str>, as_json: bool) -> Result<String, String> {
    let path = match pod {
        Some(p) if p.split_once('/').is_some() => format!("/denials/{p}"),
        Some(p) => return Err(format!("{p:?}: give namespace/pod")),
        None => "/denials".to_owned(),
    };
    let hint = "is the node agent running, and --agent right (its admin port, 15000)?";
    let list: Vec<mesh_model::denial::Denial> =
        get_from(agent, &path, ("the node agent's admin API", hint)).await?;
    if as_json {
        return json(&list);
    }
    if list.is_empty() {
        return Ok("no refusals kept".to_owned());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let layer = match d.layer {
                mesh_model::denial::Layer::L4 => "L4",
                mesh_model::denial::Layer::L7 => "L7",
            };
            vec![
                d.unix_ms.to_string(),
                layer.to_owned(),
                d.source.clone(),
                d.destination.clone(),
                format!(
                    "{}{}",
                    d.target,
                    d.request
                        .as_ref()
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default()
                ),
                dash(d.policy.as_deref()),
                d.reason.clone(),
            ]
        })
        .collect();
    let header = [
        "UNIX MS",
        "LAYER",
        "SOURCE",
        "DESTINATION",
        "TARGET",
        "POLICY",
        "REASON",
    ];
    Ok(table(&header, &rows))
}

/// One view's header and rows.
fn view_table(
    v: &mesh_model::node_view::NodeView,
    view: View,
) -> (Vec<&'static str>, Vec<Vec<String>>) {
    match view {
        View::Workloads => (
            vec![
                "WORKLOAD",
                "NODE",
                "ADDRESSES",
                "IDENTITY",
                "PROTOCOL",
                "L7 POLICY",
            ],
            v.workloads
                .iter()
                .map(|w| {
                    let a = [w.workload.clone(), w.node.clone(), list(&w.addresses)];
                    let b = [w.identity.clone(), w.protocol.clone(), yes(w.l7_policy)];
                    a.into_iter().chain(b).collect()
                })
                .collect(),
        ),
        View::Services => (
            vec!["SERVICE", "VIPS", "PORTS", "WAYPOINT"],
            v.services
                .iter()
                .map(|s| {
                    let w = dash(s.waypoint.as_deref());
                    vec![s.service.clone(), list(&s.vips), list(&s.ports), w]
                })
                .collect(),
        ),
        View::Policies => (
            vec!["POLICY", "ACTION", "DRY RUN", "RULES", "FAIL-CLOSED PARTS"],
            v.policies
                .iter()
                .map(|p| {
                    let (r, d) = (p.rules.to_string(), list(&p.degraded));
                    vec![p.policy.clone(), p.action.clone(), yes(p.dry_run), r, d]
                })
                .collect(),
        ),
        View::Certificates => (
            vec!["IDENTITY", "SERIAL", "EXPIRES IN"],
            v.certificates
                .iter()
                .map(|c| {
                    let left = c
                        .expires_in_s
                        .map_or("pending".to_owned(), |s| format!("{s}s"));
                    vec![c.identity.clone(), dash(c.serial.as_deref()), left]
                })
                .collect(),
        ),
        View::Connections => (
            vec!["POD", "OPEN", "BYTES SENT", "BYTES RECEIVED"],
            v.connections
                .iter()
                .map(|c| {
                    let n = [
                        c.active.to_string(),
                        c.bytes_sent.to_string(),
                        c.bytes_received.to_string(),
                    ];
                    std::iter::once(c.pod.clone()).chain(n).collect()
                })
                .collect(),
        ),
    }
}

async fn explain(
    agent: &str,
    pod: &str,
    (target, request): (&str, Option<(&str, &str)>),
    as_json: bool,
) -> Result<String, String> {
    let (ns, name) = pod
        .split_once('/')
        .ok_or_else(|| format!("{pod:?}: give namespace/pod"))?;
    let hint = "is the node agent running, and --agent right (its admin port, 15000)?";
    let mut path = format!("/explain/{ns}/{name}/{target}");
    if let Some((method, p)) = request {
        if !p.starts_with('/') {
            return Err(format!("{p:?}: give an absolute path (/...)"));
        }
        path.push_str(&format!("/http/{method}{p}"));
    }
    let e: mesh_model::explain::Explanation =
        get_from(agent, &path, ("the node agent's admin API", hint)).await?;
    if as_json {
        return json(&e);
    }
    let mut out = format!(
        "{} ({}) -> {}\ncaptured: {} ({})\nplan:     {}\n",
        e.source,
        e.source_identity,
        e.target,
        yes(e.captured),
        e.capture_reason,
        e.plan
    );
    if let Some(d) = &e.destination {
        out.push_str(&format!(
            "to:       {d} ({})\n",
            dash(e.destination_identity.as_deref())
        ));
    }
    for p in &e.policies {
        let dry = if p.dry_run { ", dry run" } else { "" };
        let m = if p.matches {
            "matches"
        } else {
            "does not match"
        };
        out.push_str(&format!(
            "policy:   {} ({}{dry}, on {}): {m}\n",
            p.policy, p.action, p.attached_to
        ));
    }
    out.push_str(&format!(
        "verdict:  {} ({})\nresult:   {}",
        e.verdict, e.reason, e.result
    ));
    match (&e.request, request) {
        (Some(r), _) => {
            let route = dash(r.route.as_deref());
            out.push_str(&format!("\nrequest:  {} -> route {route}", r.request));
            for b in &r.backends {
                out.push_str(&format!("\nbackend:  {b}"));
            }
            if let Some(l) = &r.local_reply {
                out.push_str(&format!("\nanswer:   {l} (from the waypoint)"));
            }
        }
        (None, Some(_)) => out.push_str(
            "\nrequest:  not served by a waypoint for a Service here: the connection's verdict is the request's",
        ),
        (None, None) => {}
    }
    Ok(out)
}

async fn agent_view(agent: &str, view: View, as_json: bool) -> Result<String, String> {
    let hint = "is the node agent running, and --agent right (its admin port, 15000)?";
    let v: mesh_model::node_view::NodeView =
        get_from(agent, "/node_view", ("the node agent's admin API", hint)).await?;
    if as_json {
        return match view {
            View::Workloads => json(&v.workloads),
            View::Services => json(&v.services),
            View::Policies => json(&v.policies),
            View::Certificates => json(&v.certificates),
            View::Connections => json(&v.connections),
        };
    }
    let (header, rows) = view_table(&v, view);
    Ok(format!(
        "node {}, config generation {}\n{}",
        v.node,
        v.config_generation,
        table(&header, &rows)
    ))
}

async fn run(cli: Cli) -> Result<String, String> {
    let as_json = cli.output == Output::Json;
    let control = cli.control.as_str();
    match cli.command {
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "meshctl", &mut out);
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        Command::Ns { action } => match action {
            NsAction::Enable { namespace } => ns(&namespace, true).await,
            NsAction::Disable { namespace } => ns(&namespace, false).await,
        },
        Command::Status => status(control, as_json).await,
        Command::Problems => problems(control, as_json).await,
        Command::Routes => routes(control, as_json).await,
        Command::ConfigDump { node } => config_dump(control, &node, as_json).await,
        Command::Check { pod } => check(control, &pod, as_json).await,
        Command::Explain {
            pod,
            target,
            agent,
            http,
        } => {
            let request = http
                .as_deref()
                .and_then(|h| Some((h.first()?.as_str(), h.get(1)?.as_str())));
            explain(&agent, &pod, (&target, request), as_json).await
        }
        Command::Agent { view, agent } => agent_view(&agent, view, as_json).await,
        Command::Denials { agent, pod } => denials(&agent, pod.as_deref(), as_json).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshctl: {e}");
            ExitCode::FAILURE
        }
    }
}
