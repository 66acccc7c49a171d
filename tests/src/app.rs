//! A lab-app process running as a pod's application. Its stdout is read line by
//! line; its stderr is kept and shown in the error of an unexpected failure (and
//! when a test panics), so that an expected failure stays one line.
use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin},
    sync::{
        mpsc::{Receiver, RecvTimeoutError},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub struct App {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl App {
    pub(crate) fn new(name: String, mut child: Child) -> App {
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let keep = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    keep.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        App {
            name,
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            stderr,
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// The next output line, waiting up to `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => {
                self.seen.push(l.clone());
                Ok(l)
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "{}: no output within {timeout:?} (so far: {:?})",
                self.name,
                self.seen
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                bail!(
                    "{}: exited ({status:?}) after printing {:?}; stderr: {}",
                    self.name,
                    self.seen,
                    self.stderr()
                )
            }
        }
    }

    /// Waits for a line that starts with `prefix`.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.next_line(left)?;
            if l.starts_with(prefix) {
                return Ok(l);
            }
        }
    }

    /// Lines printed so far without waiting.
    pub fn drain(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.clone()
    }

    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for exit and returns the last JSON line it printed.
    pub fn json_result(mut self, timeout: Duration) -> Result<serde_json::Value> {
        self.stdin.take();
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with('{') {
                        last = Some(l);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{}: still running after {timeout:?}", self.name)
                }
            }
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!(
                "{}: failed ({status}); output {:?}; stderr: {}",
                self.name,
                self.seen,
                self.stderr()
            );
        }
        let l = last.with_context(|| format!("{}: printed no result", self.name))?;
        Ok(serde_json::from_str(&l)?)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr();
        if std::thread::panicking() && !stderr.is_empty() {
            eprintln!("--- stderr of {} ---\n{stderr}", self.name);
        }
    }
}
