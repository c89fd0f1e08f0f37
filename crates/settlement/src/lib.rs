//! confab-settlement: paying tutors for paid sessions through the LangDAO contract, exactly once.
//!
//! # Pieces
//! - [`bindings`]: `sol!` bindings generated from the committed contract artifacts (`contracts/out/*.json`).
//! - [`ChainClient`]: one per backend wallet, owning the one HTTP provider. Reads `activeSessions(tutor)` and
//!   ends a session with `endSession(tutor)`: check the chain, dry-run (`eth_call`), send, await the receipt,
//!   decode `SessionEnded`. It keeps no nonce of its own (the node's pending count is asked per send).
//! - [`ChainError`]: every chain failure, classified as transient (retry) or permanent (stop, show an operator).
//! - [`Backoff`]: the pure retry policy (exponential, capped, jittered, bounded attempts).
//! - [`WalletKey`]: the backend wallet key from `CONFAB_WALLET_KEY` or `CONFAB_WALLET_KEY_FILE`, in a secret
//!   type whose `Debug` is redacted.
//! - [`outbox`]: the settlement state machine (pending → submitted → settled | ended elsewhere | failed),
//!   pure; [`repo`]: the `paid_sessions` and `settlements` tables on [`confab_store::Db`].
//! - [`SettlementWorker`]: the long-lived task that drives the outbox.
//! - [`lifecycle`]: when a room's paid session ends (End pressed, disconnect past the grace period, heartbeat
//!   timeout), a pure state machine for the room task.
//!
//! # Tasks and ownership
//! One task, the [`SettlementWorker`], owns the [`ChainClient`] and is therefore the only sender for the
//! wallet: settlements are attempted one after the other, so nonces never race. Whoever ends a paid session
//! ([`repo::end_paid_session`], which writes the outbox row in the same transaction) pokes the worker through
//! its [`waker`](SettlementWorker::waker) (`tokio::sync::Notify`: a wake-up while it is busy is remembered, a
//! burst collapses into one pass); without a poke it still polls every `idle_poll`. On shutdown it makes one
//! last bounded pass; whatever is left is picked up after the restart.
//!
//! # Exactly once
//! The contract pays only while a session is active and `endSession` deactivates it, so a transaction repeated
//! after a crash or a timeout cannot pay twice. The client avoids even sending such repeats (it checks the chain
//! and dry-runs first) and reports [`EndOutcome::AlreadyEnded`] when someone else (the student, the tutor, or an
//! earlier transaction of ours) ended the session. The worker stores the transaction hash as soon as
//! [`ChainClient::submit_end_session`] returns it; after a restart it asks [`ChainClient::check_submitted`] and
//! [`ChainClient::transaction_known`] before sending anything new. With the contract's session id known, a
//! newer session of the same tutor is never ended by an old settlement.
//!
//! Units: token amounts are in the token's smallest unit ("wei" of the ERC-20), times in seconds, gas in gas
//! units, gas prices in wei.

pub mod backoff;
pub mod bindings;
pub mod client;
pub mod error;
pub mod key;
pub mod lifecycle;
pub mod outbox;
pub mod repo;
pub mod worker;

pub use alloy::primitives::{Address, TxHash, U256};
pub use backoff::{Backoff, RetryDecision};
pub use client::{
    ActiveSession, ChainClient, ChainConfig, EndOutcome, EndedSession, Settled, Submission,
};
pub use error::{ChainError, ErrorClass, NOT_ACTIVE_REASON};
pub use key::{KeyError, WalletKey, WALLET_KEY_ENV, WALLET_KEY_FILE_ENV};
pub use lifecycle::{EndPolicy, PaidSessionTracker, Party, PresenceEvent};
pub use outbox::{NextStep, Settlement, SettlementState, Update};
pub use repo::{EndReason, NewPaidSession, PaidSessionRecord, RepoError, SettlementRecord};
pub use worker::{SettlementWorker, WorkerConfig};
