//! `meshctl`: what ferrymesh is doing, for people (tables) and scripts (`-o json`).
//! Reads the control plane's admin API; `ns enable|disable` labels the namespace
//! through the Kubernetes API (as `kubectl label` would).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use bytes::Bytes;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
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
    /// Shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum NsAction {
    Enable { namespace: String },
    Disable { namespace: String },
}

async fn get(control: &str, path: &str) -> Result<(u16, Value), String> {
    let tcp = tokio::net::TcpStream::connect(control)
        .await
        .map_err(|e| format!("cannot reach the control plane admin API at {control}: {e}; is mesh-control running, and --control right?"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", control)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v = serde_json::from_slice(&body)
        .map_err(|e| format!("the admin API answered non-JSON: {e}"))?;
    Ok((status, v))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
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

async fn run(cli: Cli) -> Result<String, String> {
    let json = cli.output == Output::Json;
    let fetch = |path: String| {
        let control = cli.control.clone();
        async move {
            let (status, v) = get(&control, &path).await?;
            if status != 200 {
                return Err(s(&v["error"]));
            }
            Ok(v)
        }
    };
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
        Command::Status => {
            let v = fetch("/v1/status".into()).await?;
            if json {
                return Ok(format!("{v:#}"));
            }
            let rows: Vec<Vec<String>> = v["nodes"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(n, st)| {
                    vec![
                        n.clone(),
                        if st["connected"] == true {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        s(&st["sent_version"]),
                        s(&st["acked_version"]),
                        s(&st["last_error"]),
                    ]
                })
                .collect();
            Ok(format!(
                "config version {}\n{}",
                s(&v["version"]),
                table(&["NODE", "CONNECTED", "SENT", "ACKED", "LAST ERROR"], &rows)
            ))
        }
        Command::ConfigDump { node } => {
            let v = fetch(format!("/v1/config/{node}")).await?;
            if json {
                return Ok(format!("{v:#}"));
            }
            let mut out = format!("# config version {} for node {node}\n", s(&v["version"]));
            for o in v["objects"].as_array().into_iter().flatten() {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(&o["object"]).unwrap_or_default());
            }
            Ok(out)
        }
        Command::Check { pod } => {
            let (ns, name) = pod
                .split_once('/')
                .ok_or_else(|| format!("{pod:?}: give namespace/pod"))?;
            let v = fetch(format!("/v1/check/{ns}/{name}")).await?;
            if json {
                return Ok(format!("{v:#}"));
            }
            let list = |x: &Value| {
                let items: Vec<String> = x.as_array().into_iter().flatten().map(s).collect();
                if items.is_empty() {
                    "-".to_owned()
                } else {
                    items.join(", ")
                }
            };
            let policies: Vec<String> = v["authorization_policies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{} ({}{})",
                        s(&p["name"]),
                        s(&p["action"]),
                        if p["l7"] == true { ", L7" } else { "" }
                    )
                })
                .collect();
            let rows = vec![
                vec!["pod".into(), s(&v["pod"])],
                vec!["node".into(), s(&v["node"])],
                vec![
                    "captured".into(),
                    format!(
                        "{} ({})",
                        if v["captured"] == true { "yes" } else { "no" },
                        s(&v["reason"])
                    ),
                ],
                vec!["identity".into(), s(&v["identity"])],
                vec!["addresses".into(), list(&v["addresses"])],
                vec!["services".into(), list(&v["services"])],
                vec!["routes".into(), list(&v["routes"])],
                vec![
                    "policies".into(),
                    if policies.is_empty() {
                        "-".into()
                    } else {
                        policies.join(", ")
                    },
                ],
                vec![
                    "L7 (waypoint)".into(),
                    if v["l7"] == true {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                ],
            ];
            Ok(table(&["", ""], &rows)
                .lines()
                .skip(1)
                .collect::<Vec<_>>()
                .join("\n"))
        }
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
