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
//! - [`servers`]: child processes: the `edge-session` node under test
//!   (release binary, embedded DynamoDB, temporary `data_dir`, port 0), the
//!   hello-world ceiling (this binary's `serve-hello`) and `redis-server`.
//! - [`peers`]: servers the harness runs itself: the actix-web hello world
//!   (the HTTP ceiling) and actix-session 0.11 over Redis.
//! - [`login`]: `regenerate` beside the raw `TransactWriteItems` it wraps.
//! - [`report`]: tables, CSV, the SVG latency plot, the targets.
//! - [`sweep`]: the `fleet` subcommand, a table of fleet runs.
//! - [`deployment`]: `--target URL --api-key K`, a running deployment measured
//!   through its `/v1` API (closed and open loop), nothing started.
//!
//! Every scenario runs once per round, the targets in a rotated order, so
//! each round holds all of them side by side; throughput ratios are the
//! median of the per-round ratios. The machine is shared and noisy: read the
//! ratios, not the absolute numbers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
mod compare;
mod deployment;
mod express;
mod gateway;
mod load;
mod login;
mod measure;
mod names;
mod peers;
mod report;
mod results;
mod servers;
mod start;
mod sweep;
mod targets;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::args::BenchArgs;

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
    /// Many nodes' followers over one table under DynamoDB Streams' read
    /// limits: revocation propagation, calls per node, leases.
    Fleet(sweep::FleetArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Some(Mode::ServeHello { workers }) => peers::serve_hello(workers),
        Some(Mode::Fleet(args)) => sweep::main(args),
        None if cli.args.target.is_some() => deployment::run(cli.args),
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
