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
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use nix::sched::{setns, CloneFlags};

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
        let probe = ns.socket(libc::AF_INET, libc::SOCK_STREAM)?;
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

    /// A new (unbound, unconnected, non-blocking, close-on-exec) socket in this namespace.
    pub fn socket(&self, domain: i32, ty: i32) -> Result<OwnedFd, Error> {
        self.within(|| raw_socket(domain, ty), "socket")
    }

    /// A TCP listener bound inside this namespace.
    pub fn listen(
        &self,
        addr: SocketAddr,
        v6_only: bool,
        backlog: i32,
    ) -> Result<std::net::TcpListener, Error> {
        self.within(
            || {
                let domain = if addr.is_ipv4() {
                    libc::AF_INET
                } else {
                    libc::AF_INET6
                };
                let fd = raw_socket(domain, libc::SOCK_STREAM)?;
                set_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
                set_int(
                    fd.as_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    mesh_common::AGENT_MARK as i32,
                )?;
                if addr.is_ipv6() {
                    set_int(
                        fd.as_fd(),
                        libc::IPPROTO_IPV6,
                        libc::IPV6_V6ONLY,
                        v6_only as i32,
                    )?;
                }
                let std_sock = socket2_bind(fd, addr)?;
                // SAFETY: fd is a valid bound socket we own.
                if unsafe { libc::listen(std_sock.as_raw_fd(), backlog) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(std::net::TcpListener::from(std_sock))
            },
            "listen",
        )
    }

    /// A marked TCP socket in this namespace, optionally bound to `source`, ready to
    /// connect. The mark makes the capture programs leave it alone.
    pub fn outbound_socket(
        &self,
        remote: &SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<tokio::net::TcpSocket, Error> {
        let fd = self.within(
            || {
                let domain = if remote.is_ipv4() {
                    libc::AF_INET
                } else {
                    libc::AF_INET6
                };
                let fd = raw_socket(domain, libc::SOCK_STREAM)?;
                set_int(
                    fd.as_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    mesh_common::AGENT_MARK as i32,
                )?;
                set_int(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
                if let Some(src) = source {
                    return socket2_bind(fd, SocketAddr::new(src, 0));
                }
                Ok(fd)
            },
            "outbound socket",
        )?;
        Ok(tokio::net::TcpSocket::from_std_stream(
            std::net::TcpStream::from(fd),
        ))
    }
}

fn raw_socket(domain: i32, ty: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn set_int(fd: BorrowedFd<'_>, level: i32, opt: i32, v: i32) -> io::Result<()> {
    // SAFETY: v outlives the call; the length matches.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn socket2_bind(fd: OwnedFd, addr: SocketAddr) -> io::Result<OwnedFd> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of `len` bytes.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
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
