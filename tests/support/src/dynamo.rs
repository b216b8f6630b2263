//! DynamoDB for tests: the endpoint every test of one process shares.
//!
//! Contract:
//! - [`endpoint`] is the integration suite's endpoint: the one named by
//!   `EDGE_SESSION_TEST_DYNAMODB_ENDPOINT` (a URL, or `aws` for real DynamoDB),
//!   or else one embedded server per test process, started on first use and
//!   never stopped, on a SQLite file under Cargo's temporary directory
//!   (`target/tmp/test-dynamodb/<pid>/`; each start removes what processes
//!   no longer alive left there).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use edge_session::embedded::EmbeddedDynamo;
use edge_session::sync::Endpoint;

/// How often an embedded server started here runs its TTL sweep (and trims
/// its stream log): often, so a test of expiry waits little.
const TTL_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The environment variable naming another endpoint than the embedded server.
pub const ENDPOINT_VAR: &str = "EDGE_SESSION_TEST_DYNAMODB_ENDPOINT";

/// The endpoint every test in this process shares (see the module doc).
pub fn endpoint() -> Endpoint {
    static SHARED: OnceLock<EmbeddedDynamo> = OnceLock::new();
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if url == "aws" => Endpoint::Aws,
        Ok(url) if !url.is_empty() => Endpoint::Url(url),
        _ => {
            let server = SHARED.get_or_init(|| {
                EmbeddedDynamo::start_file(&shared_file(), TTL_SWEEP_EVERY)
                    .expect("embedded DynamoDB starts")
            });
            Endpoint::Embedded(server.url())
        }
    }
}

/// The shared server's file: one directory per test process. A static is
/// never dropped, so each start removes what earlier processes (no longer
/// alive) left.
fn shared_file() -> PathBuf {
    let root = cargo_tmp().join("test-dynamodb");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let pid = entry.file_name();
            if !std::path::Path::new("/proc").join(&pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let mine = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&mine);
    mine.join("dynamodb.sqlite3")
}

/// Cargo's temporary directory (`CARGO_TARGET_TMPDIR`, `<target>/tmp`),
/// found from the running test binary (`<target>/<profile>/deps/<name>`):
/// Cargo names it only to the test's own compilation, not to this library.
/// The system's temporary directory for a binary that lives elsewhere.
fn cargo_tmp() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let deps = exe.as_deref().and_then(std::path::Path::parent);
    let target = deps
        .filter(|deps| deps.ends_with("deps"))
        .and_then(|deps| deps.parent()?.parent());
    target.map_or_else(std::env::temp_dir, |target| target.join("tmp"))
}
