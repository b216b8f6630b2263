//! `edge-session`: the command line. Thin: configuration, telemetry, then
//! the [`Application`](edge_session::Application).

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edge_session::config::Config;
use edge_session::{dynamo_tier, hash_password, init_logging, Application};

#[derive(Parser)]
#[command(
    name = "edge-session",
    version,
    about = "Edge session server: sled cache in front of DynamoDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default).
    Serve {
        /// Configuration file (default ./config.toml; missing is fine when not given explicitly).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Create the DynamoDB table (TTL, GSI, stream) or check an existing one.
    Provision {
        /// Configuration file (default ./config.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Read a password on stdin, print its argon2id PHC string.
    HashPassword,
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let required = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from("config.toml"));
    Config::load(&path, required)
        .map_err(|e| anyhow::anyhow!("{e} (config file: {})", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => load_config(config).and_then(|config| {
            init_logging(&config.log);
            actix_web::rt::System::new().block_on(serve(config))
        }),
        Command::Provision { config } => load_config(config).and_then(|config| {
            init_logging(&config.log);
            actix_web::rt::System::new().block_on(provision(config))
        }),
        Command::HashPassword => hash_from_stdin(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edge-session: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let demo_users: Vec<_> = config
        .auth
        .users
        .iter()
        .filter(|u| u.demo)
        .map(|u| u.user_id.clone())
        .collect();
    let listen = config.server.listen;
    if !demo_users.is_empty() && !listen.ip().is_loopback() {
        tracing::warn!(
            users = ?demo_users,
            %listen,
            "demo users with published passwords are enabled on a non-loopback address; remove them from [[auth.users]]"
        );
    }
    if config.api.keys.is_empty() {
        tracing::info!("no api.keys configured: the /v1 service API refuses every call");
    }
    let app = Application::build(config).await?;
    println!("edge-session listening on {}", app.url());
    app.run_until_stopped().await
}

async fn provision(config: Config) -> anyhow::Result<()> {
    let (tier, _, embedded) = dynamo_tier(&config, true).await?;
    println!(
        "table `{}` is ready (TTL on `exp`, GSIs `uid-index` and `journal-index`, stream on)",
        tier.table()
    );
    let writes = tier.journal().write;
    match tier.journal_has_entries().await {
        Ok(true) => println!(
            "journal-index holds change-journal entries (they expire a day after they were written): \
             keep it while any node reads the journal; once no node writes it (stream.journal_writes \
             unset or false, stream.source not \"journal\") and this line no longer appears, it can be dropped"
        ),
        Ok(false) if !writes => println!(
            "journal-index is empty and this configuration does not write it: once no node of the \
             fleet writes the journal, it can be dropped (UpdateTable, GlobalSecondaryIndexUpdates: Delete)"
        ),
        Ok(false) => println!("journal-index is empty"),
        Err(err) => println!("journal-index not checked: {err}"),
    }
    if let Some(embedded) = embedded {
        tokio::task::spawn_blocking(move || embedded.stop())
            .await
            .context("stopping the embedded store")?;
    }
    Ok(())
}

fn hash_from_stdin() -> anyhow::Result<()> {
    if std::io::stdin().is_terminal() {
        eprintln!("password (input is not hidden; pipe it in to keep it off the screen):");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    anyhow::ensure!(!password.is_empty(), "empty password");
    println!(
        "{}",
        hash_password(password).map_err(|e| anyhow::anyhow!("hashing: {e}"))?
    );
    Ok(())
}
