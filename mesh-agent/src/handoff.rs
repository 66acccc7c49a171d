//! Hitless upgrade: a new agent on the node takes the running agent's listening
//! sockets (every enrolled pod's outbound, inbound and HBONE listeners) over a
//! unix SOCK_SEQPACKET socket with SCM_RIGHTS, as Envoy's hot restart and
//! HAProxy's seamless reload pass theirs. The sockets are the same kernel objects,
//! so nothing queued in an accept backlog is lost and the sk_lookup map keeps
//! pointing at them; the old agent stops accepting and drains what it serves.
//!
//! One message per pod: a JSON header and its descriptors in order (outbound
//! IPv4, outbound IPv6 if `out6`, inbound, HBONE); one with `admin` and the admin
//! and metrics listeners; then `{"done":true}`.
use std::{
    collections::HashMap,
    io::{IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use nix::{
    cmsg_space,
    sys::socket::{
        accept, bind, connect, listen, recvmsg, sendmsg, socket, AddressFamily, Backlog,
        ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    },
};
use serde::{Deserialize, Serialize};

/// The name of the socket in the agent's state directory.
pub const SOCKET: &str = "handoff.sock";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("handoff socket {path}: {source}")]
    Socket { path: String, source: nix::Error },
    #[error("handoff: {0}")]
    Protocol(String),
}

/// What one pod's message says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    #[serde(default)]
    key: String,
    #[serde(default)]
    cookie: u64,
    #[serde(default)]
    out6: bool,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    done: bool,
}

/// What a successor takes over.
#[derive(Debug, Default)]
pub struct Takeover {
    pub pods: HashMap<String, PodListeners>,
    /// The admin and metrics listeners, in that order (empty: bind new ones).
    pub admin: Vec<std::net::TcpListener>,
}

/// A pod's listening sockets, as handed over.
#[derive(Debug)]
pub struct PodListeners {
    /// The pod's netns cookie: they are used only for the same namespace.
    pub cookie: u64,
    pub out4: std::net::TcpListener,
    pub out6: Option<std::net::TcpListener>,
    pub inbound: std::net::TcpListener,
    pub hbone: std::net::TcpListener,
}

/// Duplicates of a pod's listeners the running agent keeps to hand over.
#[derive(Debug)]
pub struct Kept {
    pub cookie: u64,
    pub out4: OwnedFd,
    pub out6: Option<OwnedFd>,
    pub inbound: OwnedFd,
    pub hbone: OwnedFd,
}

fn sock_err(path: &Path) -> impl Fn(nix::Error) -> Error + '_ {
    move |source| Error::Socket {
        path: path.display().to_string(),
        source,
    }
}

fn seqpacket() -> nix::Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

/// The running agent's side: a listening socket at `path` (a stale one is
/// replaced; only root may connect).
pub fn listen_at(path: &Path) -> Result<OwnedFd, Error> {
    let e = sock_err(path);
    let _ = std::fs::remove_file(path);
    let fd = seqpacket().map_err(&e)?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path).map_err(&e)?).map_err(&e)?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    listen(&fd, Backlog::new(1).map_err(&e)?).map_err(&e)?;
    Ok(fd)
}

