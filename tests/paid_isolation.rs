//! A hung chain and a database outage stay inside the paid session that needs them: with the
//! chain RPC accepting connections and never answering, and PostgreSQL cut, a student's
//! `session_started` is refused with `chain_unavailable` after the chain timeout, while
//! signaling in another room keeps answering `ping` within 1 s and the paid-session status of
//! any room still answers.

mod common;
mod paid_common;

use common::{drop_pg_database, fresh_pg_database, CuttableProxy};
use confab_protocol::{ErrorCode, ServerMessage};
use paid_common::chainkit::chain::{Chain, STUDENT};
use paid_common::{addr, join_as, paid_app, rpc_addr, session_started};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TCP proxy that forwards until [`HangingProxy::hang`], after which every connection, open
/// or new, is held open and never answered (a chain node that stopped responding).
struct HangingProxy {
    addr: SocketAddr,
    hung: Arc<AtomicBool>,
}

impl HangingProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hung = Arc::new(AtomicBool::new(false));
        let h = Arc::clone(&hung);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let h = Arc::clone(&h);
                tokio::spawn(async move {
                    if h.load(Ordering::SeqCst) {
                        // Accepted, never read, never answered.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        drop(client);
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let watch = async {
                        while !h.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                    }
                });
            }
        });
        Self { addr, hung }
    }

    fn hang(&self) {
        self.hung.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_chain_and_a_database_outage_do_not_stall_other_rooms() {
    let chain = Chain::deploy().await;
    chain.start_session().await;
    let rpc_proxy = HangingProxy::start(rpc_addr(&chain)).await;
    let pg: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let db_proxy = CuttableProxy::start(pg).await;
    let (db_url, db_name) = fresh_pg_database(Some(db_proxy.addr)).await;
    let rpc_url = format!("http://{}", rpc_proxy.addr);
    let app = paid_app(&chain, Some(rpc_url), |a| a.database_url = Some(db_url)).await;
    let join = |sub: String, room: &str| {
        let room = room.to_owned();
        let app = &app;
        async move { join_as(app, &sub, "someone", &room).await }
    };
    let paid_room = format!("paid-{}", uuid::Uuid::new_v4().simple());
    let other_room = format!("other-{}", uuid::Uuid::new_v4().simple());
    let mut student = join(addr(STUDENT), &paid_room).await;
    let mut others = vec![
        join("other-1".into(), &other_room).await,
        join("other-2".into(), &other_room).await,
    ];

    // The chain stops answering and the database goes away; the student reports its session.
    rpc_proxy.hang();
    db_proxy.cut().await;
    let reported = Instant::now();
    student.send(&session_started()).await.unwrap();

    // Meanwhile the other room's sockets answer at once, and so does the status route.
    let http = common::http();
    let mut slowest = Duration::ZERO;
    let mut slowest_status = Duration::ZERO;
    while reported.elapsed() < Duration::from_secs(8) {
        slowest = slowest.max(common::slowest_pong(&mut others).await);
        let t = Instant::now();
        let token = app.tokens.mint("observer", "observer", 600, None);
        let status = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(format!(
                "http://{}/api/rooms/{other_room}/paid-session?token={token}",
                app.addr
            ))
            .send(),
        )
        .await;
        assert!(status.is_ok(), "the paid-session status hangs");
        slowest_status = slowest_status.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The start is refused when the chain timeout passes, not held forever.
    let answer = student
        .wait_event(Duration::from_secs(10), |m| {
            matches!(
                m,
                ServerMessage::Error { .. } | ServerMessage::PaidSession { .. }
            )
        })
        .await;
    let refused_after = reported.elapsed();
    println!(
        "slowest pong {slowest:?}, slowest status {slowest_status:?}, start answered after {refused_after:?}: {answer:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "pong within 1 s: {slowest:?}"
    );
    assert!(
        slowest_status < Duration::from_secs(3),
        "status within 3 s (the database's acquire timeout is 1 s): {slowest_status:?}"
    );
    match answer {
        Some(ServerMessage::Error { code, message }) => {
            assert_eq!(
                code,
                ErrorCode::ChainUnavailable,
                "refused as a chain outage"
            );
            assert!(
                !message.contains("http") && !message.contains("127.0.0.1"),
                "the chain's own error text stays in the log: {message}"
            );
        }
        other => panic!("the start was not refused in time: {other:?}"),
    }
    drop(db_proxy);
    drop_pg_database(&db_name).await;
}
