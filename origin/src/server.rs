//! Start-up: from a configuration to a running HTTP server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::api::auth::{self, Authenticator};
use crate::api::events::StreamSettings;
use crate::api::{self, AppState, Inner, Limits};
use crate::cache::{L1Cache, L1Settings};
use crate::config::OriginConfig;
use crate::control::{self, ControlPlane, Edges};
use crate::events::{Events, StreamLimits};
use crate::forecasts::Forecasts;
use crate::metrics::Metrics;
use crate::representation::CachePolicy;
use crate::serve::{ConnectionLimits, serve};
use crate::storage::embedded::EmbeddedStore;
use crate::storage::redis::{RedisSettings, RedisStore};
use crate::storage::tokens::StoredToken;
use crate::storage::{LogRetention, Retention, SharedStore};
use crate::tasks::Tasks;
use crate::warming::{self, Renderer, Warming};
use crate::webhooks::Webhooks;
use shared::events::TopicPattern;

/// Opens the configured store.
pub fn open_store(config: &OriginConfig) -> anyhow::Result<SharedStore> {
    let storage = &config.storage;
    let retention = Retention {
        versions_kept: storage.versions_kept.get() as u64,
        audit_kept: storage.audit_kept.get() as u64,
        invalidations: LogRetention {
            kept: config.invalidation.retention_entries.get() as u64,
            max_age: config.invalidation.retention_age,
        },
        events: LogRetention {
            kept: config.events.retention_entries.get() as u64,
            max_age: config.events.retention_age,
        },
    };
    Ok(match &storage.redis_url {
        Some(urls) => Arc::new(RedisStore::new(RedisSettings {
            urls: urls
                .split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            cluster: storage.redis_cluster,
            operation_timeout: storage.operation_timeout,
            retention,
        })?),
        None => Arc::new(
            EmbeddedStore::open(&storage.data_dir, retention)
                .with_context(|| format!("opening the embedded store in {}", storage.data_dir.display()))?,
        ),
    })
}

/// The bootstrap token, which holds every scope, when one is configured. Without it and without
/// configured tokens, the origin generates an admin token on first start: a stored token
/// (`generated-admin`) that can be revoked like any other, and is never generated again.
async fn admin_tokens(config: &OriginConfig, store: &SharedStore) -> anyhow::Result<Vec<(&'static str, [u8; 32])>> {
    if let Some(token) = &config.auth.bootstrap_token {
        return Ok(vec![("bootstrap", auth::hash_token(token))]);
    }
    if !config.auth.tokens.is_empty() {
        return Ok(Vec::new());
    }
    let token = format!(
        "ft_{}",
        auth::random_hex(24).ok_or_else(|| anyhow::anyhow!("no system randomness"))?
    );
    let candidate = auth::format_hash(&auth::hash_token(&token));
    let stored = store
        .admin_token_hash(&candidate)
        .await
        .context("storing the generated admin token's hash (no token is configured)")?;
    if stored == candidate {
        // Printed once, on purpose: only its hash is kept.
        eprintln!("origin: generated admin token (shown once, keep it): {token}");
    } else {
        tracing::info!("using the admin token generated at first start (only its hash is stored)");
    }
    Authenticator::parse_stored_hash(&stored).context("the stored admin token hash is corrupt")?;
    // Stored once under its own id: revoking it revokes it for good.
    let generated = StoredToken {
        id: api::tokens::GENERATED_ADMIN.to_owned(),
        name: api::tokens::GENERATED_ADMIN.to_owned(),
        hash: stored,
        scopes: vec![auth::Scope::Admin.name().to_owned()],
        topics: Vec::new(),
        created_at_ms: shared::time::unix_ms_now(),
        created_by: "origin".to_owned(),
        expires_at_ms: None,
        revoked_at_ms: None,
    };
    store
        .add_token(&generated)
        .await
        .context("storing the generated admin token")?;
    Ok(Vec::new())
}

/// Builds the application state from a configuration.
pub async fn build(config: &OriginConfig) -> anyhow::Result<AppState> {
    let store = open_store(config)?;
    let metrics = Metrics::new();
    let l1 = config.cache.enabled.then(|| {
        L1Cache::new(L1Settings {
            capacity: config.cache.capacity.get(),
            ttl: config.cache.ttl,
            max_stale: config.cache.max_stale,
        })
    });
    let extra = admin_tokens(config, &store).await?;
    let auth = Arc::new(Authenticator::new(&config.auth.tokens, &extra).context("invalid [auth] configuration")?);
    let patterns = |key: &str, list: &[String]| -> anyhow::Result<Vec<TopicPattern>> {
        list.iter()
            .map(|pattern| pattern.parse().with_context(|| format!("events.{key}")))
            .collect()
    };
    let streams = StreamSettings {
        free_form: patterns("free_form_topics", &config.events.free_form_topics)?,
        anonymous: patterns("anonymous_topics", &config.events.anonymous_topics)?,
        max_batch: config.events.max_batch,
        heartbeat: config.events.heartbeat_interval,
        retry: config.events.retry,
    };
    let stream_limits = StreamLimits {
        per_token: config.events.max_streams_per_token.get(),
        per_address: config.events.max_streams_per_address.get(),
    };
    let events = Events::new(
        store.clone(),
        metrics.clone(),
        config.events.queue_events,
        stream_limits,
    );
    let webhooks = Webhooks::new(store.clone(), events.clone(), &config.webhooks, metrics.clone())
        .context("invalid [webhooks] configuration")?;
    let tasks = Tasks::default();
    let forecasts = Arc::new(Forecasts::new(store, events.clone(), l1, metrics.clone()));
    let edges = Edges::default();
    let policy = CachePolicy::new(
        config.auth.public_reads,
        config.caching.browser_max_age,
        config.caching.stale_while_revalidate,
        config.caching.stale_if_error,
    );
    let limits = Limits {
        max_body_bytes: config.http.max_body_bytes.get(),
        max_batch_reads: config.http.max_batch_reads.get(),
        max_batch_writes: config.http.max_batch_writes.get(),
        public_reads: config.auth.public_reads,
        public_metrics: config.auth.public_metrics,
    };
    let renderer = Renderer {
        forecasts: forecasts.clone(),
        policy: policy.clone(),
        public_reads: limits.public_reads,
        max_batch_reads: limits.max_batch_reads,
    };
    let state = Arc::new(Inner {
        warming: Warming::new(&config.warming, edges.clone(), renderer, tasks.clone()),
        tasks,
        forecasts,
        edges,
        events,
        streams,
        webhooks,
        auth,
        policy,
        limits,
        metrics,
        refusals: Default::default(),
    });
    // Storage may be down at start: tokens made through the API then count from its return.
    if let Err(error) = state.reload_tokens().await {
        tracing::warn!(%error, "stored tokens not read yet; configured tokens only until storage answers");
    }
    Ok(state)
}

