//! `--poll`: sockets are non-blocking and every read and write waits in poll(2),
//! as an epoll application's do (the loopback fast path is for those: the
//! kernel's sockmap receive path can answer EAGAIN to a blocking reader).
use std::{
    io::{self, Read, Write},
    net::TcpStream,
    os::fd::AsFd,
    sync::atomic::{AtomicBool, Ordering},
};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

static POLL: AtomicBool = AtomicBool::new(false);

/// Every connection from here on is non-blocking and polled.
pub fn enable() {
    POLL.store(true, Ordering::Relaxed);
}

/// A connection, blocking or polled as `--poll` says.
pub struct Conn(pub TcpStream);

impl Conn {
    pub fn new(c: TcpStream) -> io::Result<Conn> {
        if POLL.load(Ordering::Relaxed) {
            c.set_nonblocking(true)?;
        }
        Ok(Conn(c))
    }

    fn wait(&self, flags: PollFlags) -> io::Result<()> {
        let mut fds = [PollFd::new(self.0.as_fd(), flags)];
        poll(&mut fds, PollTimeout::NONE).map_err(io::Error::from)?;
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(PollFlags::POLLIN)?,
                r => return r,
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(PollFlags::POLLOUT)?,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
