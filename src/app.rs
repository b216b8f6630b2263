//! [`Application`]: a node built from a [`Config`]: the embedded store (if
//! configured), the DynamoDB tier, the sled cache, the coordinator, the
//! background upkeep and the HTTP server on its bound listener.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::HttpServer;
use anyhow::Context as _;
use secrecy::ExposeSecret;
use tokio::sync::oneshot;

use crate::cache::SledCache;
use crate::codec::Format;
use crate::coherence::{self, CoherenceSettings};
use crate::config::{Config, DynamoEndpoint, StreamSource};
use crate::embedded::EmbeddedDynamo;
use crate::http::{self, AppState};
use crate::record::{now, Policy};
use crate::relay::RelaySettings;
use crate::store::StoreSettings;
use crate::store::TieredStore;
use crate::telemetry;
use edge_session_sync::{
    BreakerSettings, ClientSettings, DynamoTier, Endpoint, ErrorKind, JournalSettings,
};

/// A node, bound and ready to run.
pub struct Application {
    addr: SocketAddr,
    tls: bool,
    server: Server,
    store: TieredStore,
    embedded: Option<EmbeddedDynamo>,
    stop_upkeep: oneshot::Sender<()>,
    upkeep: tokio::task::JoinHandle<()>,
    follower: Option<tokio::task::JoinHandle<()>>,
    emitter: Option<tokio::task::JoinHandle<()>>,
}

/// The relay settings of `config`, binding `relay.listen` now (so a taken
/// port fails the start), or `None` unless `stream.source = "relays"`.
fn relay_settings(config: &Config, node: SocketAddr) -> anyhow::Result<Option<RelaySettings>> {
    if config.stream.source != StreamSource::Relays {
        return Ok(None);
    }
    let relay = &config.relay;
    let listener = match relay.listen {
        Some(listen) => Some(
            TcpListener::bind(listen)
                .with_context(|| format!("binding `relay.listen` {listen}"))?,
        ),
        None => None,
    };
    let advertise_url = match (&relay.advertise_url, &listener) {
        (Some(url), _) => url.clone(),
        (None, Some(l)) => format!("http://{}", l.local_addr()?),
        (None, None) => String::new(),
    };
    let secret = relay
        .secret
        .as_ref()
        .map(|s| s.expose_secret().as_bytes().to_vec())
        .unwrap_or_default();
    let ms = Duration::from_millis;
    Ok(Some(RelaySettings {
        secret: secret.into(),
        listener: listener.map(std::sync::Arc::new),
        advertise_url,
        node: node.to_string(),
        region: relay.region.clone(),
        slots: relay.slots,
        lease: ms(relay.lease_ms),
        beat: ms(relay.beat_ms),
        poll_interval: ms(config.stream.poll_interval_ms),
        heartbeat_every: ms(config.stream.heartbeat_interval_ms),
        lag_threshold_ms: config.stream.lag_threshold_ms,
        revalidate_after_ms: config.cache.revalidate_after_ms,
        revalidate_after_lagging_ms: config.cache.revalidate_after_lagging_ms,
    }))
}

/// One shutdown signal, awaited by several tasks: the first future passes
/// it on to every waiter made from the receiver ([`stopped`]).
fn split_shutdown(
    stop: oneshot::Receiver<()>,
) -> (
    impl std::future::Future<Output = ()> + Send + 'static,
    tokio::sync::watch::Receiver<bool>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let first = async move {
        let _ = stop.await;
        let _ = tx.send(true);
    };
    (first, rx)
}

/// Resolves once the shutdown `split_shutdown` passes on has come.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopped| *stopped).await;
}

/// `[dynamodb]`'s circuit breaker, for this region's tier and the others'.
fn breaker_settings(d: &crate::config::DynamoConfig) -> BreakerSettings {
    BreakerSettings {
        failures_to_open: d.breaker_failures,
        cooldown: Duration::from_millis(d.breaker_cooldown_ms),
    }
}

/// A DynamoDB endpoint at `url`, with `[dynamodb]`'s static credentials
/// when it has them (else the AWS credential chain).
fn url_endpoint(url: &str, d: &crate::config::DynamoConfig) -> Endpoint {
    match (&d.access_key_id, &d.secret_access_key) {
        (Some(id), Some(secret)) => Endpoint::Static {
            url: url.to_owned(),
            access_key_id: id.clone(),
            secret_access_key: secret.expose_secret().to_owned(),
        },
        _ => Endpoint::Url(url.to_owned()),
    }
}

/// The other regions' replicas, when `[regions]` names several: each a
/// tier of its own (its own client and circuit breaker), with this node's
/// timeouts and, for a URL endpoint, its static credentials.
async fn homes(config: &Config, local: &ClientSettings) -> Option<crate::store::Homes> {
    let regions = &config.regions;
    let own = regions.place(&config.relay.region)?;
    let d = &config.dynamodb;
    let breaker = breaker_settings(d);
    let mut replicas = Vec::new();
    for replica in &regions.replica {
        let Some(place) = regions.place(&replica.name) else {
            continue;
        };
        let endpoint = match replica.endpoint.as_str() {
            "aws" => Endpoint::Aws,
            url => url_endpoint(url, d),
        };
        let settings = ClientSettings {
            endpoint,
            region: replica.region.clone(),
            ..local.clone()
        };
        let tier = DynamoTier::with_breaker(settings.build().await, replica.table.clone(), breaker);
        replicas.push((place, tier));
    }
    Some(crate::store::Homes::new(
        own,
        replicas,
        Duration::from_millis(regions.home_timeout_ms),
    ))
}