fn send(fd: RawFd, h: &Header, fds: &[RawFd]) -> nix::Result<()> {
    let body = serde_json::to_vec(h).unwrap_or_default();
    let iov = [IoSlice::new(&body)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<UnixAddr>(fd, &iov, cmsgs, MsgFlags::empty(), None).map(|_| ())
}

/// Accepts one successor on `listener` (blocking) and sends it every pod in
/// `kept`. Returns once all were sent: from then on the successor accepts too.
pub fn serve_one(
    listener: &OwnedFd,
    kept: &[(String, std::sync::Arc<Kept>)],
    admin: &[OwnedFd],
) -> Result<usize, Error> {
    let e = |source| Error::Socket {
        path: SOCKET.into(),
        source,
    };
    let conn = accept(listener.as_raw_fd()).map_err(e)?;
    // SAFETY: accept returned a new descriptor that nothing else owns.
    let conn = unsafe { OwnedFd::from_raw_fd(conn) };
    for (key, k) in kept {
        let mut fds = vec![k.out4.as_raw_fd()];
        fds.extend(k.out6.as_ref().map(|f| f.as_raw_fd()));
        fds.extend([k.inbound.as_raw_fd(), k.hbone.as_raw_fd()]);
        let h = Header {
            key: key.clone(),
            cookie: k.cookie,
            out6: k.out6.is_some(),
            admin: false,
            done: false,
        };
        send(conn.as_raw_fd(), &h, &fds).map_err(e)?;
    }
    if !admin.is_empty() {
        let fds: Vec<RawFd> = admin.iter().map(|f| f.as_raw_fd()).collect();
        let h = Header {
            key: String::new(),
            cookie: 0,
            out6: false,
            admin: true,
            done: false,
        };
        send(conn.as_raw_fd(), &h, &fds).map_err(e)?;
    }
    let done = Header {
        key: String::new(),
        cookie: 0,
        out6: false,
        admin: false,
        done: true,
    };
    send(conn.as_raw_fd(), &done, &[]).map_err(e)?;
    Ok(kept.len())
}

fn listener(fd: OwnedFd) -> std::net::TcpListener {
    std::net::TcpListener::from(fd)
}

/// One message: its header and descriptors.
fn receive(fd: &OwnedFd) -> Result<(Header, Vec<OwnedFd>), Error> {
    let mut buf = [0u8; 4096];
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = cmsg_space!([RawFd; 4]);
        let msg = recvmsg::<UnixAddr>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|source| Error::Socket {
            path: SOCKET.into(),
            source,
        })?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|e| Error::Protocol(e.to_string()))? {
            if let ControlMessageOwned::ScmRights(v) = c {
                // SAFETY: SCM_RIGHTS installed these descriptors in this process for us.
                fds.extend(v.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        (msg.bytes, fds)
    };
    let h: Header =
        serde_json::from_slice(&buf[..n]).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok((h, fds))
}

/// The successor's side: takes the running agent's listeners, by pod key. None
/// when no agent answers at `path` (a first start, or after a crash).
pub fn take_over(path: &Path) -> Result<Option<Takeover>, Error> {
    let e = sock_err(path);
    let fd = seqpacket().map_err(&e)?;
    let addr = UnixAddr::new(path).map_err(&e)?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(nix::Error::ENOENT | nix::Error::ECONNREFUSED) => return Ok(None),
        Err(err) => return Err(e(err)),
    }
    let mut out = Takeover::default();
    loop {
        let (h, fds) = receive(&fd)?;
        if h.done {
            return Ok(Some(out));
        }
        if h.admin {
            out.admin = fds.into_iter().map(listener).collect();
            continue;
        }
        let want = if h.out6 { 4 } else { 3 };
        if fds.len() != want {
            return Err(Error::Protocol(format!(
                "{} descriptors for {}, expected {want}",
                fds.len(),
                h.key
            )));
        }
        let mut it = fds.into_iter();
        let mut next = || it.next().map(listener);
        let (Some(out4), out6, Some(inbound), Some(hbone)) =
            (next(), if h.out6 { next() } else { None }, next(), next())
        else {
            return Err(Error::Protocol(format!(
                "descriptors missing for {}",
                h.key
            )));
        };
        out.pods.insert(
            h.key,
            PodListeners {
                cookie: h.cookie,
                out4,
                out6,
                inbound,
                hbone,
            },
        );
    }
}

/// Duplicates of `fds`' sockets, to hand over later.
pub fn keep(
    cookie: u64,
    out4: &impl AsFd,
    out6: Option<&impl AsFd>,
    inbound: &impl AsFd,
    hbone: &impl AsFd,
) -> std::io::Result<Kept> {
    let dup = |f: &dyn AsFd| f.as_fd().try_clone_to_owned();
    Ok(Kept {
        cookie,
        out4: dup(out4)?,
        out6: out6.map(|f| dup(f)).transpose()?,
        inbound: dup(inbound)?,
        hbone: dup(hbone)?,
    })
}
