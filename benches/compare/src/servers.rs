//! Child processes of the harness: an `edge-session` node (the release
//! binary, embedded DynamoDB, a temporary `data_dir`, port 0), the hello-world
//! ceiling (this binary's `serve-hello`) and `redis-server` on a free loopback
//! port. All are stopped on drop, so the whole comparison lives and dies in
//! one process tree.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use edge_session_test_support::child::{capture, stop, Node, OnDrop, Options};

/// Output kept of a child (the tail), to show when it fails.
const KEEP_OUTPUT: usize = 64 * 1024;

/// How the harness runs a server child: up to 120 s to start; stopped with
/// SIGTERM, given 60 s (under valgrind a graceful exit writes the profile).
fn options() -> Options {
    Options {
        ready_within: Duration::from_secs(120),
        exit_within: Duration::from_secs(60),
        on_drop: OnDrop::Terminate,
        keep_output: Some(KEEP_OUTPUT),
        show_output: false,
    }
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// The `edge-session` binary beside this executable (same target directory
/// and profile): what `cargo build --release` put there.
pub fn default_server_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating this executable")?;
    let bin = me.with_file_name(format!("edge-session{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        bin.is_file(),
        "no edge-session binary at {} (build it with `cargo build --release -p edge-session`, or pass --server-bin)",
        bin.display()
    );
    Ok(bin)
}

/// Start `bin serve` (prefixed by `wrapper`, e.g. valgrind) in embedded
/// mode with `data_dir` under `dir`, listening on 127.0.0.1:0, with one user
/// `user_id` whose argon2 hash is `password_hash`; `extra` is appended to
/// its config (more sections).
pub fn start_node(
    bin: &Path,
    wrapper: &[String],
    dir: &Path,
    user: (&str, &str),
    extra: &str,
) -> anyhow::Result<Node> {
    let config = dir.join("config.toml");
    let (user_id, password_hash) = user;
    let toml = format!(
        // The login budgets raised: the harness signs one user in as fast
        // as it can, on purpose (the budgets have their own tests).
        "data_dir = {}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[auth]\nper_ip_per_minute = 1000000\nper_ip_burst = 100000\nper_account_per_minute = 1000000\nper_account_burst = 100000\n\n[[auth.users]]\nuser_id = {}\npassword_hash = {}\nrole = \"member\"\n\n{extra}",
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
    Node::spawn(command, options())
}

/// The harness's own hello-world server (`edge-session-bench serve-hello`)
/// as a child process, so the ceiling crosses the same process boundary as
/// the node does.
/// With `action_secret`, it also signs the bench user's login action.
pub fn start_hello(workers: usize, action_secret: Option<&str>) -> anyhow::Result<Node> {
    let me = std::env::current_exe().context("locating this executable")?;
    let mut command = Command::new(&me);
    command
        .args(["serve-hello", "--workers"])
        .arg(workers.to_string());
    if let Some(secret) = action_secret {
        command.env(crate::peers::ACTION_SECRET_ENV, secret);
    }
    Node::spawn(command, options()).context("starting the hello-world ceiling")
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
        let child = Command::new(program)
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
        let child = wait_ready(child, "redis-server", || ping(addr).is_ok())
            .with_context(|| format!("redis-server did not answer PING on {addr}"))?;
        Ok(Redis { child, addr })
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

/// nginx (Debian's binary, run unprivileged as a child with its own prefix
/// directory) on a free loopback port, with the configuration `conf` makes
/// of its port and prefix directory.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Nginx {
    /// Start `program` with the configuration `conf(port, dir)` written into
    /// `dir`, and wait until it accepts connections.
    pub fn start(
        program: &Path,
        dir: &Path,
        conf: impl Fn(u16, &Path) -> String,
    ) -> anyhow::Result<Nginx> {
        std::fs::create_dir_all(dir.join("logs"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf(port, dir))?;
        let child = Command::new(program)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .arg("-g")
            .arg(format!(
                "daemon off; pid {}/nginx.pid; error_log stderr warn;",
                dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let child = wait_ready(child, "nginx", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .with_context(|| format!("nginx did not accept connections on {addr}"))?;
        Ok(Nginx { child, addr })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}

/// Wait up to 10 s for `ready` while `child` (named `name`, its stderr piped)
/// runs; stop it and fail with its output if it exits or is not ready.
fn wait_ready(mut child: Child, name: &str, ready: impl Fn() -> bool) -> anyhow::Result<Child> {
    let output = Arc::new(Mutex::new(String::new()));
    capture(
        child.stderr.take().expect("stderr is piped"),
        Arc::clone(&output),
        Some(KEEP_OUTPUT),
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ready() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!(
                "{name} exited ({status}): {}",
                output.lock().map(|o| o.clone()).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            stop(&mut child, Duration::from_secs(2));
            anyhow::bail!("{name} was not ready within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
