//! The delivery worker: leases due rows of the webhook outbox, posts each body signed per Standard
//! Webhooks, and records the outcome (`delivered` on a 2xx, else a retry with back-off).

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use chrono::Utc;
use confab_store::{Db, Delivery, Endpoint, StoreError, WebhookBacklog};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::{Backoff, DeliveryConfig};

/// Passes between two deletions of old delivered rows.
const PRUNE_EVERY_PASSES: u64 = 600;

/// A cheap reader of the outbox backlog as the worker last measured it (after every pass, so at
/// most about `idle_poll` old while the worker runs). For `/metrics`: [`WebhookBacklog::pending`]
/// and [`WebhookBacklog::oldest_pending_age`].
#[derive(Debug, Clone)]
pub struct BacklogReader(watch::Receiver<Option<WebhookBacklog>>);

impl BacklogReader {
    /// The last measurement; `None` before the first pass.
    pub fn latest(&self) -> Option<WebhookBacklog> {
        *self.0.borrow()
    }
}

/// Owns the HTTP client and the signer; one per server. Several servers on one database each run
/// one: rows are leased, so no row is posted by two at once.
pub struct DeliveryWorker {
    db: Db,
    client: reqwest::Client,
    signer: Arc<standardwebhooks::Webhook>,
    config: DeliveryConfig,
    wake: Arc<Notify>,
    /// This worker's `leased_by` name: unique per instance.
    id: String,
    backlog: watch::Sender<Option<WebhookBacklog>>,
}

impl std::fmt::Debug for DeliveryWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryWorker")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Outcome {
    Delivered,
    Failed(String),
}

impl DeliveryWorker {
    /// A worker over `db` with `config` (validate it first). Errors: the HTTP client cannot be built.
    pub fn new(db: Db, config: DeliveryConfig) -> Result<Self, reqwest::Error> {
        confab_store::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("confab-webhooks/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            db,
            client,
            signer: Arc::new(config.secret.signer()),
            config,
            wake: Arc::new(Notify::new()),
            id: format!("webhooks-{}", Uuid::now_v7()),
            backlog: watch::Sender::new(None),
        })
    }

    /// A handle that makes the worker start a pass now (after writing events).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// A reader of the backlog this worker measures after each pass.
    pub fn backlog(&self) -> BacklogReader {
        BacklogReader(self.backlog.subscribe())
    }

    /// This worker's name in `leased_by`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Run passes until `shutdown` completes, then release this worker's leases. A pass in flight
    /// is abandoned at shutdown: its rows are released and posted again later (at least once).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut passes: u64 = 0;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                result = self.run_once() => match result {
                    Ok(n) if i64::try_from(n).unwrap_or(i64::MAX) >= self.config.batch => continue,
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "webhook pass failed; retrying at the next pass"),
                },
            }
            passes += 1;
            if passes % PRUNE_EVERY_PASSES == 1 {
                let before = Utc::now() - to_chrono(self.config.retention);
                match self.db.prune_webhooks(before).await {
                    Ok(0) => {}
                    Ok(n) => debug!(deleted = n, "pruned old webhook deliveries"),
                    Err(e) => debug!(error = %e, "could not prune old webhook deliveries"),
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.idle_poll) => {}
            }
        }
        if let Err(e) = self.db.release_webhook_leases(&self.id).await {
            warn!(error = %e, "could not release webhook leases; they run out by themselves");
        }
        info!("webhook worker stopped");
    }

    /// One pass: expire stale rows, claim due ones, post them concurrently, record each outcome,
    /// measure the backlog. Returns how many rows were claimed. Errors: the database failing.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        self.db.expire_webhooks(now).await?;
        let endpoints: HashMap<Uuid, Endpoint> = self
            .db
            .webhook_endpoints()
            .await?
            .into_iter()
            .map(|e| (e.id, e))
            .collect();
        let claimed = self
            .db
            .claim_webhooks(
                &self.id,
                now,
                now + to_chrono(self.config.lease),
                self.config.batch,
            )
            .await?;
        let n = claimed.len();
        let mut set = tokio::task::JoinSet::new();
        for delivery in claimed {
            let Some(endpoint) = endpoints.get(&delivery.endpoint_id) else {
                continue;
            };
            let (db, client, signer, id, backoff) = (
                self.db.clone(),
                self.client.clone(),
                Arc::clone(&self.signer),
                self.id.clone(),
                self.config.backoff,
            );
            let url = endpoint.url.clone();
            set.spawn(async move {
                let outcome = post(&client, &signer, &url, &delivery).await;
                record(&db, &id, &delivery, &url, outcome, &backoff).await
            });
        }
        let mut first_error = None;
        while let Some(joined) = set.join_next().await {
            if let Ok(Err(e)) = joined {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            let _ = self.db.release_webhook_leases(&self.id).await;
            return Err(e);
        }
        match self.db.webhook_backlog(Utc::now()).await {
            Ok(b) => {
                self.backlog.send_replace(Some(b));
            }
            Err(e) => debug!(error = %e, "could not measure the webhook backlog"),
        }
        Ok(n)
    }
}

