//! Sockets inside pod network namespaces.
//!
//! The agent lives in its own (node) namespace. To own a socket in a pod's namespace
//! the current thread briefly enters that namespace with setns(2), creates the
//! socket and returns; the socket keeps its namespace for life and tokio serves it
//! from any thread.
use std::{
    fs::File,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use nix::sched::{setns, CloneFlags};
use socket2::{Domain, Socket, Type};

pub mod discover;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open network namespace {path}: {source}; is the pod still running and the path right (spec.netns)?")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {path}: {source}; the agent needs CAP_SYS_ADMIN")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("cannot return to the agent's own network namespace: {0}")]
    Return(nix::Error),
    #[error("socket operation in {path} failed: {what}: {source}")]
    Socket {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

/// The agent's own network namespace, captured once at start-up before any setns.
static HOME: OnceLock<File> = OnceLock::new();

pub fn init_home() -> io::Result<()> {
    let f = File::open("/proc/thread-self/ns/net")?;
    let _ = HOME.set(f);
    Ok(())
}

/// An open pod network namespace.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
    cookie: u64,
}

struct Return;
impl Drop for Return {
    fn drop(&mut self) {
        if let Some(home) = HOME.get() {
            // If this fails the thread would keep working in a pod namespace: abort
            // rather than create the agent's own sockets in the wrong place.
            if setns(home.as_fd(), CloneFlags::CLONE_NEWNET).is_err() {
                eprintln!("fatal: cannot return to the agent's network namespace");
                std::process::abort();
            }
        }
    }
}

impl Netns {
    pub fn open(path: &Path) -> Result<Netns, Error> {
        let file = File::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut ns = Netns {
            path: path.to_owned(),
            file,
            cookie: 0,
        };
        let probe = ns.marked_tcp(&SocketAddr::from(([0, 0, 0, 0], 0)), "socket")?;
        ns.cookie = netns_cookie(probe.as_fd()).map_err(|source| Error::Socket {
            path: path.to_owned(),
            what: "getsockopt(SO_NETNS_COOKIE)",
            source,
        })?;
        Ok(ns)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn cookie(&self) -> u64 {
        self.cookie
    }
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Run `f` with the calling thread inside this namespace.
    fn within<T>(&self, f: impl FnOnce() -> io::Result<T>, what: &'static str) -> Result<T, Error> {
        if HOME.get().is_none() {
            init_home().map_err(|source| Error::Socket {
                path: self.path.clone(),
                what: "open /proc/thread-self/ns/net",
                source,
            })?;
        }
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| Error::Enter {
            path: self.path.clone(),
            source,
        })?;
        let _back = Return;
        f().map_err(|source| Error::Socket {
            path: self.path.clone(),
            what,
            source,
        })
    }

    /// A non-blocking TCP socket in this namespace for `addr`'s family, carrying the
    /// agent's mark so the capture programs leave it alone.
    fn marked_tcp(&self, addr: &SocketAddr, what: &'static str) -> Result<Socket, Error> {
        self.within(
            || {
                let s = Socket::new(Domain::for_address(*addr), Type::STREAM.nonblocking(), None)?;
                s.set_mark(mesh_common::AGENT_MARK)?;
                Ok(s)
            },
            what,
        )
    }

    fn socket_err(&self, what: &'static str) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Socket {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// A TCP listener bound inside this namespace.
    pub fn listen(
        &self,
        addr: SocketAddr,
        v6_only: bool,
        backlog: i32,
    ) -> Result<std::net::TcpListener, Error> {
        let s = self.marked_tcp(&addr, "listen")?;
        (|| {
            s.set_reuse_address(true)?;
            if addr.is_ipv6() {
                s.set_only_v6(v6_only)?;
            }
            s.bind(&addr.into())?;
            s.listen(backlog)
        })()
        .map_err(self.socket_err("listen"))?;
        Ok(s.into())
    }

    /// A marked TCP socket in this namespace, optionally bound to `source`, ready to
    /// connect. The mark makes the capture programs leave it alone.
    pub fn outbound_socket(
        &self,
        remote: &SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<tokio::net::TcpSocket, Error> {
        let s = self.marked_tcp(remote, "outbound socket")?;
        (|| {
            s.set_tcp_nodelay(true)?;
            if let Some(src) = source {
                s.bind(&SocketAddr::new(src, 0).into())?;
            }
            Ok(())
        })()
        .map_err(self.socket_err("outbound socket"))?;
        Ok(tokio::net::TcpSocket::from_std_stream(s.into()))
    }
}

/// The network-namespace cookie of the namespace a socket lives in.
pub fn netns_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are valid for writes of the given size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}
