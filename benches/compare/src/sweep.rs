//! `edge-session-bench fleet`: the fleet runs ([`edge_session_bench::fleet`])
//! for each follower source and fleet size, one after the other, as a table
//! (stdout) and `fleet.csv` / `fleet.json` in `--out`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use edge_session::config::StreamSource;
use edge_session_bench::fleet::{run, FleetReport, FleetSpec};
use edge_session_test_support::streams_limits::StreamsLimits;

/// `fleet` flags.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Fleet sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,20,50")]
    nodes: Vec<usize>,
    /// Follower sources, comma-separated: `stream` (the table's stream,
    /// every node a reader; relays are measured as node processes:
    /// docs/performance.md, "Relays").
    #[arg(long, value_delimiter = ',', default_value = "stream")]
    sources: Vec<String>,
    /// Revocations a second in the load phase.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Idle phase, seconds.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Load phase, seconds.
    #[arg(long, default_value_t = 10)]
    load_secs: u64,
    /// Enforce no Streams limit (the emulator's own behaviour).
    #[arg(long)]
    no_limits: bool,
    /// Where `fleet.csv` and `fleet.json` go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

fn source(name: &str) -> anyhow::Result<StreamSource> {
    match name {
        "stream" => Ok(StreamSource::Stream),
        other => anyhow::bail!("unknown source `{other}` (stream)"),
    }
}

fn name(source: StreamSource) -> &'static str {
    match source {
        StreamSource::Stream => "stream",
        StreamSource::Journal => "journal",
        StreamSource::Relays => "relays",
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1000.0))
}

/// Run every (source, size) and report.
pub fn main(args: FleetArgs) -> anyhow::Result<()> {
    let sources: Vec<StreamSource> = args
        .sources
        .iter()
        .map(|s| source(s))
        .collect::<Result<_, _>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut reports = Vec::new();
    for &src in &sources {
        for &nodes in &args.nodes {
            let spec = FleetSpec {
                rate: args.rate,
                idle: Duration::from_secs(args.idle_secs),
                load: Duration::from_secs(args.load_secs),
                limits: if args.no_limits {
                    StreamsLimits::none()
                } else {
                    StreamsLimits::default()
                },
                ..FleetSpec::new(nodes, src)
            };
            eprintln!("fleet: {} × {nodes} ...", name(src));
            let report = runtime.block_on(run(&spec))?;
            eprintln!("{}", row(&report));
            reports.push(report);
        }
    }
    println!("{}", table(&reports));
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("fleet.csv"), csv(&reports))?;
    std::fs::write(args.out.join("fleet.json"), json(&reports).to_string())?;
    eprintln!("wrote {}/fleet.csv and fleet.json", args.out.display());
    Ok(())
}

const HEADER: &str = "| source | nodes | p50 ms | p99 ms | missed | idle DynamoDB/s/node | idle Streams/s/node | load DynamoDB/s/node | load Streams/s/node | throttled/s/node (load) | nodes always on the long lease | lowest lease ms |";

fn row(r: &FleetReport) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {}/{} | {} |",
        name(r.source),
        r.nodes,
        ms(r.percentile(0.50)),
        ms(r.percentile(0.99)),
        r.missed,
        r.idle.dynamodb,
        r.idle.streams,
        r.load.dynamodb,
        r.load.streams,
        r.load.throttled,
        r.nodes_always_long,
        r.nodes,
        r.lowest_lease_ms,
    )
}

fn table(reports: &[FleetReport]) -> String {
    let mut out = format!("{HEADER}\n|{}\n", "---|".repeat(12));
    for r in reports {
        let _ = writeln!(out, "{}", row(r));
    }
    out
}

fn csv(reports: &[FleetReport]) -> String {
    let mut out = String::from("source,nodes,revocations,p50_ms,p99_ms,max_ms,missed,idle_dynamodb_per_node_s,idle_streams_per_node_s,idle_throttled_per_node_s,load_dynamodb_per_node_s,load_streams_per_node_s,load_throttled_per_node_s,writer_calls_s,nodes_always_long,short_lease_share,lowest_lease_ms\n");
    for r in reports {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.1},{},{:.4},{}",
            name(r.source),
            r.nodes,
            r.revocations,
            ms(r.percentile(0.50)),
            ms(r.percentile(0.99)),
            ms(r.delays.last().copied()),
            r.missed,
            r.idle.dynamodb,
            r.idle.streams,
            r.idle.throttled,
            r.load.dynamodb,
            r.load.streams,
            r.load.throttled,
            r.writer_per_sec,
            r.nodes_always_long,
            r.short_lease_share,
            r.lowest_lease_ms,
        );
    }
    out
}

fn json(reports: &[FleetReport]) -> serde_json::Value {
    let ms_json = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    serde_json::Value::Array(
        reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "source": name(r.source),
                    "nodes": r.nodes,
                    "revocations": r.revocations,
                    "p50_ms": ms_json(r.percentile(0.50)),
                    "p99_ms": ms_json(r.percentile(0.99)),
                    "max_ms": ms_json(r.delays.last().copied()),
                    "missed": r.missed,
                    "idle": {"dynamodb": r.idle.dynamodb, "streams": r.idle.streams, "throttled": r.idle.throttled},
                    "load": {"dynamodb": r.load.dynamodb, "streams": r.load.streams, "throttled": r.load.throttled},
                    "writer_calls_per_s": r.writer_per_sec,
                    "nodes_always_long": r.nodes_always_long,
                    "short_lease_share": r.short_lease_share,
                    "lowest_lease_ms": r.lowest_lease_ms,
                })
            })
            .collect(),
    )
}