/// The emitter's settings, when `events.enabled`.
fn emitter_settings(config: &Config) -> anyhow::Result<Option<crate::events::EmitterSettings>> {
    let e = &config.events;
    if !e.enabled {
        return Ok(None);
    }
    let ms = Duration::from_millis;
    Ok(Some(crate::events::EmitterSettings {
        region: config.relay.region.clone(),
        beat: ms(e.beat_ms),
        lease: ms(e.lease_ms),
        poll_interval: ms(e.poll_interval_ms),
        retention: Duration::from_secs(e.retention_secs),
        hooks: e
            .webhooks
            .iter()
            .map(crate::events::Hook::new)
            .collect::<anyhow::Result<_>>()?,
        max_pending: e.max_pending,
    }))
}

/// The DynamoDB tier for `config` (starting the embedded server if asked),
/// provisioned when embedded or `dynamodb.provision_on_start`.
pub async fn dynamo_tier(
    config: &Config,
    provision: bool,
) -> anyhow::Result<(DynamoTier, ClientSettings, Option<EmbeddedDynamo>)> {
    let d = &config.dynamodb;
    let (endpoint, embedded) = match &d.endpoint {
        DynamoEndpoint::Embedded => {
            let path = config.data_dir.join("dynamodb.sqlite3");
            let server =
                EmbeddedDynamo::start_file(&path, Duration::from_secs(d.ttl_sweep_secs.max(1)))
                    .with_context(|| {
                        format!("starting the embedded DynamoDB store at {}", path.display())
                    })?;
            (Endpoint::Embedded(server.url()), Some(server))
        }
        DynamoEndpoint::Aws => (Endpoint::Aws, None),
        DynamoEndpoint::Url(url) => (url_endpoint(url, d), None),
    };
    let settings = ClientSettings {
        endpoint,
        region: d.region.clone(),
        connect_timeout: Duration::from_millis(d.connect_timeout_ms),
        attempt_timeout: Duration::from_millis(d.attempt_timeout_ms),
        operation_timeout: Duration::from_millis(d.operation_timeout_ms),
        max_attempts: d.max_attempts,
    };
    let tier =
        DynamoTier::with_breaker(settings.build().await, d.table.clone(), breaker_settings(d))
            .with_journal(journal_settings(&config.stream));
    if provision || embedded.is_some() || d.provision_on_start {
        tier.provision()
            .await
            .with_context(|| format!("provisioning DynamoDB table `{}`", d.table))?;
    }
    match tier.claim_journal_partitions().await {
        Ok(()) => {}
        // Another node's count: this one would write and read other
        // partitions than the rest of the fleet. A configuration error.
        Err(err) if err.kind == ErrorKind::Rejected => {
            anyhow::bail!("stream.journal_partitions: {}", err.message)
        }
        Err(err) => tracing::warn!(
            %err,
            "could not check stream.journal_partitions against the table now; starting anyway"
        ),
    }
    Ok((tier, settings, embedded))
}

/// The change journal as `[stream]` configures it (written only for nodes of
/// an older build that still read it).
fn journal_settings(stream: &crate::config::StreamConfig) -> JournalSettings {
    JournalSettings {
        write: stream.journal_writes,
        partitions: stream.journal_partitions,
        ..JournalSettings::default()
    }
}