/// Runs `work` every `interval`, the first time at once (a task of [`Tasks`]: until the origin stops).
async fn every<F, Fut>(interval: Duration, work: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        work().await;
    }
}

/// A started origin: the address it listens on, and its state.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    /// The control plane, when `quic.listen` is set.
    pub control: Option<ControlPlane>,
    pub state: AppState,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops the origin: ends its streams, stops serving (requests in flight get up to `grace` to
    /// finish), closes the control plane, and stops every background task. Returns once all of them
    /// have ended: the store is released when this `Running` is gone.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        let Self {
            control, state, task, ..
        } = self;
        state.events.close();
        let tasks = state.tasks.clone();
        drop(state);
        // Serving stops at the first sign of this too.
        let stopping = tasks.stop();
        let served = async {
            let mut task = task;
            match tokio::time::timeout(grace, &mut task).await {
                Ok(result) => result.context("server task")?.context("serving"),
                Err(_) => {
                    tracing::warn!("requests still in flight after the grace period; stopping anyway");
                    // Cut short, and waited for: what the requests held is released on return.
                    task.abort();
                    let _ = task.await;
                    Ok(())
                }
            }
        };
        let ((), served) = tokio::join!(stopping, served);
        if let Some(control) = control {
            control.close();
        }
        served
    }
}

/// Serves the API on `listener` until `shutdown` completes or [`Running::shutdown`] is called, then lets
/// requests in flight finish.
pub async fn start(
    config: &OriginConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let state = build(config).await?;
    let addr = listener.local_addr()?;
    let tasks = &state.tasks;
    if config.storage.redis_url.is_some() && config.cache.enabled {
        // Other origins may write to the same Redis: follow their invalidations into the L1 cache.
        tasks.spawn(crate::invalidation::follow_into_l1(
            state.forecasts.clone(),
            config.cache.follow_interval,
        ));
    }
    let control = match config.quic.listen {
        Some(listen) => {
            let control_state = control::ControlState {
                forecasts: state.forecasts.clone(),
                edges: state.edges.clone(),
                warming: state.warming.clone(),
                metrics: state.metrics.clone(),
                tasks: tasks.clone(),
            };
            Some(control::start(&config.quic, &config.tls, listen, control_state)?)
        }
        None => None,
    };
    tasks.spawn(state.warming.clone().follow(state.forecasts.changes()));
    tasks.spawn(warming::run_schedule(
        state.warming.clone(),
        config.warming.schedule.clone(),
    ));
    tasks.spawn(state.events.clone().tail(config.events.poll_interval));
    // What crashes and outages left pending is announced once storage answers.
    let forecasts = state.forecasts.clone();
    tasks.spawn(every(crate::forecasts::PENDING_CHECK_INTERVAL, move || {
        let forecasts = forecasts.clone();
        async move {
            if let Err(error) = forecasts.announce_pending().await {
                tracing::debug!(%error, "pending changes not announced; retried at the next tick");
            }
        }
    }));
    // Tokens made or revoked through other origins sharing the store.
    let (forecasts, auth) = (state.forecasts.clone(), state.auth.clone());
    tasks.spawn(every(api::tokens::FOLLOW_INTERVAL, move || {
        let (forecasts, auth) = (forecasts.clone(), auth.clone());
        async move {
            if let Err(error) = api::tokens::reload(&forecasts, &auth).await {
                tracing::debug!(%error, "stored tokens not read; the last ones read stay in force");
            }
        }
    }));
    state.webhooks.start(tasks);
    let limits = ConnectionLimits {
        max_connections: config.http.max_connections.get(),
        header_read_timeout: config.http.header_read_timeout,
    };
    let app = api::router(state.clone()).layer(RequestBodyTimeoutLayer::new(config.http.body_read_timeout));
    let stopping = tasks.clone();
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = stopping.stopping() => {}
        }
    };
    let task = tokio::spawn(serve(listener, app, limits, state.metrics.clone(), shutdown));
    tracing::info!(%addr, storage = state.forecasts.store().backend(), "origin listening");
    Ok(Running {
        addr,
        control,
        state,
        task,
    })
}
