//! The node agent's side of the chained CNI plugin (`ferrymesh-cni`): before a new
//! pod's containers start, the runtime's ADD asks the agent, over a unix socket, to
//! take the pod's network namespace; the agent enters it in the kernel as blocked
//! (nothing leaves or reaches it around the mesh) and enrols it fully once the
//! pod's workload is in its config. ADD fails, and the runtime retries, while no
//! agent answers: a pod in a meshed namespace never runs uncaptured. DEL lets go.
//!
//! One JSON line each way per connection.
use std::{net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
    sync::{mpsc, oneshot},
};

/// The socket's name in the agent's state directory.
pub const SOCKET: &str = "cni.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    /// CNI_NETNS.
    pub netns: PathBuf,
    /// K8S_POD_NAMESPACE / K8S_POD_NAME from CNI_ARGS.
    pub namespace: String,
    pub pod: String,
    /// The pod's addresses, from the previous plugin's result.
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            message: message.into(),
        }
    }
}

/// A request for the agent's loop, which owns the enroller.
pub type Asked = (Request, oneshot::Sender<Reply>);

/// Serves the socket at `path` (replacing a stale one; root only), handing each
/// request to `to` and writing its reply.
pub fn serve(path: PathBuf, to: mpsc::Sender<Asked>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let to = to.clone();
            tokio::spawn(async move {
                let (r, mut w) = conn.into_split();
                let mut line = String::new();
                // One bounded line: a request is a few hundred bytes.
                let mut r = BufReader::new(tokio::io::AsyncReadExt::take(r, 64 * 1024));
                let reply = match r.read_line(&mut line).await {
                    Ok(_) => match serde_json::from_str::<Request>(&line) {
                        Ok(req) => {
                            let (tx, rx) = oneshot::channel();
                            if to.send((req, tx)).await.is_err() {
                                Reply::failed("the agent is stopping")
                            } else {
                                rx.await
                                    .unwrap_or_else(|_| Reply::failed("the agent is stopping"))
                            }
                        }
                        Err(e) => Reply::failed(format!("bad request: {e}")),
                    },
                    Err(e) => Reply::failed(format!("reading the request: {e}")),
                };
                let mut out = serde_json::to_vec(&reply).unwrap_or_default();
                out.push(b'\n');
                let _ = w.write_all(&out).await;
            });
        }
    });
    Ok(())
}
