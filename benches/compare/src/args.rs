//! The flags of a comparison run.

use std::path::PathBuf;

/// Flags of a comparison run.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Seconds measured per scenario, split evenly over the rounds.
    #[arg(long, default_value_t = 6.0)]
    pub(crate) duration: f64,
    /// Seconds of unrecorded warm-up before each measured slice.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup: f64,
    /// Rounds: each scenario runs once per round, beside all the others.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Connections for `GET /whoami` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub(crate) concurrency: Vec<usize>,
    /// Rounds of the login comparison (short, alternating: the disk is
    /// shared and noisy, the median of many round ratios is not).
    #[arg(long, default_value_t = 10)]
    pub(crate) login_rounds: usize,
    /// Concurrency levels of the login comparison (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub(crate) login_concurrency: Vec<usize>,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) client_threads: usize,
    /// The edge-session binary to measure (default: `edge-session` beside
    /// this executable, i.e. in the same target directory and profile).
    #[arg(long)]
    pub(crate) server_bin: Option<PathBuf>,
    /// A second edge-session binary (e.g. a patched build) measured beside
    /// the first, as target `edge-session (candidate)`.
    #[arg(long)]
    pub(crate) candidate_bin: Option<PathBuf>,
    /// Prefix for the node's command line, e.g. `valgrind --tool=callgrind`
    /// (split on whitespace).
    #[arg(long)]
    pub(crate) server_wrapper: Option<String>,
    /// The `redis-server` program for the actix-session peer.
    #[arg(long, default_value = "redis-server")]
    pub(crate) redis_server: String,
    /// What to run (comma-separated): edge, hello, redis, login; also
    /// hello-inprocess (the ceiling served inside the harness process) and
    /// gateway (`/auth/check`, the built-in proxy and nginx + auth_request
    /// in front of the ceiling, and the login action; needs edge); express
    /// is Express + express-session over connect-redis and connect-dynamodb.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "edge,hello,redis,express,login"
    )]
    pub(crate) only: Vec<String>,
    /// Measure a running deployment instead of starting anything: the base
    /// URL of one node (`http://host:port`). Its sessions are created
    /// through `/v1` with `--api-key`.
    #[arg(long, requires = "api_key")]
    pub(crate) target: Option<String>,
    /// A `/v1` API key of the `--target` node.
    #[arg(long)]
    pub(crate) api_key: Option<String>,
    /// Sessions created on the target for the hot reads.
    #[arg(long, default_value_t = 1000)]
    pub(crate) sessions: usize,
    /// Share of reads (0-1) of sessions the target has not cached (the
    /// DynamoDB path): created through `--create-via`, another node on the
    /// same table, each read once.
    #[arg(long, default_value_t = 0.0, requires = "create_via")]
    pub(crate) miss_ratio: f64,
    /// Another node on the target's table, where the sessions for misses
    /// are created.
    #[arg(long)]
    pub(crate) create_via: Option<String>,
    /// Also measure in an open loop at this many requests per second (on
    /// as many connections as the largest `--concurrency`), latency from
    /// each request's scheduled start.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Directory for whoami.csv, login.csv and whoami-latency.svg (created).
    #[arg(long, default_value = "docs/perf")]
    pub(crate) out: PathBuf,
}
