//! Settlement robustness (issue 10) against a real anvil and real SQLite / PostgreSQL databases: a long chain
//! outage never fails a settlement; a send whose answer was lost is rebroadcast, never rebuilt; a stored
//! transaction whose nonce was taken is replaced; two workers on one PostgreSQL never work the same row; an
//! undecodable row is set aside and the outbox goes on; open settlements are measured and reported once.

mod common;

use std::time::Duration;

use alloy::{
    network::{Ethereum, Network, TransactionBuilder},
    primitives::keccak256,
    providers::Provider,
};
use chrono::{TimeDelta, Utc};
use common::{
    address,
    chain::{Chain, OWNER, SPANISH, STUDENT, TUTOR},
    db::{Backend, TestDb, BOTH},
    proxy::RpcProxy,
    wallet_key,
};
use confab_settlement::{
    repo, Address, Backoff, ChainClient, ChainConfig, EndReason, NewPaidSession, SettlementWorker,
    Signing, TxHash, WorkerConfig, U256,
};
use confab_store::Db;
use uuid::Uuid;

type TransactionRequest = <Ethereum as Network>::TransactionRequest;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

/// The test knob: the whole back-off schedule in milliseconds.
fn ms_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        multiplier: 2,
        jitter: 0.0,
    }
}

/// A paid session of `tutor` (chain session `chain_id`) recorded and ended: `(paid session id, settlement id)`.
async fn ended_paid_session(db: &Db, tutor: Address, chain_id: Option<U256>) -> (Uuid, Uuid) {
    let new = NewPaidSession {
        room_id: format!("room-{}", Uuid::now_v7()),
        student: address(STUDENT),
        tutor,
        language: SPANISH,
        chain_session_id: chain_id,
    };
    let paid = repo::start_paid_session(db, &new, Utc::now())
        .await
        .unwrap();
    let settlement = repo::end_paid_session(db, paid, EndReason::ParticipantEnded, Utc::now())
        .await
        .unwrap()
        .unwrap();
    (paid, settlement)
}

async fn record(db: &Db, paid: Uuid) -> repo::SettlementRecord {
    repo::settlement_of(db, paid).await.unwrap().unwrap()
}

