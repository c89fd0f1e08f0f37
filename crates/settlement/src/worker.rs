//! The settlement worker: the task that sends `endSession` with the backend wallet. Each pass it leases due rows
//! from the outbox ([`crate::repo::claim_due_settlements`]: other workers sharing the database skip them while the
//! lease holds), makes one attempt each with the [`ChainClient`], and stores the transition the outbox state
//! machine ([`crate::outbox`]) computes. Rows are handled one after the other.
//!
//! An attempt signs `endSession` locally and stores the signed transaction before broadcasting it; a retry
//! (after a timeout, an outage, a restart, or another worker taking over an expired lease) rebroadcasts that
//! stored transaction. A new one is signed only when the stored one is proven dead (its nonce consumed by another
//! transaction, no receipt), so at most one `endSession` per settlement can ever be mined.
//!
//! After each pass the worker reports settlements open for longer than [`WorkerConfig::overdue_after`] (one
//! `warn!` per row, once) and publishes the outbox's [`Backlog`] to its [`BacklogReader`]s.

use std::{future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use confab_store::Db;
use tokio::sync::{watch, Notify};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::{
    backoff::Backoff,
    client::{Broadcast, ChainClient, EndOutcome, Signing},
    error::ChainError,
    outbox::{NextStep, Settlement, SettlementState},
    repo::{self, Backlog, RepoError},
};

/// How often in a row one attempt signs anew because the fresh transaction's nonce was taken meanwhile (another
/// sender on the same wallet); past that the attempt fails transiently and the next one continues.
const MAX_SIGNS_PER_ATTEMPT: usize = 3;

/// Worker pacing, leases and reporting.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Rows claimed per pass.
    pub batch: i64,
    /// Sleep between passes when nobody wakes the worker (due retries are picked up this late at most).
    pub idle_poll: Duration,
    /// After the shutdown signal: the bound of the one last pass that flushes due settlements.
    pub flush_timeout: Duration,
    /// How long a claimed row stays reserved to this worker. Make it longer than one attempt (the chain
    /// client's receipt timeout plus a few RPC timeouts): if it runs out first, another worker may take the row
    /// over, which costs a rebroadcast of the stored transaction, never a second `endSession`. A crashed
    /// worker's rows are picked up once it has run out; a clean shutdown releases them at once.
    pub lease: Duration,
    /// A settlement still open this long after its paid session ended is logged once with `warn!` and counted
    /// in [`Backlog::overdue`].
    pub overdue_after: Duration,
}

impl Default for WorkerConfig {
    /// 32 rows a pass, a pass at least every 2 s, 20 s to flush at shutdown, 5 min leases, overdue after 10 min.
    fn default() -> Self {
        Self {
            batch: 32,
            idle_poll: Duration::from_secs(2),
            flush_timeout: Duration::from_secs(20),
            lease: Duration::from_secs(300),
            overdue_after: Duration::from_secs(600),
        }
    }
}

/// A cheap reader of the outbox's [`Backlog`] as the worker last measured it (after every pass, so at most
/// [`WorkerConfig::idle_poll`] old while the worker runs). Clone freely; reading does no I/O. For metrics:
/// [`Backlog::overdue`] and [`Backlog::oldest_open_age`].
#[derive(Debug, Clone)]
pub struct BacklogReader(watch::Receiver<Option<Backlog>>);

impl BacklogReader {
    /// The last measurement; `None` before the first pass.
    pub fn latest(&self) -> Option<Backlog> {
        *self.0.borrow()
    }

    /// Whether the worker still runs (its task ended, by shutdown or panic, once this is
    /// `false`); for readiness probes.
    pub fn worker_running(&self) -> bool {
        self.0.has_changed().is_ok()
    }
}

/// Owns a chain client (the wallet's sender in this process) and a handle on the database.
#[derive(Debug)]
pub struct SettlementWorker {
    /// The outbox's database.
    db: Db,
    /// The backend wallet's client.
    client: ChainClient,
    /// Retry policy for transient failures.
    policy: Backoff,
    /// Pacing.
    config: WorkerConfig,
    /// Woken by whoever writes a settlement, so it is sent at once rather than at the next poll.
    wake: Arc<Notify>,
    /// This worker's lease holder name (`leased_by`): unique per worker instance.
    id: String,
    /// Where each pass publishes the backlog.
    backlog: watch::Sender<Option<Backlog>>,
}

/// Why an attempt stopped.
enum AttemptError {
    /// The chain side failed; the outbox decides what follows.
    Chain(ChainError),
    /// Another worker holds the row now: record nothing, broadcast nothing.
    LeaseLost,
    /// The database failed; nothing more is attempted this pass.
    Repo(RepoError),
}

impl From<ChainError> for AttemptError {
    fn from(e: ChainError) -> Self {
        Self::Chain(e)
    }
}

