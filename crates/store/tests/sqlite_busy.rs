//! SQLite under lock contention: a writer that cannot get the lock reports `Unavailable`
//! (retryable) in bounded time, and a resend afterwards stores the message exactly once.

mod common;

use std::time::{Duration, Instant};

use common::msg;
use confab_store::{Db, DbOptions, StoreError, Uuid};
use sqlx::{Connection, SqliteConnection};
use tokio::time::timeout;

/// A fresh SQLite file, a `Db` on it with `opts`, and a second raw connection to hold locks.
async fn setup(opts: DbOptions) -> (std::path::PathBuf, Db, SqliteConnection) {
    let dir = std::env::temp_dir().join(format!("confab-store-{}", Uuid::new_v4()));
    let path = dir.join("chat.db");
    let db = common::connect_with(path.to_str().unwrap(), &opts).await;
    let blocker = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    (dir, db, blocker)
}

async fn hold_write_lock(conn: &mut SqliteConnection) {
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn release_write_lock(conn: &mut SqliteConnection) {
    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
}

async fn expect_unavailable_within(db: &Db, cid: &str, within: Duration) {
    let started = Instant::now();
    let result = timeout(within, db.insert_message(msg("r1", "alice", cid, cid)))
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?} while the database was locked"));
    match result {
        Err(e @ StoreError::Unavailable(_)) => {
            eprintln!("{cid}: {e} after {:?}", started.elapsed());
            assert!(e.is_retryable());
        }
        other => panic!("expected Unavailable while locked, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_locked_out_past_the_busy_timeout_gets_unavailable_then_succeeds() {
    let opts = DbOptions {
        sqlite_busy_timeout_ms: 100,
        ..DbOptions::default()
    };
    let (dir, db, mut blocker) = setup(opts).await;
    hold_write_lock(&mut blocker).await;
    expect_unavailable_within(&db, "c-1", Duration::from_secs(3)).await;
    release_write_lock(&mut blocker).await;
    db.insert_message(msg("r1", "alice", "c-1", "c-1"))
        .await
        .unwrap();
    assert_eq!(db.history("r1", None, 10).await.unwrap().len(), 1);
    db.close().await;
    blocker.close().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_stuck_longer_than_its_bound_is_abandoned_and_a_resend_stores_it_once() {
    // Busy timeout far above the operation bound (3 × 200 ms): the bound must answer first.
    let opts = DbOptions {
        acquire_timeout_ms: 200,
        sqlite_busy_timeout_ms: 10_000,
        ..DbOptions::default()
    };
    let (dir, db, mut blocker) = setup(opts).await;
    hold_write_lock(&mut blocker).await;
    expect_unavailable_within(&db, "c-1", Duration::from_secs(2)).await;
    release_write_lock(&mut blocker).await;
    // The abandoned insert may still have committed once the lock was released; the resend
    // must find it rather than store a second copy.
    timeout(
        Duration::from_secs(5),
        db.insert_message(msg("r1", "alice", "c-1", "c-1")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(db.history("r1", None, 10).await.unwrap().len(), 1);
    db.close().await;
    blocker.close().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
