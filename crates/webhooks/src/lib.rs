//! confab-webhooks: telling other backends what happened, durably, signed per Standard Webhooks.
//!
//! # Pieces
//! - The outbox itself (tables `webhook_endpoints` and `webhook_outbox`, one row per (event,
//!   endpoint)) is in [`confab_store::webhooks`], so the settlement repository can write paid-session
//!   and settlement events in the same transaction as the state they report.
//! - [`DeliveryWorker`]: the task that leases due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL),
//!   posts each body with the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers
//!   (signed with the `standardwebhooks` crate), and marks it delivered on a 2xx or schedules a
//!   retry with capped, jittered exponential back-off ([`Backoff`]) — forever, there is no last
//!   attempt. Its [`BacklogReader`] gives `/metrics` the number of pending deliveries and the age of
//!   the oldest.
//! - [`Emitter`] and its writer task ([`spawn_writer`]): rooms and participants live in memory, so
//!   the signaling layer reports joins and leaves without blocking (a bounded queue, [`EMIT_QUEUE`];
//!   when full, the event is dropped and counted) and the writer turns them into rows, keeping who
//!   is present per node in `webhook_presence` so that [`emitter::recover`] can finish, at the
//!   next start, the rooms a crashed run left open.
//! - [`start`]: what the server calls at start-up with its settings.
//!
//! # Guarantees
//! Every row is posted until an endpoint answers 2xx (at least once); a crash or a receiver outage
//! loses nothing that was committed. A row is leased to one worker at a time, for longer than one
//! attempt can take, so two servers never post the same row at once; a retry after a crash or a
//! timeout may repeat a delivery, so receivers deduplicate on `webhook-id`. Deliveries are posted
//! concurrently: the order of arrival is not the order of events (use the body's `timestamp`).

pub mod config;
pub mod emitter;
pub mod worker;

use std::{sync::Arc, time::Duration};

pub use confab_store::{EndpointKind, WebhookBacklog};
pub use config::{
    Backoff, ConfigError, DeliveryConfig, WebhookSecret, SECRET_ENV, SECRET_FILE_ENV,
};
pub use emitter::{
    recover, spawn_writer, Emitter, LeaveReason, WriterConfig, WriterTask, EMIT_QUEUE, WRITER_DRAIN,
};
pub use worker::{BacklogReader, DeliveryWorker};

use confab_store::Db;
use tokio::sync::{oneshot, Notify};

/// The server's webhook settings (flags and environment, resolved).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Standard Webhooks endpoints (`--webhook-url`).
    pub urls: Vec<String>,
    /// LangDAO's `/api/webrtc-events` URL (`--langdao-events-url`).
    pub langdao_events_url: Option<String>,
    /// The signing secret (required when any URL is set).
    pub secret: Option<WebhookSecret>,
    /// Bound of one HTTP request; `None`: 10 s.
    pub timeout: Option<Duration>,
    /// Retry policy; `None`: [`Backoff::default`].
    pub backoff: Option<Backoff>,
    /// LangDAO heartbeat period; `None`: 30 s.
    pub heartbeat_every: Option<Duration>,
    /// This server's name in `webhook_presence` (`--node-id`); `None`: [`DEFAULT_NODE`].
    pub node: Option<String>,
}

/// The node id of a server given none: right for one server per database.
pub const DEFAULT_NODE: &str = "confab";

/// Why webhooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The endpoint table could not be written.
    #[error("webhook endpoints: {0}")]
    Store(#[from] confab_store::StoreError),
    /// The HTTP client could not be built.
    #[error("webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Running webhooks, as the rest of the server sees them: the emitter for the signaling layer and
/// the metric readers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Webhooks {
    emitter: Emitter,
    backlog: Option<BacklogReader>,
}

impl Webhooks {
    /// Webhooks off: an emitter that does nothing, no backlog.
    pub fn disabled() -> Self {
        Self {
            emitter: Emitter::disabled(),
            backlog: None,
        }
    }

