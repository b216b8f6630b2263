//! Real nginx and Caddy as child processes: each runs its template from
//! `examples/forward-auth/` (the file the README shows), filled in, from its
//! own temporary directory, on a free 127.0.0.1 port, and is killed on drop.
//! And the app behind them: an HTTP server that answers 200 with the
//! identity headers it received.
//!
//! A missing binary fails the test with a message naming
//! `scripts/install-test-deps.sh`, which installs both.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// nginx with `auth_request`.
    Nginx,
    /// Caddy with `forward_auth`.
    Caddy,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
        }
    }

    /// The template, as users copy it.
    pub fn template(self) -> &'static str {
        match self {
            Kind::Nginx => include_str!("../../../examples/forward-auth/nginx.conf"),
            Kind::Caddy => include_str!("../../../examples/forward-auth/Caddyfile"),
        }
    }

    fn config_name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx.conf",
            Kind::Caddy => "Caddyfile",
        }
    }

    /// The command that runs `config` in the foreground, one process.
    fn command(self, binary: &Path, dir: &Path, config: &Path) -> Command {
        let mut cmd = Command::new(binary);
        match self {
            Kind::Nginx => {
                let globals = format!(
                    "daemon off; master_process off; pid {}/nginx.pid; error_log stderr;",
                    dir.display()
                );
                cmd.arg("-e").arg("stderr").arg("-p").arg(dir);
                cmd.arg("-c").arg(config).arg("-g").arg(globals);
            }
            Kind::Caddy => {
                cmd.args(["run", "--adapter", "caddyfile", "--config"]);
                cmd.arg(config);
                for var in ["HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"] {
                    cmd.env(var, dir);
                }
            }
        }
        cmd
    }
}

/// `name` on `PATH` or in an `sbin` directory (nginx lives in /usr/sbin,
/// which an unprivileged `PATH` may leave out).
fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: run scripts/install-test-deps.sh \
                 (it installs nginx and caddy) before the integration tests"
            )
        })
}

/// A port nobody listened on a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `template` with `{{KEY}}` replaced by each value; no placeholder may be
/// left.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    assert!(!out.contains("{{"), "a placeholder is left:\n{out}");
    out
}

/// A proxy process in front of an app, asking a node.
pub struct Proxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub kind: Kind,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Start `kind` asking the node at `node` (`host:port`) in front of the
    /// app at `upstream`. A port someone took in between is tried again.
    pub async fn start(kind: Kind, node: &str, upstream: SocketAddr) -> Proxy {
        let binary = find_binary(kind.binary());
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let listen = format!("127.0.0.1:{}", free_port());
            let config = dir.path().join(kind.config_name());
            let text = render(
                kind.template(),
                &[
                    ("LISTEN", &listen),
                    ("NODE", node),
                    ("UPSTREAM", &upstream.to_string()),
                    ("DIR", &dir.path().display().to_string()),
                ],
            );
            std::fs::write(&config, text).unwrap();
            let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
            let child = kind
                .command(&binary, dir.path(), &config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let mut proxy = Proxy {
                url: format!("http://{listen}"),
                kind,
                child,
                _dir: dir,
            };
            match proxy.until_listening(&listen).await {
                Ok(()) => return proxy,
                Err(log) if log.to_lowercase().contains("address already in use") => continue,
                Err(log) => panic!("{kind:?} did not start:\n{log}"),
            }
        }
        panic!("{kind:?}: no free port in five tries");
    }

    /// Wait until the proxy accepts connections; its log if it exited.
    async fn until_listening(&mut self, listen: &str) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            let addr = listen.parse().unwrap();
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{:?} not listening after 30 s:\n{}",
                self.kind,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the proxy wrote to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app behind the proxy: answers every request 200 with
/// `{"user": <X-Edge-User>, "identity": {<name>: [<values>]}}`, where
/// `identity` holds every header whose name, lower-cased with `_` read as
/// `-`, is one of the four identity headers, under the name it came with.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests that reached the app.
    pub hits: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl Upstream {
    pub fn start() -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let data = web::Data::from(hits.clone());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(echo))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Upstream { addr, hits, handle }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The stop command is sent at once; nothing here waits for it.
        drop(self.handle.stop(false));
    }
}

async fn echo(req: HttpRequest, hits: web::Data<AtomicUsize>) -> HttpResponse {
    hits.fetch_add(1, Ordering::SeqCst);
    let mut identity: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        let read_as = name.as_str().to_ascii_lowercase().replace('_', "-");
        if super::IDENTITY_HEADERS.contains(&read_as.as_str()) {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            identity.entry(name.to_string()).or_default().push(value);
        }
    }
    let user = req
        .headers()
        .get("x-edge-user")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    HttpResponse::Ok()
        .json(json!({ "user": user, "identity": identity, "path": req.uri().to_string() }))
}

/// A proxy that is not installed fails the test that needs it, naming the
/// script that installs it; it never skips.
#[test]
fn a_missing_proxy_fails_naming_the_install_script() {
    let panic = std::panic::catch_unwind(|| find_binary("edge-session-no-such-proxy"))
        .expect_err("a missing binary panics");
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("scripts/install-test-deps.sh"),
        "{message}"
    );
}