/// Run one SQL statement with one text and one uuid parameter on either backend (test-side corruption).
async fn exec(db: &Db, sql: &'static str, text: &str, id: Uuid) {
    match db {
        Db::Postgres(pool) => {
            sqlx::query(sql)
                .bind(text)
                .bind(id)
                .execute(pool)
                .await
                .unwrap();
        }
        Db::Sqlite(pool) => {
            sqlx::query(sql)
                .bind(text)
                .bind(id)
                .execute(pool)
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_settlement_behind_a_long_chain_outage_retries_past_the_old_attempt_cap_and_is_sent_once_it_returns(
) {
    within(async {
        for backend in BOTH {
            let tdb = TestDb::create(backend).await;
            let db = tdb.db.clone();
            let chain = Chain::deploy().await;
            let chain_id = chain.start_session().await;
            let proxy = RpcProxy::start(&chain.anvil.url).await;
            proxy.set_down(true);
            let (paid, _) = ended_paid_session(&db, address(TUTOR), Some(chain_id)).await;

            let config = WorkerConfig {
                idle_poll: Duration::from_millis(2),
                ..WorkerConfig::default()
            };
            let client = chain.client_via(&proxy.url, Duration::from_secs(20));
            let worker = SettlementWorker::new(db.clone(), client, ms_backoff(), config);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(worker.run(async {
                let _ = stopped.await;
            }));

            // The old policy gave up after 20 attempts; 40 is well past it.
            loop {
                let r = record(&db, paid).await;
                assert_eq!(r.state, "pending", "{backend:?}: never gives up: {r:?}");
                if r.attempts >= 40 {
                    assert!(r
                        .last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("unreachable")));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(proxy.sends(), 0);

            proxy.set_down(false);
            let r = loop {
                let r = record(&db, paid).await;
                if r.state != "pending" && r.state != "submitted" {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            assert_eq!(r.state, "settled", "{backend:?}: {r:?}");
            assert!(r.attempts >= 40, "{r:?}");
            let events = chain.session_ended_events().await;
            assert_eq!(
                events.len(),
                1,
                "{backend:?}: exactly one SessionEnded: {events:?}"
            );
            assert_eq!(events[0].0, chain_id);
            assert_eq!(r.tx_hash, Some(events[0].1.to_string()));
            assert_eq!(proxy.sends(), 1, "one broadcast once the chain was back");

            stop.send(()).unwrap();
            tokio::time::timeout(Duration::from_secs(25), task)
                .await
                .expect("worker did not stop")
                .unwrap();
            tdb.teardown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_send_whose_answer_was_lost_after_the_node_accepted_it_is_rebroadcast_and_mined_exactly_once(
) {
    within(async {
        for backend in BOTH {
            let tdb = TestDb::create(backend).await;
            let db = &tdb.db;
            let chain = Chain::deploy().await;
            let chain_id = chain.start_session().await;
            let (paid, _) = ended_paid_session(db, address(TUTOR), Some(chain_id)).await;
            let proxy = RpcProxy::start(&chain.anvil.url).await;
            let client = chain.client_via(&proxy.url, Duration::from_millis(300));
            let nonce_before = client
                .provider()
                .get_transaction_count(address(OWNER))
                .await
                .unwrap();
            let worker =
                SettlementWorker::new(db.clone(), client, ms_backoff(), WorkerConfig::default());

            // The node takes the transaction into its pool (no mining), and its answer never arrives.
            chain.set_automine(false).await;
            proxy.drop_next_send_answer();
            assert_eq!(worker.run_once().await.unwrap(), 1);
            let first = record(db, paid).await;
            assert_eq!(
                (first.state.as_str(), first.attempts),
                ("submitted", 1),
                "{backend:?}: {first:?}"
            );
            assert_eq!(proxy.sends(), 1);
            let hash: TxHash = first.tx_hash.as_deref().unwrap().parse().unwrap();
            let raw: alloy::primitives::Bytes = first.raw_tx.as_deref().unwrap().parse().unwrap();
            assert_eq!(
                keccak256(&raw),
                hash,
                "the stored raw transaction is the stored hash"
            );
            assert_eq!(first.tx_nonce, Some(nonce_before as i64));
            assert!(
                chain
                    .student
                    .get_transaction_by_hash(hash)
                    .await
                    .unwrap()
                    .is_some(),
                "the node accepted it although the sender saw no answer"
            );

            // Retry while it is still unmined: the same transaction goes out again, no second one is built.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(worker.run_once().await.unwrap(), 1);
            let second = record(db, paid).await;
            assert_eq!(second.state, "submitted", "{second:?}");
            assert_eq!(second.tx_hash, first.tx_hash);
            assert_eq!(second.raw_tx, first.raw_tx);
            assert_eq!(proxy.sends(), 2, "rebroadcast");

            chain.mine().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(worker.run_once().await.unwrap(), 1);
            let done = record(db, paid).await;
            assert_eq!(done.state, "settled", "{backend:?}: {done:?}");
            assert_eq!(
                done.tx_hash, first.tx_hash,
                "the stored transaction is what got mined"
            );
            let events = chain.session_ended_events().await;
            assert_eq!(events, vec![(chain_id, hash)], "{backend:?}");
            assert_eq!(
                chain
                    .student
                    .get_transaction_count(address(OWNER))
                    .await
                    .unwrap(),
                nonce_before + 1,
                "one transaction from the backend wallet"
            );
            tdb.teardown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_stored_transaction_whose_nonce_was_taken_is_proven_dead_and_replaced_by_a_new_one() {
    within(async {
        let tdb = TestDb::create(Backend::Sqlite).await;
        let db = &tdb.db;
        let chain = Chain::deploy().await;
        let chain_id = chain.start_session().await;
        let (paid, id) = ended_paid_session(db, address(TUTOR), Some(chain_id)).await;

        // A previous process claimed the row, signed and stored the transaction, and died before sending it.
        let client = chain.client(OWNER);
        let now = Utc::now();
        let claimed = repo::claim_due_settlements(db, "previous", now, now, 10)
            .await
            .unwrap();
        assert_eq!(claimed.due.len(), 1);
        let Signing::Signed(stale) = client
            .sign_end_session(address(TUTOR), Some(chain_id))
            .await
            .unwrap()
        else {
            panic!("nothing signed")
        };
        assert!(repo::store_signed(db, id, "previous", &stale, Utc::now())
            .await
            .unwrap());
        // Meanwhile the wallet's nonce went to another transaction.
        let owner = chain.wallet(OWNER);
        assert_eq!(
            owner.get_transaction_count(address(OWNER)).await.unwrap(),
            stale.nonce
        );
        let other = owner
            .send_transaction(
                TransactionRequest::default()
                    .with_to(address(STUDENT))
                    .with_value(U256::from(1)),
            )
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(other.status());
        assert_eq!(
            owner.get_transaction_count(address(OWNER)).await.unwrap(),
            stale.nonce + 1,
            "the other transaction took our nonce"
        );

        let worker =
            SettlementWorker::new(db.clone(), client, ms_backoff(), WorkerConfig::default());
        assert_eq!(worker.run_once().await.unwrap(), 1);
        let r = record(db, paid).await;
        assert_eq!(r.state, "settled", "{r:?}");
        let new_hash: TxHash = r.tx_hash.as_deref().unwrap().parse().unwrap();
        assert_ne!(new_hash, stale.hash);
        assert_eq!(r.tx_nonce, Some(stale.nonce as i64 + 1));
        assert_eq!(
            chain.session_ended_events().await,
            vec![(chain_id, new_hash)]
        );
        assert!(owner
            .get_transaction_receipt(stale.hash)
            .await
            .unwrap()
            .is_none());
        tdb.teardown().await;
    })
    .await;
}

/// Run passes until no settlement is open; returns how many rows this worker claimed.
async fn drain(db: &Db, worker: &SettlementWorker) -> usize {
    let mut claimed = 0;
    loop {
        let n = worker.run_once().await.unwrap();
        claimed += n;
        if n == 0 {
            let open = repo::backlog(db, Utc::now(), Duration::from_secs(600))
                .await
                .unwrap()
                .open;
            if open == 0 {
                return claimed;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn two_workers_on_one_postgresql_work_each_due_row_exactly_once() {
    within(async {
        const N: usize = 5;
        let tdb = TestDb::create(Backend::Postgres).await;
        let db = &tdb.db;
        let chain = Chain::deploy().await;
        let mut rows = vec![];
        for _ in 0..N {
            let tutor = chain.new_tutor().await;
            let chain_id = chain.start_session_with(tutor).await;
            let (paid, _) = ended_paid_session(db, tutor, Some(chain_id)).await;
            rows.push((paid, chain_id));
        }
        let nonce_before = chain
            .student
            .get_transaction_count(address(OWNER))
            .await
            .unwrap();

        // Two servers: their own pools on the same database, their own chain clients on the one wallet.
        let second_pool = match db {
            Db::Postgres(pool) => Db::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(3)
                    .connect_with(pool.connect_options().as_ref().clone())
                    .await
                    .unwrap(),
            ),
            Db::Sqlite(_) => unreachable!(),
        };
        let config = WorkerConfig {
            batch: 1,
            ..WorkerConfig::default()
        };
        let workers = [
            SettlementWorker::new(
                db.clone(),
                chain.client(OWNER),
                ms_backoff(),
                config.clone(),
            ),
            SettlementWorker::new(second_pool, chain.client(OWNER), ms_backoff(), config),
        ];
        let (a, b) = tokio::join!(drain(db, &workers[0]), drain(db, &workers[1]));
        eprintln!("worker a claimed {a}, worker b claimed {b}");
        assert_eq!(a + b, N, "each row claimed exactly once");

        for (paid, chain_id) in &rows {
            let r = record(db, *paid).await;
            assert_eq!(r.state, "settled", "{r:?}");
            assert_eq!(r.attempts, 0, "no failed attempt: {r:?}");
            assert_eq!(chain.ended_count(*chain_id).await, 1, "{chain_id}");
        }
        assert_eq!(
            chain
                .student
                .get_transaction_count(address(OWNER))
                .await
                .unwrap(),
            nonce_before + N as u64,
            "one endSession per row, none wasted"
        );
        tdb.teardown().await;
    })
    .await;
}

#[tokio::test]
async fn an_undecodable_row_is_set_aside_and_a_good_row_behind_it_still_settles() {
    within(async {
        for backend in BOTH {
            let tdb = TestDb::create(backend).await;
            let db = &tdb.db;
            let chain = Chain::deploy().await;
            // Older rows first, so each bad one is claimed before the good one (one row per pass).
            let other_tutor = chain.new_tutor().await;
            let (bad_paid, bad) = ended_paid_session(db, other_tutor, Some(U256::from(99))).await;
            exec(
                db,
                "UPDATE settlements SET tutor_address = $1 WHERE id = $2",
                "not-an-address",
                bad,
            )
            .await;
            let mut bad_rows = vec![(bad_paid, bad, "tutor address")];
            if backend == Backend::Sqlite {
                // SQLite keeps whatever type it is given: a text where a number belongs fails to decode.
                let tutor = chain.new_tutor().await;
                let (paid, id) = ended_paid_session(db, tutor, None).await;
                exec(
                    db,
                    "UPDATE settlements SET attempts = $1 WHERE id = $2",
                    "many",
                    id,
                )
                .await;
                bad_rows.push((paid, id, "decode"));
            }
            let chain_id = chain.start_session().await;
            let (good_paid, _) = ended_paid_session(db, address(TUTOR), Some(chain_id)).await;

            let config = WorkerConfig {
                batch: 1,
                ..WorkerConfig::default()
            };
            let worker =
                SettlementWorker::new(db.clone(), chain.client(OWNER), ms_backoff(), config);
            for _ in 0..bad_rows.len() + 1 {
                assert_eq!(worker.run_once().await.unwrap(), 1, "{backend:?}");
            }
            assert_eq!(
                worker.run_once().await.unwrap(),
                0,
                "{backend:?}: nothing left"
            );

            let good = record(db, good_paid).await;
            assert_eq!(good.state, "settled", "{backend:?}: {good:?}");
            assert_eq!(chain.ended_count(chain_id).await, 1);
            for (paid, id, why) in &bad_rows {
                let (at, reason): (Option<chrono::DateTime<Utc>>, Option<String>) = match db {
                    Db::Postgres(pool) => sqlx::query_as(
                        "SELECT set_aside_at, set_aside_reason FROM settlements WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .unwrap(),
                    Db::Sqlite(pool) => sqlx::query_as(
                        "SELECT set_aside_at, set_aside_reason FROM settlements WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .unwrap(),
                };
                assert!(at.is_some(), "{backend:?}: {paid} set aside");
                assert!(
                    reason.as_deref().is_some_and(|r| r.contains(why)),
                    "{backend:?}: {reason:?}"
                );
            }
            let backlog = repo::backlog(db, Utc::now(), Duration::from_secs(600))
                .await
                .unwrap();
            assert_eq!(
                (backlog.open, backlog.set_aside),
                (0, bad_rows.len() as u64),
                "{backend:?}: {backlog:?}"
            );

            // Repaired by an operator and released, the row is due again.
            exec(
                db,
                "UPDATE settlements SET tutor_address = $1 WHERE id = $2",
                &other_tutor.to_checksum(None),
                bad,
            )
            .await;
            assert!(repo::release_set_aside(db, bad, Utc::now()).await.unwrap());
            let due = repo::due_settlements(db, Utc::now(), 10).await.unwrap();
            assert_eq!(due.iter().map(|s| s.id).collect::<Vec<_>>(), vec![bad]);
            tdb.teardown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_leased_row_is_not_claimed_by_another_worker_until_the_lease_runs_out() {
    within(async {
        for backend in BOTH {
            let tdb = TestDb::create(backend).await;
            let db = &tdb.db;
            let (paid, id) = ended_paid_session(db, address(TUTOR), Some(U256::from(1))).await;
            let now = Utc::now();
            let lease = now + TimeDelta::minutes(5);
            let a = repo::claim_due_settlements(db, "a", now, lease, 10)
                .await
                .unwrap();
            assert_eq!(a.due.iter().map(|s| s.id).collect::<Vec<_>>(), vec![id]);
            let b = repo::claim_due_settlements(db, "b", now + TimeDelta::minutes(4), lease, 10)
                .await
                .unwrap();
            assert!(b.is_empty(), "{backend:?}: leased to a");

            // a crashed: once its lease ran out, b takes the row, and a can no longer write to it.
            let later = now + TimeDelta::minutes(6);
            let b = repo::claim_due_settlements(db, "b", later, later + TimeDelta::minutes(5), 10)
                .await
                .unwrap();
            assert_eq!(b.due.len(), 1, "{backend:?}");
            let signed = confab_settlement::SignedTx {
                hash: keccak256([1u8]),
                nonce: 0,
                raw: vec![1u8].into(),
            };
            assert!(!repo::store_signed(db, id, "a", &signed, later)
                .await
                .unwrap());
            let update = b.due[0].after_attempt(
                Err(&confab_settlement::ChainError::Unreachable("down".into())),
                later,
                &ms_backoff(),
                0.0,
            );
            assert!(!repo::record_update(db, id, "a", &update, later)
                .await
                .unwrap());
            assert!(repo::record_update(db, id, "b", &update, later)
                .await
                .unwrap());
            let r = record(db, paid).await;
            assert_eq!(
                (r.leased_by.as_deref(), r.lease_until, r.attempts),
                (Some("b"), None, 1),
                "{backend:?}: recorded by b, lease released"
            );
            tdb.teardown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_settlement_open_past_the_threshold_is_counted_and_reported_once() {
    within(async {
        for backend in BOTH {
            let tdb = TestDb::create(backend).await;
            let db = &tdb.db;
            let (_, id) = ended_paid_session(db, address(TUTOR), Some(U256::from(1))).await;
            let threshold = Duration::from_secs(600);
            let now = Utc::now();
            let b = repo::backlog(db, now, threshold).await.unwrap();
            assert_eq!((b.open, b.overdue, b.set_aside), (1, 0, 0), "{backend:?}");
            assert!(b.oldest_open_age(now) < Duration::from_secs(60));
            assert!(repo::take_newly_overdue(db, now, threshold)
                .await
                .unwrap()
                .is_empty());

            let later = now + TimeDelta::minutes(11);
            let b = repo::backlog(db, later, threshold).await.unwrap();
            assert_eq!((b.open, b.overdue), (1, 1), "{backend:?}");
            let age = b.oldest_open_age(later);
            assert!(
                age >= Duration::from_secs(660) && age < Duration::from_secs(720),
                "{age:?}"
            );
            let reported = repo::take_newly_overdue(db, later, threshold)
                .await
                .unwrap();
            assert_eq!(reported.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id]);
            assert!(
                repo::take_newly_overdue(db, later + TimeDelta::minutes(5), threshold)
                    .await
                    .unwrap()
                    .is_empty(),
                "{backend:?}: reported once, not per pass"
            );

            // The worker publishes the same measure to its reader after each pass.
            let dead = format!("http://127.0.0.1:{}", common::free_port());
            let client = ChainClient::new(
                ChainConfig::new(dead, Address::repeat_byte(1)),
                &wallet_key(OWNER),
            )
            .unwrap();
            let config = WorkerConfig {
                overdue_after: Duration::ZERO,
                ..WorkerConfig::default()
            };
            let worker = SettlementWorker::new(db.clone(), client, ms_backoff(), config);
            let reader = worker.backlog();
            assert_eq!(reader.latest(), None);
            assert_eq!(worker.run_once().await.unwrap(), 1);
            let b = reader.latest().expect("measured after the pass");
            assert_eq!((b.open, b.overdue), (1, 1), "{backend:?}: {b:?}");
            assert!(b.oldest_open_since.is_some());
            tdb.teardown().await;
        }
    })
    .await;
}
