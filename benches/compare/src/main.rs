//! `edge-session-bench`: edge-session against its peers, side by side, in
//! one run and one process tree. The node under test is the product's
//! `edge-session` binary (release), found beside this one or passed with
//! `--server-bin`.
//!
//! # Layout
//!
//! - [`compare`]: one run: [`start`] the targets, [`measure`] them, write the
//!   [`report`].
//! - [`load`]: the load generator (keep-alive HTTP/1.1, closed loop, HDR
//!   histograms) and the batch driver for store operations.
//! - [`process`]: child processes: the `edge-session` node under test
//!   (release binary, embedded DynamoDB, temporary `data_dir`, port 0), the
//!   hello-world ceiling (this binary's `serve-hello`) and `redis-server`.
//! - [`peers`]: servers the harness runs itself: the actix-web hello world
//!   (the HTTP ceiling) and actix-session 0.11 over Redis.
//! - [`login`]: `regenerate` beside the raw `TransactWriteItems` it wraps.
//! - [`report`]: tables, CSV, the SVG latency plot, the targets.
//!
//! Every scenario runs once per round, the targets in a rotated order, so
//! each round holds all of them side by side; throughput ratios are the
//! median of the per-round ratios. The machine is shared and noisy: read the
//! ratios, not the absolute numbers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod compare;
mod load;
mod login;
mod measure;
mod peers;
mod process;
mod report;
mod start;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edge-session-bench",
    about = "Measure `GET /whoami` and login against the HTTP ceiling and actix-session + Redis, side by side (see docs/performance.md)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    args: BenchArgs,
}

#[derive(Subcommand)]
enum Mode {
    /// Serve only the hello-world ceiling, until SIGTERM (the harness runs
    /// itself with this as a child process).
    ServeHello {
        /// actix workers (0: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
}

/// Flags of a comparison run.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Seconds measured per scenario, split evenly over the rounds.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// Seconds of unrecorded warm-up before each measured slice.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rounds: each scenario runs once per round, beside all the others.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Connections for `GET /whoami` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// Rounds of the login comparison (short, alternating: the disk is
    /// shared and noisy, the median of many round ratios is not).
    #[arg(long, default_value_t = 10)]
    login_rounds: usize,
    /// Concurrency levels of the login comparison (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    login_concurrency: Vec<usize>,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// The edge-session binary to measure (default: `edge-session` beside
    /// this executable, i.e. in the same target directory and profile).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// A second edge-session binary (e.g. a patched build) measured beside
    /// the first, as target `edge-session (candidate)`.
    #[arg(long)]
    candidate_bin: Option<PathBuf>,
    /// Prefix for the node's command line, e.g. `valgrind --tool=callgrind`
    /// (split on whitespace).
    #[arg(long)]
    server_wrapper: Option<String>,
    /// The `redis-server` program for the actix-session peer.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// What to run (comma-separated): edge, hello, redis, login; also
    /// hello-inprocess (the ceiling served inside the harness process).
    #[arg(long, value_delimiter = ',', default_value = "edge,hello,redis,login")]
    only: Vec<String>,
    /// Directory for whoami.csv, login.csv and whoami-latency.svg (created).
    #[arg(long, default_value = "docs/perf")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Some(Mode::ServeHello { workers }) => peers::serve_hello(workers),
        None => compare::run(cli.args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edge-session-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