    /// The handle to report joins and leaves with.
    pub fn emitter(&self) -> Emitter {
        self.emitter.clone()
    }

    /// The metric accessor: the outbox backlog as the worker last measured it
    /// ([`WebhookBacklog::pending`] deliveries, [`WebhookBacklog::oldest_pending_age`]); `None`
    /// with webhooks off, or inside `Some` before the worker's first pass.
    pub fn backlog(&self) -> Option<BacklogReader> {
        self.backlog.clone()
    }

    /// Room/participant events dropped because the writer's queue was full (a counter).
    pub fn dropped_events(&self) -> u64 {
        self.emitter.dropped()
    }
}

/// The webhook tasks (room-event writer, delivery worker), to stop at shutdown.
#[derive(Debug)]
pub struct WorkerTask(Option<(WriterTask, oneshot::Sender<()>, tokio::task::JoinHandle<()>)>);

impl WorkerTask {
    /// Call after the rooms are closed: the writer writes the events already queued (at most
    /// [`WRITER_DRAIN`]), then the delivery worker stops and is waited for (its leases are
    /// released; what is pending is delivered after the restart).
    pub async fn shutdown(self) {
        if let Some((writer, stop, task)) = self.0 {
            writer.shutdown().await;
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

/// Start webhooks with `settings` on `db`: make the configured URLs the enabled endpoints (every
/// server sharing the database must be given the same ones; with none, all are disabled and no
/// event is written), report the rooms this node's previous run left open finished
/// ([`recover`]), then spawn the delivery worker and the room-event writer.
///
/// Errors: a URL is not `http://`, endpoints without a valid secret, the database failing.
pub async fn start(db: &Db, settings: Settings) -> Result<(Webhooks, WorkerTask), StartError> {
    let mut endpoints: Vec<(String, EndpointKind)> = settings
        .urls
        .iter()
        .map(|u| (u.trim().to_owned(), EndpointKind::Standard))
        .filter(|(u, _)| !u.is_empty())
        .collect();
    if let Some(u) = settings.langdao_events_url.as_deref().map(str::trim) {
        if !u.is_empty() {
            endpoints.push((u.to_owned(), EndpointKind::Langdao));
        }
    }
    endpoints.dedup();
    let node = settings
        .node
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NODE)
        .to_owned();
    let langdao = endpoints.iter().any(|(_, k)| *k == EndpointKind::Langdao);
    let writer = WriterConfig {
        node,
        langdao,
        heartbeat_every: settings.heartbeat_every.unwrap_or(Duration::from_secs(30)),
    };
    if endpoints.is_empty() {
        db.sync_webhook_endpoints(&[], chrono::Utc::now()).await?;
        // No endpoint: the rows are forgotten, nothing is written.
        recover(db, &writer).await?;
        tracing::info!("webhooks off: no --webhook-url or --langdao-events-url");
        return Ok((Webhooks::disabled(), WorkerTask(None)));
    }
    let secret = settings.secret.ok_or(ConfigError::MissingSecret)?;
    let mut config = DeliveryConfig::new(endpoints, secret);
    if let Some(t) = settings.timeout {
        config.timeout = t;
        // An attempt cannot outlast its request timeout, so three of them is a safe lease, and a
        // crashed server's rows are taken over soon.
        config.lease = t * 3;
    }
    if let Some(b) = settings.backoff {
        config.backoff = b;
    }
    config.validate()?;
    db.sync_webhook_endpoints(&config.endpoints, chrono::Utc::now())
        .await?;
    tracing::info!(endpoints = config.endpoints.len(), langdao, node = %writer.node, "webhooks on");
    recover(db, &writer).await?;
    let worker = DeliveryWorker::new(db.clone(), config)?;
    let wake: Arc<Notify> = worker.waker();
    let backlog = worker.backlog();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    let (emitter, writer_task) = spawn_writer(db.clone(), writer, wake);
    Ok((
        Webhooks {
            emitter,
            backlog: Some(backlog),
        },
        WorkerTask(Some((writer_task, stop_tx, task))),
    ))
}
