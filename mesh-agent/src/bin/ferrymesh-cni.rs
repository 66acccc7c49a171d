//! `ferrymesh-cni`: a chained CNI plugin (after the cluster's own) that holds a new
//! pod until its node's agent has taken its network namespace, so that a pod in a
//! meshed namespace never sends or receives a byte around the mesh, as istio-cni
//! does for ztunnel. Called by the runtime with CNI_COMMAND, CNI_NETNS, CNI_IFNAME,
//! CNI_ARGS and the network config (with `prevResult`) on stdin.
//!
//! ADD asks the agent over its unix socket (`agentSocket` in the config) and fails
//! with CNI error 11 ("try again later") while no agent answers: the runtime
//! retries the sandbox. DEL tells the agent, and never fails (a pod must always be
//! deletable). VERSION and CHECK answer as the spec says.
#![forbid(unsafe_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::IpAddr,
    os::unix::net::UnixStream,
    process::ExitCode,
    time::Duration,
};

use mesh_agent::cni::{Command, Reply, Request};
use serde_json::{json, Value};

const SUPPORTED: [&str; 4] = ["0.4.0", "1.0.0", "1.1.0", "0.3.1"];
/// CNI's "try again later".
const TRY_AGAIN: u32 = 11;
/// CNI's "invalid network config".
const BAD_CONFIG: u32 = 7;

struct Failure {
    code: u32,
    msg: String,
}

fn arg(args: &str, name: &str) -> Option<String> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The pod's addresses from the previous plugin's result.
fn ips(prev: &Value) -> Vec<IpAddr> {
    prev["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}

fn ask(socket: &str, req: &Request) -> Result<Reply, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("the node agent at {socket} does not answer ({e}); is ferrymesh-agent running on this node?"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| format!("writing to the node agent: {e}"))?;
    let mut reply = String::new();
    BufReader::new(s.take(64 * 1024))
        .read_line(&mut reply)
        .map_err(|e| format!("reading the node agent's reply: {e}"))?;
    serde_json::from_str(&reply).map_err(|e| format!("the node agent's reply: {e}"))
}

fn run(command: &str, config: &Value) -> Result<Option<Value>, Failure> {
    let version = config["cniVersion"].as_str().unwrap_or("1.0.0").to_owned();
    let command = match command {
        "VERSION" => {
            return Ok(Some(
                json!({"cniVersion": version, "supportedVersions": SUPPORTED}),
            ))
        }
        "CHECK" | "GC" | "STATUS" => return Ok(None),
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        other => {
            return Err(Failure {
                code: 4,
                msg: format!("CNI_COMMAND {other:?} is not supported"),
            })
        }
    };
    let prev = config
        .get("prevResult")
        .cloned()
        .unwrap_or(json!({"cniVersion": version}));
    let args = std::env::var("CNI_ARGS").unwrap_or_default();
    let (Some(namespace), Some(pod)) =
        (arg(&args, "K8S_POD_NAMESPACE"), arg(&args, "K8S_POD_NAME"))
    else {
        // Not a Kubernetes pod: nothing to hold.
        return Ok((command == Command::Add).then_some(prev));
    };
    let socket = config["agentSocket"].as_str().ok_or(Failure {
        code: BAD_CONFIG,
        msg: "the plugin's config has no agentSocket".into(),
    })?;
    let req = Request {
        command,
        netns: std::env::var("CNI_NETNS").unwrap_or_default().into(),
        namespace,
        pod,
        ips: ips(&prev),
    };
    match (command, ask(socket, &req)) {
        (Command::Add, Ok(r)) if r.ok => Ok(Some(prev)),
        (Command::Add, Ok(r)) => Err(Failure {
            code: TRY_AGAIN,
            msg: r.message,
        }),
        (Command::Add, Err(e)) => Err(Failure {
            code: TRY_AGAIN,
            msg: e,
        }),
        (Command::Del, Ok(_)) => Ok(None),
        (Command::Del, Err(e)) => {
            eprintln!("ferrymesh-cni: DEL: {e} (ignored: a pod must stay deletable)");
            Ok(None)
        }
    }
}

fn main() -> ExitCode {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut text = String::new();
    let _ = std::io::stdin().take(1 << 20).read_to_string(&mut text);
    let config: Value = if text.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                println!(
                    "{}",
                    json!({"cniVersion": "1.0.0", "code": BAD_CONFIG, "msg": format!("network config is not JSON: {e}")})
                );
                return ExitCode::FAILURE;
            }
        }
    };
    match run(&command, &config) {
        Ok(out) => {
            if let Some(v) = out {
                println!("{v}");
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            let version = config["cniVersion"].as_str().unwrap_or("1.0.0");
            println!(
                "{}",
                json!({"cniVersion": version, "code": f.code, "msg": f.msg})
            );
            ExitCode::FAILURE
        }
    }
}