/// Posts one delivery: `content-type: application/json` and the three Standard Webhooks headers
/// (`webhook-id`: the event id; `webhook-timestamp`: now, unix seconds; `webhook-signature`:
/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`). A 2xx is success; anything else fails.
async fn post(
    client: &reqwest::Client,
    signer: &standardwebhooks::Webhook,
    url: &str,
    d: &Delivery,
) -> Outcome {
    let ts = Utc::now().timestamp();
    let signature = match signer.sign(&d.event_id, ts, d.body.as_bytes()) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("cannot sign: {e}")),
    };
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header(standardwebhooks::HEADER_WEBHOOK_ID, d.event_id.as_str())
        .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, ts.to_string())
        .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
        .body(d.body.clone())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) => Outcome::Failed(format!("HTTP {}", r.status().as_u16())),
        // The URL may carry a credential (user-info, a token in the query): never in the
        // message, which is logged and stored.
        Err(e) => Outcome::Failed(describe(&e.without_url())),
    }
}

/// `url` fit for a log line: user-info dropped, a query shown as `?…` (either may carry a
/// credential).
fn loggable(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let had_query = u.query().is_some();
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.set_query(None);
            u.set_fragment(None);
            let mut s = u.to_string();
            if had_query {
                s.push_str("?…");
            }
            s
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// A transport error with its causes (reqwest's top-level message alone says little).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

async fn record(
    db: &Db,
    worker: &str,
    d: &Delivery,
    url: &str,
    outcome: Outcome,
    backoff: &Backoff,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let url = loggable(url);
    let applied = match &outcome {
        Outcome::Delivered => {
            db.webhook_delivered(&d.event_id, d.endpoint_id, worker, now)
                .await?
        }
        Outcome::Failed(error) => {
            let failures = d.attempts.saturating_add(1);
            let wait = backoff.delay(u32::try_from(failures).unwrap_or(u32::MAX), rand::random());
            let next = now + to_chrono(wait);
            if failures == 1 {
                warn!(event = %d.event_id, %url, %error, retry_in_ms = wait.as_millis() as u64,
                      "webhook delivery failed; retrying with back-off");
            } else {
                debug!(event = %d.event_id, %url, %error, failures, "webhook delivery failed again");
            }
            db.webhook_failed(
                &d.event_id,
                d.endpoint_id,
                worker,
                failures,
                next,
                error,
                now,
            )
            .await?
        }
    };
    if !applied {
        warn!(event = %d.event_id, %url, "webhook row taken over by another worker; outcome not stored");
    } else if matches!(outcome, Outcome::Delivered) {
        debug!(event = %d.event_id, kind = %d.event_type, %url, "webhook delivered");
    }
    Ok(())
}

fn to_chrono(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_logged_url_carries_no_credentials() {
        assert_eq!(
            super::loggable("https://user:pw@hooks.example.org/in?token=abc"),
            "https://hooks.example.org/in?…"
        );
        assert_eq!(
            super::loggable("http://127.0.0.1:9/hook"),
            "http://127.0.0.1:9/hook"
        );
    }
}