impl From<RepoError> for AttemptError {
    fn from(e: RepoError) -> Self {
        Self::Repo(e)
    }
}

impl SettlementWorker {
    /// A worker over `db` sending with `client`.
    pub fn new(db: Db, client: ChainClient, policy: Backoff, config: WorkerConfig) -> Self {
        Self {
            db,
            client,
            policy,
            config,
            wake: Arc::new(Notify::new()),
            id: format!("worker-{}", Uuid::now_v7()),
            backlog: watch::Sender::new(None),
        }
    }

    /// A handle to wake the worker after writing a settlement (`notify_one`).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// A reader of the backlog this worker measures after each pass (for the metrics endpoint).
    pub fn backlog(&self) -> BacklogReader {
        BacklogReader(self.backlog.subscribe())
    }

    /// This worker's name in the `leased_by` column.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Run passes until `shutdown` completes, then one last pass bounded by `flush_timeout`, then release this
    /// worker's leases.
    ///
    /// A pass in progress (which may be waiting for a receipt) is abandoned when `shutdown` completes: that is
    /// safe because the signed transaction is stored before it is broadcast, and the next attempt (here after a
    /// restart, or by another worker) rebroadcasts it. A full batch is followed by the next one at once.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                result = self.run_once() => match result {
                    Ok(n) if i64::try_from(n).unwrap_or(i64::MAX) >= self.config.batch => continue,
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "settlement pass failed; retrying at the next pass"),
                },
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.idle_poll) => {}
            }
        }
        match tokio::time::timeout(self.config.flush_timeout, self.run_once()).await {
            Ok(Ok(n)) => info!(attempted = n, "settlement worker stopped after a last pass"),
            Ok(Err(e)) => warn!(error = %e, "last settlement pass failed"),
            Err(_) => {
                warn!("last settlement pass timed out; the rest is settled after the restart")
            }
        }
        if let Err(e) = repo::release_leases(&self.db, &self.id).await {
            warn!(error = %e, "could not release the settlement leases; they run out by themselves");
        }
    }

    /// One pass: claim the settlements due now, set aside those that do not decode, attempt the others one
    /// after the other, then report overdue rows and measure the backlog. Returns how many rows were claimed
    /// (attempted or set aside).
    ///
    /// Errors: the database failing while claiming or recording; the rows still claimed are released.
    pub async fn run_once(&self) -> Result<usize, RepoError> {
        let now = Utc::now();
        let claimed = repo::claim_due_settlements(
            &self.db,
            &self.id,
            now,
            now + to_chrono(self.config.lease),
            self.config.batch,
        )
        .await?;
        let n = claimed.len();
        for (id, reason) in &claimed.set_aside {
            error!(settlement = %id, %reason,
                   "settlement row does not decode: set aside (set_aside_at) for an operator; the outbox goes on");
        }
        for settlement in claimed.due {
            if let Err(e) = self.attempt(settlement).await {
                if let Err(release) = repo::release_leases(&self.db, &self.id).await {
                    debug!(error = %release, "could not release leases after a failed pass");
                }
                return Err(e);
            }
        }
        self.report(Utc::now()).await;
        Ok(n)
    }

    /// Log newly overdue settlements (once per row) and publish the backlog. Failures are logged only: they
    /// must not stop settling.
    async fn report(&self, now: DateTime<Utc>) {
        match repo::take_newly_overdue(&self.db, now, self.config.overdue_after).await {
            Ok(rows) => {
                for row in rows {
                    let open_s = (now - row.created_at).num_seconds();
                    warn!(settlement = %row.id, paid_session = %row.paid_session_id, state = %row.state,
                          attempts = row.attempts, open_s, last_error = row.last_error.as_deref().unwrap_or(""),
                          "settlement still open past the overdue threshold; still retrying");
                }
            }
            Err(e) => debug!(error = %e, "could not look for overdue settlements"),
        }
        match repo::backlog(&self.db, now, self.config.overdue_after).await {
            Ok(b) => {
                self.backlog.send_replace(Some(b));
            }
            Err(e) => debug!(error = %e, "could not measure the settlement backlog"),
        }
    }

    /// One attempt on one settlement claimed by this worker, its outcome stored; returns the settlement as this
    /// worker left it (unchanged in the database if the lease was lost meanwhile).
    ///
    /// Errors: the database failing (then nothing more should be attempted in this pass).
    pub async fn attempt(&self, mut settlement: Settlement) -> Result<Settlement, RepoError> {
        let result = match self.chain_attempt(&mut settlement).await {
            Ok(outcome) => Ok(outcome),
            Err(AttemptError::Chain(e)) => Err(e),
            Err(AttemptError::Repo(e)) => return Err(e),
            Err(AttemptError::LeaseLost) => {
                warn!(settlement = %settlement.id, "settlement taken over by another worker; leaving it");
                return Ok(settlement);
            }
        };
        let update = settlement.after_attempt(
            result.as_ref().map(Clone::clone),
            Utc::now(),
            &self.policy,
            rand::random(),
        );
        if !repo::record_update(&self.db, settlement.id, &self.id, &update, Utc::now()).await? {
            warn!(settlement = %settlement.id, "settlement taken over by another worker; outcome not stored");
            return Ok(settlement);
        }
        let settlement = settlement.apply(update);
        match (&settlement.state, &result) {
            (SettlementState::Failed { reason }, _) => {
                error!(settlement = %settlement.id, tutor = %settlement.tutor, %reason, "settlement failed for good")
            }
            // The first failure of a run is worth a warning; the retries after it are reported once the row is
            // overdue (see `report`), not once per retry.
            (_, Err(e)) if settlement.attempts == 1 => warn!(settlement = %settlement.id,
                next = %settlement.next_attempt_at, error = %e, "settlement attempt failed; retrying with back-off"),
            (_, Err(e)) => info!(settlement = %settlement.id, attempts = settlement.attempts,
                next = %settlement.next_attempt_at, error = %e, "settlement attempt failed again; retrying"),
            _ => {
                info!(settlement = %settlement.id, state = settlement.state.as_str(), "settlement done")
            }
        }
        Ok(settlement)
    }

    /// The chain side of an attempt. A stored transaction is looked up and rebroadcast; a new one is signed and
    /// stored (in `settlement` and the database) before its first broadcast.
    async fn chain_attempt(&self, settlement: &mut Settlement) -> Result<EndOutcome, AttemptError> {
        let (tutor, expected) = (settlement.tutor, settlement.chain_session_id);
        match settlement.next_step() {
            NextStep::Nothing => {
                return Err(ChainError::Config("attempt on a finished settlement".into()).into())
            }
            NextStep::Rebroadcast(tx) => {
                if let Some(outcome) = self
                    .client
                    .check_submitted(tx.hash, tutor, expected)
                    .await?
                {
                    return Ok(outcome);
                }
                match self.client.broadcast(&tx).await? {
                    Broadcast::Accepted => {
                        return Ok(self
                            .client
                            .wait_for_settlement(tx.hash, tutor, expected)
                            .await?)
                    }
                    Broadcast::Dead => {
                        warn!(settlement = %settlement.id, tx_hash = %tx.hash, nonce = tx.nonce,
                              "stored endSession can never be mined (its nonce was used by another transaction); signing a new one");
                        settlement.state = SettlementState::Pending;
                    }
                }
            }
            NextStep::Recheck(tx_hash) => {
                // A row sent before signed transactions were stored: only its hash is known.
                if let Some(outcome) = self
                    .client
                    .check_submitted(tx_hash, tutor, expected)
                    .await?
                {
                    return Ok(outcome);
                }
                if self.client.transaction_known(tx_hash).await? {
                    return Ok(self
                        .client
                        .wait_for_settlement(tx_hash, tutor, expected)
                        .await?);
                }
                warn!(%tx_hash, "earlier endSession transaction was dropped by the node; signing a new one");
            }
            NextStep::Submit => {}
        }
        self.sign_store_broadcast(settlement).await
    }

    /// Check the chain, sign, store, broadcast, wait for the receipt. Never broadcasts a transaction that is not
    /// stored with this worker's lease.
    async fn sign_store_broadcast(
        &self,
        settlement: &mut Settlement,
    ) -> Result<EndOutcome, AttemptError> {
        let (tutor, expected) = (settlement.tutor, settlement.chain_session_id);
        for _ in 0..MAX_SIGNS_PER_ATTEMPT {
            let signed = match self.client.sign_end_session(tutor, expected).await? {
                Signing::AlreadyEnded { ended } => return Ok(EndOutcome::AlreadyEnded { ended }),
                Signing::Signed(signed) => signed,
            };
            if !repo::store_signed(&self.db, settlement.id, &self.id, &signed, Utc::now()).await? {
                return Err(AttemptError::LeaseLost);
            }
            settlement.state = SettlementState::Signed(signed.clone());
            match self.client.broadcast(&signed).await? {
                Broadcast::Accepted => {
                    return Ok(self
                        .client
                        .wait_for_settlement(signed.hash, tutor, expected)
                        .await?)
                }
                Broadcast::Dead => {
                    debug!(settlement = %settlement.id, nonce = signed.nonce,
                           "the nonce was taken by another transaction while signing; signing again");
                }
            }
        }
        Err(ChainError::NonceOrFee(format!(
            "the wallet's nonce was taken by other transactions {MAX_SIGNS_PER_ATTEMPT} times while signing"
        ))
        .into())
    }
}

fn to_chrono(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}
