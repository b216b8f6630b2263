//! Child processes of the harness: an `edge-session` node (the release
//! binary, embedded DynamoDB, a temporary `data_dir`, port 0) and
//! `redis-server` on a free loopback port. Both are stopped on drop, so the
//! whole comparison lives and dies in one process tree.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Keep the last 64 KiB of a child's output, to show when it fails.
fn capture(mut from: impl std::io::Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut out = into.lock().expect("output lock poisoned");
            out.push_str(&String::from_utf8_lossy(&buf[..n]));
            if out.len() > 128 * 1024 {
                let cut = out.len() - 64 * 1024;
                let cut = (cut..out.len())
                    .find(|i| out.is_char_boundary(*i))
                    .unwrap_or(cut);
                out.drain(..cut);
            }
        }
    });
}

/// SIGTERM (graceful), then SIGKILL after `grace`.
fn stop(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// A running `edge-session serve`.
pub struct Node {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl Node {
    /// Start `bin serve` (prefixed by `wrapper`, e.g. valgrind) in embedded
    /// mode with `data_dir` under `dir`, listening on 127.0.0.1:0, with one
    /// user `user_id` whose argon2 hash is `password_hash`.
    pub fn start(
        bin: &Path,
        wrapper: &[String],
        dir: &Path,
        user_id: &str,
        password_hash: &str,
    ) -> anyhow::Result<Node> {
        let config = dir.join("config.toml");
        let toml = format!(
            "data_dir = {}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[[auth.users]]\nuser_id = {}\npassword_hash = {}\nrole = \"member\"\n",
            toml_string(&dir.join("data").to_string_lossy()),
            toml_string(user_id),
            toml_string(password_hash),
        );
        std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command.args(["serve", "--config"]).arg(&config);
        Node::spawn(command, bin)
    }

    /// The harness's own hello-world server (`bin bench --serve-hello`) as a
    /// child process, so the ceiling crosses the same process boundary as
    /// the node does.
    pub fn hello(bin: &Path, workers: usize) -> anyhow::Result<Node> {
        let mut command = Command::new(bin);
        command
            .args(["bench", "--serve-hello", "--hello-workers"])
            .arg(workers.to_string());
        Node::spawn(command, bin)
    }

    /// Spawn `command` and wait for its `edge-session listening on` line.
    fn spawn(mut command: Command, bin: &Path) -> anyhow::Result<Node> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let output = Arc::new(Mutex::new(String::new()));
        capture(
            child.stderr.take().expect("stderr is piped"),
            Arc::clone(&output),
        );
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("edge-session listening on ") {
                    let _ = tx.send(url.to_owned());
                }
                let mut out = sink.lock().expect("output lock poisoned");
                out.push_str(&line);
                out.push('\n');
            }
        });
        let mut node = Node {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            output,
        };
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => anyhow::bail!(
                "edge-session printed no `listening` line within 120 s; its output:\n{}",
                node.output()
            ),
        };
        node.addr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected listening URL {url}"))?;
        Ok(node)
    }

    /// What the node printed so far (tail).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Under valgrind a graceful exit writes the profile: give it time.
        stop(&mut self.child, Duration::from_secs(60));
    }
}

/// `redis-server` on a free loopback port, without persistence.
pub struct Redis {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Where `program` is on `PATH` (or `program` itself if it is a path).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = Path::new(program);
    if path.components().count() > 1 {
        return path.is_file().then(|| path.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

impl Redis {
    /// Start `program` on a free port of 127.0.0.1 and wait for `PONG`.
    pub fn start(program: &Path) -> anyhow::Result<Redis> {
        // Ask the kernel for a free port, then hand it to redis-server.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new(program)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let output = Arc::new(Mutex::new(String::new()));
        capture(
            child.stderr.take().expect("stderr is piped"),
            Arc::clone(&output),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(addr).is_ok() {
                return Ok(Redis { child, addr });
            }
            if let Ok(Some(status)) = child.try_wait() {
                anyhow::bail!(
                    "redis-server exited ({status}): {}",
                    output.lock().map(|o| o.clone()).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                stop(&mut child, Duration::from_secs(2));
                anyhow::bail!("redis-server did not answer PING on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://ADDR`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

fn ping(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other("unexpected PING reply"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}
