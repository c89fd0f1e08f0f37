//! Noisy neighbours cannot hurt a participant: three sockets of one account flood mute toggles
//! while other accounts join, publish and leave in a loop (every one a track set change the
//! victims must renegotiate); two victims in the room stay, keep receiving each other's audio and
//! video at the rate it is sent, answer `ping` within 1 s, and hear of only as many mute changes
//! as the flooding account's budget allows.

mod common;

use common::{call_of, received_av, spawn_app};
use confab_client::{Client, SyntheticTrack};
use confab_protocol::{ClientMessage, ErrorCode, ServerMessage, Source};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the flood lasts (and the window media rates are measured over).
const FLOOD: Duration = Duration::from_secs(20);

/// Pings every 500 ms until `stop`; returns the slowest `pong` (ms) and the mute events seen
/// meanwhile. Any `error` or a `pong` later than 2 s fails the test.
async fn ping_while(c: &mut Client, stop: Arc<AtomicBool>) -> (u128, u64) {
    let mut slowest = 0;
    let mut mutes = 0;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        c.send(&ClientMessage::Ping { ts: None })
            .await
            .expect("ping sent");
        let pong = c
            .wait_event(Duration::from_secs(2), |m| match m {
                ServerMessage::TrackMuted { .. } => {
                    mutes += 1;
                    false
                }
                ServerMessage::Error { code, message } => {
                    panic!("a victim got an error: {code:?} {message}")
                }
                ServerMessage::Pong { .. } => true,
                _ => false,
            })
            .await;
        assert!(pong.is_some(), "no pong within 2 s");
        slowest = slowest.max(t.elapsed().as_millis());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (slowest, mutes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbours_mute_flood_and_track_churn_cannot_remove_or_starve_the_others() {
    let app = spawn_app(16).await;
    let t0 = Instant::now();
    let room = format!("neighbours-{}", uuid::Uuid::new_v4().simple());
    let (victims, ids) = call_of(&app, &room, &["vic1", "vic2"]).await;

    // One account, three sockets, each with a microphone to toggle.
    let mut attackers = Vec::new();
    for _ in 0..3 {
        let mut c = Client::join(&app.ws_url("mallory"), &room, "mallory")
            .await
            .expect("attacker joins");
        c.publish(&[(Source::Microphone, SyntheticTrack::audio())])
            .await
            .expect("attacker publishes");
        attackers.push(c);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let before: Vec<(u64, u64)> = vec![
        received_av(&victims[0], &ids[1]),
        received_av(&victims[1], &ids[0]),
    ];
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    // The flood: 300 toggles per socket as fast as they can be written, again every 2 s.
    let refused = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = attackers
        .into_iter()
        .map(|mut c| {
            let stop = Arc::clone(&stop);
            let refused = Arc::clone(&refused);
            tokio::spawn(async move {
                let mut muted = false;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..300 {
                        muted = !muted;
                        let m = ClientMessage::Mute {
                            source: Source::Microphone,
                            muted,
                        };
                        if c.send(&m).await.is_err() {
                            return c;
                        }
                    }
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    while let Some(ev) = c
                        .next_event(deadline.saturating_duration_since(tokio::time::Instant::now()))
                        .await
                    {
                        if matches!(
                            ev,
                            ServerMessage::Error {
                                code: ErrorCode::RateLimited,
                                ..
                            }
                        ) {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                c
            })
        })
        .collect();

    // Track churn: other accounts join, publish a microphone and leave, one after another.
    let churn = {
        let stop = Arc::clone(&stop);
        let url = |k: u32| app.ws_url(&format!("churn{k}"));
        let urls: Vec<String> = (0..40).map(url).collect();
        let room = room.clone();
        tokio::spawn(async move {
            let mut rounds = 0;
            for u in urls {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut c) = Client::join(&u, &room, "churn").await else {
                    continue;
                };
                let _ = c
                    .publish(&[(Source::Microphone, SyntheticTrack::audio())])
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                c.leave().await;
                rounds += 1;
            }
            rounds
        })
    };

    let pingers: Vec<_> = victims
        .into_iter()
        .map(|mut c| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let r = ping_while(&mut c, stop).await;
                (c, r)
            })
        })
        .collect();
    tokio::time::sleep(FLOOD).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut victims = Vec::new();
    let mut report = Vec::new();
    for p in pingers {
        let (c, (slowest, mutes)) = p.await.expect("victim task");
        report.push((slowest, mutes));
        victims.push(c);
    }
    let rounds = churn.await.expect("churn task");
    for f in flooders {
        f.await.expect("flooder task").leave().await;
    }
    let after: Vec<(u64, u64)> = vec![
        received_av(&victims[0], &ids[1]),
        received_av(&victims[1], &ids[0]),
    ];
    let refused = refused.load(Ordering::Relaxed);
    println!(
        "{elapsed:.1} s: {rounds} churn rounds, {refused} mutes refused; victims (slowest pong ms, mute events): {report:?}; packets (audio, video) before {before:?} after {after:?}"
    );

    assert!(rounds >= 5, "the churn ran: {rounds} rounds");
    // The account's budget: 20 at once, then 2 a second, across its three sockets.
    let budget = 20.0 + 2.0 * elapsed + 5.0;
    assert!(
        refused as f64 >= 3.0 * 300.0 - budget,
        "the flood was refused at its source: {refused}"
    );
    for (slowest, mutes) in &report {
        assert!(*slowest < 1000, "pong within 1 s: {slowest} ms");
        assert!(
            (*mutes as f64) <= budget,
            "a victim heard of {mutes} mute changes, over the account's budget {budget:.0}"
        );
    }
    // Both victims are still in the room and received what was sent during the flood.
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let audio = (a.0 - b.0) as f64 / (50.0 * elapsed);
        let video = (a.1 - b.1) as f64 / (100.0 * elapsed);
        assert!(
            audio >= 0.9 && video >= 0.9,
            "victim {i} received {:.0} % of the audio and {:.0} % of the video sent",
            audio * 100.0,
            video * 100.0
        );
    }
    for c in &mut victims {
        c.send(&ClientMessage::Ping { ts: None })
            .await
            .expect("victim still connected");
        assert!(
            c.wait_event(Duration::from_secs(1), |m| matches!(
                m,
                ServerMessage::Pong { .. }
            ))
            .await
            .is_some(),
            "the victim's socket still answers"
        );
    }
    // The churn's join and leave lines are throttled per room (20 at once, then one per 3 s):
    // they cannot fill the room's history.
    let history = app
        .get_json(&format!("/api/rooms/{room}/messages?limit=200"), "vic1")
        .await;
    let lines = history["messages"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|m| m["message_type"] == "system")
        .count();
    println!("{lines} join/leave lines in the room's history");
    assert!(
        (10..=20 + t0.elapsed().as_secs() as usize / 3 + 2).contains(&lines),
        "{lines} join/leave lines for {} joins and leaves",
        2 * rounds + 5
    );
    assert_eq!(
        app.metric("confab_participants").await,
        2.0,
        "only the victims are left"
    );
}