fn load_tls(config: &crate::config::TlsConfig) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&config.cert)
        .with_context(|| format!("reading `server.tls.cert` {}", config.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing `server.tls.cert` {}", config.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .with_context(|| format!("reading `server.tls.key` {}", config.key.display()))?;
    rustls::ServerConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("`server.tls.cert` and `server.tls.key` do not form a usable pair")
}

/// The store's settings from the config's `[session]`, `[cache]` and `[events]`.
fn store_settings(config: &Config) -> StoreSettings {
    let s = &config.session;
    StoreSettings {
        policy: Policy {
            idle_timeout_ms: s.idle_timeout_secs * 1000,
            absolute_timeout_ms: s.absolute_timeout_secs * 1000,
            touch_interval_ms: s.touch_interval_secs * 1000,
        },
        revalidate_after_ms: config.cache.revalidate_after_ms,
        on_unreachable: config.on_unreachable(),
        max_unverified_revocations: config.cache.max_unverified_revocations,
        max_per_user: s.max_per_user,
        max_record_bytes: s.max_record_bytes,
        negative_ttl_ms: config.cache.negative_ttl_ms,
        negative_max_entries: config.cache.negative_max_entries,
        // Checked by `Config::validate`.
        record_format: Format::from_byte(s.record_format).unwrap_or_default(),
        record_client: s.record_client,
        end_reasons: config.events.enabled,
    }
}

/// The stream follower's settings from `[stream]` and `[cache]`.
fn coherence_settings(config: &Config) -> CoherenceSettings {
    CoherenceSettings {
        poll_interval: Duration::from_millis(config.stream.poll_interval_ms),
        heartbeat_every: (config.stream.heartbeat_interval_ms > 0)
            .then(|| Duration::from_millis(config.stream.heartbeat_interval_ms)),
        lag_threshold_ms: config.stream.lag_threshold_ms,
        revalidate_after_ms: config.cache.revalidate_after_ms,
        revalidate_after_lagging_ms: config.cache.revalidate_after_lagging_ms,
    }
}

impl Application {
    /// Build a node: open both tiers, bind the listener (port 0 allowed).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating `data_dir` {}", config.data_dir.display()))?;
        let (tier, client_settings, embedded) = dynamo_tier(&config, false).await?;
        let cache_dir = config.data_dir.join("cache");
        let cache = SledCache::open(&cache_dir)
            .with_context(|| format!("opening the sled cache at {}", cache_dir.display()))?;
        let store = TieredStore::new(cache, tier, store_settings(&config));
        if let Some(homes) = homes(&config, &client_settings).await {
            store.set_homes(homes);
        }
        let state = AppState::new(store.clone(), &config, telemetry::metrics_handle())?;

        let listen = config.server.listen;
        let listener = TcpListener::bind(listen)
            .with_context(|| format!("binding `server.listen` {listen}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let ops_listener = match config.server.ops_listen {
            Some(ops) => {
                let l = TcpListener::bind(ops)
                    .with_context(|| format!("binding `server.ops_listen` {ops}"))?;
                let bound = l.local_addr().context("reading the bound ops address")?;
                state.ops_addr.set(bound);
                tracing::info!(%bound, "health, readiness and metrics on their own listener");
                Some(l)
            }
            None => None,
        };
        let c = &config.server;
        let ms = Duration::from_millis;
        let (request, keep_alive) = (ms(c.client_request_timeout_ms), ms(c.keep_alive_ms));
        let mut server = HttpServer::new(move || http::app(state.clone()))
            .shutdown_timeout(c.shutdown_timeout_secs)
            .max_connection_rate(4096)
            .client_request_timeout(request)
            .client_disconnect_timeout(ms(c.client_disconnect_timeout_ms))
            .keep_alive(keep_alive)
            .on_connect(http::watch_connection(keep_alive + request));
        if c.workers > 0 {
            server = server.workers(c.workers);
        }
        let server = match ops_listener {
            Some(l) => server.listen(l)?,
            None => server,
        };
        let tls = config.server.tls.is_some();
        let server = match &config.server.tls {
            Some(tls) => server.listen_rustls_0_23(listener, load_tls(tls)?)?,
            None => server.listen(listener)?,
        }
        .run();

        let (stop_upkeep, stop) = oneshot::channel();
        let (stopped_upkeep, shutdown) = split_shutdown(stop);
        let stopped_follower = stopped(shutdown.clone());
        let upkeep = tokio::spawn(store.clone().maintain(now, stopped_upkeep));
        let emitter = emitter_settings(&config)?.map(|settings| {
            tokio::spawn(crate::events::run(
                store.clone(),
                client_settings.clone(),
                settings,
                stopped(shutdown.clone()),
            ))
        });
        let relays = relay_settings(&config, addr)?;
        let follower = config.stream.enabled.then(|| {
            if let Some(relays) = relays {
                return tokio::spawn(crate::relay::run(
                    store.clone(),
                    client_settings,
                    relays,
                    now,
                    stopped_follower,
                ));
            }
            tokio::spawn(coherence::run(
                store.clone(),
                client_settings,
                coherence_settings(&config),
                now,
                stopped_follower,
            ))
        });
        Ok(Application {
            addr,
            tls,
            server,
            store,
            embedded,
            stop_upkeep,
            upkeep,
            follower,
            emitter,
        })
    }

    /// The bound address (the real port when `server.listen` used port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR:PORT` or `https://ADDR:PORT`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// The node's store.
    pub fn store(&self) -> &TieredStore {
        &self.store
    }

    /// A handle to stop the server gracefully (tests).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serve until stopped (SIGTERM/SIGINT or [`ServerHandle::stop`]):
    /// in-flight requests finish, upkeep stops, sled is flushed, the embedded
    /// store shuts down.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        let _ = self.stop_upkeep.send(());
        let _ = self.upkeep.await;
        if let Some(follower) = self.follower {
            let _ = follower.await;
        }
        if let Some(emitter) = self.emitter {
            let _ = emitter.await;
        }
        self.store
            .cache()
            .flush()
            .await
            .context("flushing the sled cache")?;
        if let Some(embedded) = self.embedded {
            tokio::task::spawn_blocking(move || embedded.stop())
                .await
                .context("stopping the embedded store")?;
        }
        served.context("HTTP server")
    }
}
