//! Three (then four) webrtc-rs clients in one room publish synthetic VP8 and Opus through the
//! real server; every client receives every other's tracks intact, in order, with < 1 % loss;
//! a late joiner receives everyone; a leaver's tracks end and the others keep receiving.

mod common;

use common::{av, eventually, received_from, spawn_app};
use confab_client::Client;
use confab_protocol::ServerMessage;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Every other participant's two tracks reached `c` with at least `min` packets each.
fn has_all(c: &Client, others: &[&str], min: u64) -> bool {
    others.iter().all(|p| {
        let tracks = received_from(c, p);
        tracks.len() == 2
            && tracks
                .iter()
                .all(|t| t.stats.lock().unwrap().received >= min)
    })
}

fn counts(c: &Client, participant: &str) -> Vec<u64> {
    received_from(c, participant)
        .iter()
        .map(|t| t.stats.lock().unwrap().received)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_participant_receives_every_other_participants_audio_and_video_intact() {
    let app = spawn_app(16).await;
    let room = format!("media-{}", uuid::Uuid::new_v4().simple());
    let mut clients = Vec::new();
    for name in ["ada", "bob", "cy"] {
        let mut c = Client::join(&app.ws_url(name), &room, name)
            .await
            .expect("join");
        c.publish(&av()).await.expect("publish");
        clients.push(c);
    }
    let ids: Vec<String> = clients.iter().map(|c| c.participant_id.clone()).collect();
    for (i, c) in clients.iter().enumerate() {
        let others: Vec<&str> = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.as_str())
            .collect();
        assert!(
            eventually(WAIT, || has_all(c, &others, 50)).await,
            "{} did not receive both tracks of {:?}: {:?}",
            ids[i],
            others,
            c.remote_tracks()
                .iter()
                .map(|t| (
                    t.participant.clone(),
                    t.track.clone(),
                    t.stats.lock().unwrap().received
                ))
                .collect::<Vec<_>>()
        );
    }
    // Let media flow, then check integrity, order and loss on every received track.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut report = Vec::new();
    for c in &clients {
        for t in c.remote_tracks() {
            let s = t.stats.lock().unwrap().clone();
            report.push(format!(
                "{} <- {} {}: {} pkts, loss {:.3} %, out-of-order {}, corrupted {}",
                c.participant_id,
                t.participant,
                if t.video { "video" } else { "audio" },
                s.received,
                s.loss() * 100.0,
                s.out_of_order,
                s.corrupted
            ));
            assert_eq!(s.corrupted, 0, "payloads arrive intact: {report:?}");
            assert_eq!(s.out_of_order, 0, "payloads arrive in order: {report:?}");
            assert!(s.loss() < 0.01, "loss below 1 %: {report:?}");
        }
    }
    println!("{}", report.join("\n"));

    // A fourth participant joins mid-call: receives everyone, and everyone receives it.
    let mut dan = Client::join(&app.ws_url("dan"), &room, "dan")
        .await
        .expect("late join");
    dan.publish(&av()).await.expect("late publish");
    let others: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
    assert!(
        eventually(WAIT, || has_all(&dan, &others, 20)).await,
        "the late joiner receives everyone"
    );
    for c in &clients {
        assert!(
            eventually(WAIT, || has_all(c, &[dan.participant_id.as_str()], 20)).await,
            "{} receives the late joiner",
            c.participant_id
        );
    }

    // Bob leaves: the others are told, and keep receiving the rest.
    let bob = clients.remove(1);
    let bob_id = bob.participant_id.clone();
    bob.leave().await;
    for c in clients.iter_mut().chain(std::iter::once(&mut dan)) {
        // The others see both of bob's tracks end (`track_unpublished`), then bob leave.
        let mut ended = 0;
        let left = c
            .wait_event(WAIT, |e| match e {
                ServerMessage::TrackUnpublished { participant_id, .. }
                    if *participant_id == bob_id =>
                {
                    ended += 1;
                    false
                }
                ServerMessage::ParticipantLeft { participant_id } => *participant_id == bob_id,
                _ => false,
            })
            .await;
        assert!(left.is_some(), "{} is told that bob left", c.participant_id);
        assert_eq!(ended, 2, "{} sees bob's two tracks end", c.participant_id);
    }
    // And no more of bob's media arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bob_before = counts(&dan, &bob_id);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(counts(&dan, &bob_id), bob_before, "bob's tracks stopped");
    let still = [
        clients[0].participant_id.clone(),
        clients[1].participant_id.clone(),
        dan.participant_id.clone(),
    ];
    let before: Vec<Vec<u64>> = still.iter().map(|p| counts(&dan, p)).collect();
    let a_before = counts(&clients[0], &still[1]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a_after = counts(&clients[0], &still[1]);
    assert!(
        a_after.iter().zip(&a_before).all(|(a, b)| a > b),
        "media keeps flowing after a leave: {a_before:?} -> {a_after:?}"
    );
    let after: Vec<Vec<u64>> = still.iter().map(|p| counts(&dan, p)).collect();
    assert!(after[0].iter().zip(&before[0]).all(|(a, b)| a > b));
    for c in clients {
        c.leave().await;
    }
    dan.leave().await;
}
