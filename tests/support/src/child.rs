//! A server as a child process: an `edge-session` node (or any program
//! printing the same `edge-session listening on URL` line), its output
//! captured, stopped with SIGTERM or SIGKILL.
//!
//! Contract:
//! - [`Node::spawn`] returns once the child printed its listening line on
//!   stdout, within [`Options::ready_within`]; otherwise an error carrying
//!   the output so far (and the child is stopped).
//! - Everything the child writes to stdout and stderr is kept (or its last
//!   [`Options::keep_output`] bytes) and readable with [`Node::output`].
//! - Dropping a `Node` never leaves the child running: [`OnDrop::Kill`]
//!   kills it at once (a crash, SIGKILL), [`OnDrop::Terminate`] sends
//!   SIGTERM and kills it after [`Options::exit_within`]. When the dropping
//!   thread panics (or [`Options::show_output`] is set) the tail of its
//!   output is printed to stderr.
//!
//! The integration tests start the `edge-session` binary with it, and the
//! bench harness starts every server it measures with it.

use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The line a server prints on stdout once it accepts connections; the URL
/// follows it.
pub const LISTENING: &str = "edge-session listening on ";

/// The same line, as the other servers the bench harness starts print it
/// (the Express peers).
pub const OTHER_LISTENING: &str = "listening on ";

/// Lines of output printed when a dropped node shows its output.
const TAIL_LINES: usize = 4000;

/// What dropping a [`Node`] does to the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDrop {
    /// SIGKILL at once, then reap: a crash.
    Kill,
    /// SIGTERM (a graceful exit), SIGKILL after [`Options::exit_within`].
    Terminate,
}

/// How a [`Node`] is waited for, stopped and shown.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long the listening line may take.
    pub ready_within: Duration,
    /// How long a SIGTERM'd child may take to exit.
    pub exit_within: Duration,
    /// What dropping the node does.
    pub on_drop: OnDrop,
    /// Output bytes kept (the tail); `None` keeps everything.
    pub keep_output: Option<usize>,
    /// Print the tail of the output on drop even when not panicking.
    pub show_output: bool,
}

/// A running child server.
pub struct Node {
    child: Child,
    /// The URL of its listening line (`http://127.0.0.1:PORT`, or `https://`).
    pub url: String,
    /// The socket address of that URL.
    pub addr: SocketAddr,
    output: Arc<Mutex<String>>,
    /// One message from each output reader when its stream closes (in a
    /// mutex so that a `Node` is `Sync`: tests hold `&Node` across awaits).
    drained: Mutex<Receiver<()>>,
    options: Options,
}

impl Node {
    /// Spawn `command` (its stdin null, stdout and stderr captured here) and
    /// wait for its listening line.
    pub fn spawn(mut command: Command, options: Options) -> anyhow::Result<Node> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let output = Arc::new(Mutex::new(String::new()));
        let (done, drained) = channel();
        capture(
            child.stderr.take().expect("stderr is piped"),
            Arc::clone(&output),
            options.keep_output,
            Some(done.clone()),
        );
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = channel();
        let sink = Arc::clone(&output);
        let keep = options.keep_output;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // A node's line, or the plain one other servers print.
                let url = line
                    .strip_prefix(LISTENING)
                    .or_else(|| line.strip_prefix(OTHER_LISTENING));
                if let Some(url) = url {
                    let _ = tx.send(url.to_owned());
                }
                append(&sink, &format!("{line}\n"), keep);
            }
            let _ = done.send(());
        });
        let ready_within = options.ready_within;
        let mut node = Node {
            child,
            url: String::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            output,
            drained: Mutex::new(drained),
            options,
        };
        let Ok(url) = rx.recv_timeout(ready_within) else {
            anyhow::bail!(
                "{program} printed no `{}` line within {} s; its output:\n{}",
                LISTENING.trim_end(),
                ready_within.as_secs(),
                node.output()
            );
        };
        node.addr = url
            .split_once("://")
            .and_then(|(_, addr)| addr.parse().ok())
            .with_context(|| format!("unexpected listening URL {url}"))?;
        node.url = url;
        Ok(node)
    }

    /// `path` on this node: its URL followed by `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// What the child printed so far (the kept tail).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// SIGTERM, then wait (up to [`Options::exit_within`]) for the exit
    /// status; returns it with the whole output, read to its end.
    pub fn terminate(mut self) -> anyhow::Result<(ExitStatus, String)> {
        sigterm(&self.child)?;
        let within = self.options.exit_within;
        let Some(status) = wait_for_exit(&mut self.child, within)? else {
            anyhow::bail!(
                "{} did not exit within {} s of SIGTERM",
                self.url,
                within.as_secs()
            );
        };
        // The streams close with the process: read them to their end.
        let deadline = Instant::now() + Duration::from_secs(5);
        if let Ok(drained) = self.drained.lock() {
            for _ in 0..2 {
                let left = deadline.saturating_duration_since(Instant::now());
                if drained.recv_timeout(left).is_err() {
                    break;
                }
            }
        }
        Ok((status, self.output()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        match self.options.on_drop {
            OnDrop::Kill => {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
            OnDrop::Terminate => stop(&mut self.child, self.options.exit_within),
        }
        if std::thread::panicking() || self.options.show_output {
            let output = self.output();
            let tail: Vec<&str> = output.lines().rev().take(TAIL_LINES).collect();
            eprintln!("--- last lines of node {} ---", self.url);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Append `text` to `sink`, keeping about the last `keep` bytes (`None`:
/// everything).
fn append(sink: &Mutex<String>, text: &str, keep: Option<usize>) {
    let Ok(mut out) = sink.lock() else { return };
    out.push_str(text);
    if let Some(keep) = keep {
        if out.len() > 2 * keep {
            let cut = out.len() - keep;
            let cut = (cut..out.len())
                .find(|i| out.is_char_boundary(*i))
                .unwrap_or(cut);
            out.drain(..cut);
        }
    }
}

/// Read `from` to its end on a thread of its own, into `into` (see
/// [`append`]); signal `done` when it closes.
pub fn capture(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    keep: Option<usize>,
    done: Option<Sender<()>>,
) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            append(&into, &String::from_utf8_lossy(&buf[..n]), keep);
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    });
}

/// Send SIGTERM to `child` (through `kill(1)`: std has no signal call).
fn sigterm(child: &Child) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .context("running kill -TERM")?;
    anyhow::ensure!(
        status.success(),
        "kill -TERM {} failed: {status}",
        child.id()
    );
    Ok(())
}

/// Poll `child` until it exits (`Some(status)`) or `within` passes (`None`).
fn wait_for_exit(child: &mut Child, within: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM (graceful), then SIGKILL after `grace`; reaps the child.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if sigterm(child).is_ok() {
        if let Ok(Some(_)) = wait_for_exit(child, grace) {
            return;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
