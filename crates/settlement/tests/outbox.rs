//! The paid-session tables and the settlement worker, on SQLite and PostgreSQL, against a real anvil: a paid
//! session that ends is settled exactly once and its receipt recorded; one ended by the student is recorded as
//! ended elsewhere; a chain outage backs off and never fails the settlement.

mod common;

use std::time::Duration;

use alloy::providers::Provider;
use chrono::Utc;
use common::{
    address, advance_time,
    chain::{Chain, OWNER, RATE, SPANISH, STUDENT, TUTOR},
    db::{Backend, TestDb, BOTH},
    wallet_key,
};
use confab_settlement::{
    repo, Address, Backoff, ChainClient, ChainConfig, EndOutcome, EndReason, NewPaidSession,
    RepoError, SettlementWorker, Submission, TxHash, WorkerConfig, U256,
};
use uuid::Uuid;

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

fn new_session(chain_session_id: Option<U256>) -> NewPaidSession {
    NewPaidSession {
        room_id: "room-1".into(),
        student: address(STUDENT),
        tutor: address(TUTOR),
        language: SPANISH,
        chain_session_id,
    }
}

/// A fresh SQLite outbox, a fresh chain with a session started on it, and that session recorded
/// as a paid session: `(db, chain, chain session id, paid session id)`.
async fn started_on_sqlite() -> (TestDb, Chain, U256, Uuid) {
    let tdb = TestDb::create(Backend::Sqlite).await;
    let chain = Chain::deploy().await;
    let chain_id = chain.start_session().await;
    let paid = repo::start_paid_session(&tdb.db, &new_session(Some(chain_id)), Utc::now())
        .await
        .unwrap();
    (tdb, chain, chain_id, paid)
}

fn fast_policy() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
        multiplier: 2,
        jitter: 0.0,
    }
}

