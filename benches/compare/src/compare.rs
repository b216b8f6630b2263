//! One comparison run: [`start`](crate::start) the targets,
//! [`measure`](crate::measure) them, write the [`report`](crate::report),
//! stop everything. Blocks until it is done.

use std::time::Duration;

use anyhow::Context as _;

use crate::args::BenchArgs;
use crate::measure;
use crate::report;
use crate::results::{Logins, Timing};
use crate::start;

/// Run the whole comparison: the targets in an actix `System` on this
/// thread, the load generator on a runtime of its own.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rounds > 0 && args.login_rounds > 0,
        "--rounds and --login-rounds must be at least 1"
    );
    anyhow::ensure!(
        args.duration > 0.0 && args.warmup >= 0.0,
        "--duration must be positive and --warmup not negative"
    );
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("bench-load")
        .enable_all()
        .build()
        .context("load generator runtime")?;
    let handle = load.handle().clone();
    let result = actix_web::rt::System::new().block_on(compare(args, handle));
    load.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn compare(args: BenchArgs, load: tokio::runtime::Handle) -> anyhow::Result<()> {
    let wants = |what: &str| args.only.iter().any(|o| o == what);
    if cfg!(debug_assertions) {
        eprintln!("warning: this harness is a debug build; ./scripts/bench.sh builds and runs the release one");
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let timing = Timing {
        warmup: Duration::from_secs_f64(args.warmup),
        per_round: Duration::from_secs_f64(args.duration / args.rounds as f64),
    };
    let dir = tempfile::Builder::new()
        .prefix("edge-session-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let command: Vec<String> = std::env::args().collect();
    println!(
        "edge-session-bench: {} on {}, {} rounds × {:.1} s per scenario (+{:.1} s warm-up each), load generator: {} threads, peers: {workers} workers",
        report::today(),
        report::machine(),
        args.rounds,
        timing.per_round.as_secs_f64(),
        args.warmup,
        args.client_threads
    );
    println!("command: {}", command.join(" "));

    let started = start::start(&args, &load, dir.path(), workers).await?;
    let whoami = measure::whoami(&args, &load, &started.targets, timing).await?;
    let logins = if wants("login") {
        let node = started.node.as_ref();
        let form = started.form.clone();
        let action = started.gateway.as_ref().map(|g| g.proxy.addr);
        let dir = dir.path().join("login");
        measure::login(&args, &load, &dir, node, form, timing, action).await?
    } else {
        Logins {
            rows: Vec::new(),
            parts: Vec::new(),
        }
    };
    let notes: Vec<String> = [
        started.redis_note.clone(),
        started.gateway.as_ref().and_then(|g| g.note.clone()),
    ]
    .into_iter()
    .flatten()
    .chain(started.express.iter().flat_map(|e| e.notes.clone()))
    .collect();
    report::write(&args, workers, &whoami, &logins, &notes)?;
    report::targets(&args, &whoami, &logins.rows);
    started.shutdown().await;
    Ok(())
}