#[tokio::test]
async fn a_paid_session_that_ends_is_settled_once_by_the_worker_with_its_receipt_recorded() {
    within(async {
        for backend in BOTH {
            let tdb = TestDb::create(backend).await;
            let db = &tdb.db;
            let chain = Chain::deploy().await;
            let chain_id = chain.start_session().await;
            let paid = repo::start_paid_session(db, &new_session(Some(chain_id)), Utc::now())
                .await
                .unwrap();
            advance_time(&chain.student, 20).await;

            let settlement =
                repo::end_paid_session(db, paid, EndReason::ParticipantEnded, Utc::now())
                    .await
                    .unwrap();
            assert!(settlement.is_some());
            // Ending twice writes no second settlement.
            assert_eq!(
                repo::end_paid_session(db, paid, EndReason::Disconnected, Utc::now())
                    .await
                    .unwrap(),
                None
            );
            let before = chain.token_balance(address(TUTOR)).await;

            let worker = SettlementWorker::new(
                db.clone(),
                chain.client(OWNER),
                Backoff::default(),
                WorkerConfig::default(),
            );
            assert_eq!(worker.run_once().await.unwrap(), 1, "{backend:?}");
            assert_eq!(
                worker.run_once().await.unwrap(),
                0,
                "{backend:?}: nothing left to do"
            );

            let record = repo::settlement_of(db, paid).await.unwrap().unwrap();
            assert_eq!(record.state, "settled", "{backend:?}: {record:?}");
            let paid_out = chain.token_balance(address(TUTOR)).await - before;
            assert_eq!(record.total_paid, Some(paid_out.to_string()));
            let duration = record.duration_s.unwrap();
            assert!((20..=30).contains(&duration), "{duration}");
            assert_eq!(paid_out, U256::from(duration as u64 * RATE));
            assert!(record
                .tx_hash
                .as_deref()
                .is_some_and(|h| h.starts_with("0x") && h.len() == 66));
            assert!(record.gas_used.unwrap() > 21_000 && record.block_number.unwrap() > 0);
            assert_eq!(record.chain_session_id, Some(chain_id.to_string()));
            assert!(
                record.finished_at.is_some() && record.last_error.is_none() && record.attempts == 0
            );
            eprintln!("{backend:?}: settled {record:?}");

            // The tutor may start a new paid session now that the old one ended.
            repo::start_paid_session(db, &new_session(None), Utc::now())
                .await
                .unwrap();
            assert!(matches!(
                repo::start_paid_session(db, &new_session(None), Utc::now()).await,
                Err(RepoError::TutorBusy)
            ));
            tdb.teardown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_session_the_student_ended_first_is_recorded_as_ended_elsewhere_without_a_transaction() {
    within(async {
        let (tdb, chain, _, paid) = started_on_sqlite().await;
        let db = &tdb.db;
        advance_time(&chain.student, 5).await;
        let EndOutcome::Settled(by_student) = chain
            .client(STUDENT)
            .end_session(address(TUTOR), None)
            .await
            .unwrap()
        else {
            panic!("the student's end did not settle")
        };

        repo::end_paid_session(db, paid, EndReason::Disconnected, Utc::now())
            .await
            .unwrap()
            .unwrap();
        let worker = SettlementWorker::new(
            db.clone(),
            chain.client(OWNER),
            Backoff::default(),
            WorkerConfig::default(),
        );
        assert_eq!(worker.run_once().await.unwrap(), 1);
        let record = repo::settlement_of(db, paid).await.unwrap().unwrap();
        assert_eq!(record.state, "ended_elsewhere", "{record:?}");
        assert_eq!(record.tx_hash, None);
        assert_eq!(record.total_paid, Some(by_student.total_paid.to_string()));
        assert_eq!(record.duration_s, Some(by_student.duration_s as i64));
        tdb.teardown().await;
    })
    .await;
}

#[tokio::test]
async fn a_chain_outage_keeps_the_settlement_pending_with_back_off_and_never_fails_it() {
    within(async {
        for backend in BOTH {
            let tdb = TestDb::create(backend).await;
            let db = &tdb.db;
            let paid = repo::start_paid_session(db, &new_session(Some(U256::from(1))), Utc::now())
                .await
                .unwrap();
            repo::end_paid_session(db, paid, EndReason::HeartbeatTimeout, Utc::now())
                .await
                .unwrap()
                .unwrap();

            let dead = format!("http://127.0.0.1:{}", common::free_port());
            let config = ChainConfig {
                rpc_timeout: Duration::from_secs(2),
                ..ChainConfig::new(dead, Address::repeat_byte(1))
            };
            let client = ChainClient::new(config, &wallet_key(OWNER)).unwrap();
            // A first delay long enough that a loaded machine still checks it before it runs out
            // (20 ms made the "not due yet" checks flaky under CI load).
            let policy = Backoff {
                initial: Duration::from_millis(300),
                max_delay: Duration::from_millis(600),
                ..fast_policy()
            };
            let worker = SettlementWorker::new(db.clone(), client, policy, WorkerConfig::default());

            assert_eq!(worker.run_once().await.unwrap(), 1);
            let record = repo::settlement_of(db, paid).await.unwrap().unwrap();
            assert_eq!(
                (record.state.as_str(), record.attempts),
                ("pending", 1),
                "{backend:?}: {record:?}"
            );
            assert!(
                record
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("unreachable")),
                "{record:?}"
            );
            assert!(
                record.next_attempt_at > Utc::now(),
                "the retry waits for its back-off: {record:?}"
            );
            assert_eq!(
                worker.run_once().await.unwrap(),
                0,
                "not due before the back-off delay"
            );

            // With the schedule in milliseconds: far past the 20 attempts after which the old policy gave up.
            let worker = SettlementWorker::new(
                db.clone(),
                ChainClient::new(
                    ChainConfig::new(
                        format!("http://127.0.0.1:{}", common::free_port()),
                        Address::repeat_byte(1),
                    ),
                    &wallet_key(OWNER),
                )
                .unwrap(),
                Backoff {
                    initial: Duration::from_millis(1),
                    max_delay: Duration::from_millis(2),
                    ..fast_policy()
                },
                WorkerConfig::default(),
            );
            let mut passes = 0;
            loop {
                let record = repo::settlement_of(db, paid).await.unwrap().unwrap();
                assert_eq!(record.state, "pending", "{backend:?}: {record:?}");
                if record.attempts >= 30 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                worker.run_once().await.unwrap();
                passes += 1;
                assert!(passes < 2000, "no progress: {record:?}");
            }
            tdb.teardown().await;
        }
    })
    .await;
}

/// A worker for `db` sending as the backend wallet on `chain`.
fn worker(db: &confab_store::Db, chain: &Chain, config: WorkerConfig) -> SettlementWorker {
    SettlementWorker::new(db.clone(), chain.client(OWNER), Backoff::default(), config)
}

#[tokio::test]
async fn a_settlement_submitted_before_a_crash_is_completed_from_its_hash_without_a_second_send() {
    within(async {
        let (tdb, chain, chain_id, paid) = started_on_sqlite().await;
        let db = &tdb.db;
        let settlement = repo::end_paid_session(db, paid, EndReason::ParticipantEnded, Utc::now())
            .await
            .unwrap()
            .unwrap();
        // The previous process sent the transaction, recorded its hash, and died.
        let backend = chain.client(OWNER);
        let Submission::Sent(tx_hash) = backend
            .submit_end_session(address(TUTOR), Some(chain_id))
            .await
            .unwrap()
        else {
            panic!("nothing sent")
        };
        repo::mark_submitted(db, settlement, tx_hash, Utc::now())
            .await
            .unwrap();
        let nonce = backend
            .provider()
            .get_transaction_count(address(OWNER))
            .await
            .unwrap();

        assert_eq!(
            worker(db, &chain, WorkerConfig::default())
                .run_once()
                .await
                .unwrap(),
            1
        );
        let record = repo::settlement_of(db, paid).await.unwrap().unwrap();
        assert_eq!(record.state, "settled", "{record:?}");
        assert_eq!(record.tx_hash, Some(tx_hash.to_string()));
        assert_eq!(
            backend
                .provider()
                .get_transaction_count(address(OWNER))
                .await
                .unwrap(),
            nonce,
            "no second transaction"
        );
        tdb.teardown().await;
    })
    .await;
}

#[tokio::test]
async fn a_submitted_transaction_the_node_no_longer_knows_is_sent_again() {
    within(async {
        let (tdb, chain, _, paid) = started_on_sqlite().await;
        let db = &tdb.db;
        let settlement = repo::end_paid_session(db, paid, EndReason::ParticipantEnded, Utc::now())
            .await
            .unwrap()
            .unwrap();
        let dropped = TxHash::repeat_byte(0xab);
        repo::mark_submitted(db, settlement, dropped, Utc::now())
            .await
            .unwrap();

        assert_eq!(
            worker(db, &chain, WorkerConfig::default())
                .run_once()
                .await
                .unwrap(),
            1
        );
        let record = repo::settlement_of(db, paid).await.unwrap().unwrap();
        assert_eq!(record.state, "settled", "{record:?}");
        assert!(record.tx_hash.is_some_and(|h| h != dropped.to_string()));
        tdb.teardown().await;
    })
    .await;
}

#[tokio::test]
async fn the_worker_task_settles_as_soon_as_it_is_woken_and_stops_on_shutdown() {
    within(async {
        let tdb = TestDb::create(Backend::Sqlite).await;
        let db = tdb.db.clone();
        let chain = Chain::deploy().await;
        let chain_id = chain.start_session().await;
        let paid = repo::start_paid_session(&db, &new_session(Some(chain_id)), Utc::now())
            .await
            .unwrap();

        // A poll interval far beyond the test's bound: only the wake-up can settle in time.
        let config = WorkerConfig {
            idle_poll: Duration::from_secs(3600),
            ..WorkerConfig::default()
        };
        let worker = worker(&db, &chain, config);
        let waker = worker.waker();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_millis(100)).await; // let the first (empty) pass run

        repo::end_paid_session(&db, paid, EndReason::ParticipantEnded, Utc::now())
            .await
            .unwrap()
            .unwrap();
        waker.notify_one();
        let started = std::time::Instant::now();
        loop {
            let record = repo::settlement_of(&db, paid).await.unwrap().unwrap();
            if record.state == "settled" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "not settled: {record:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("settled {:?} after the wake-up", started.elapsed());

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(25), task)
            .await
            .expect("worker did not stop")
            .unwrap();
        tdb.teardown().await;
    })
    .await;
}
