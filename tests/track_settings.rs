//! `track_settings`: a subscriber turns off one track it receives (a hidden tile, audio-only
//! mode) and the server stops forwarding it to that subscriber only; when every subscriber of a
//! video track turned it off, its publisher is told to stop encoding it (`publisher_paused`), and
//! told to resume when one turns it back on, whose video then comes back on the next keyframe.
//! Real webrtc-rs peers through the real server, rates over seconds.

mod common;

use common::{av, eventually, received_from, spawn_app};
use confab_client::{Client, RemoteTrackStats};
use confab_protocol::{ClientMessage, ErrorCode, ServerMessage, Source};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `c`'s received track of `from`, video or audio.
fn track(c: &Client, from: &str, video: bool) -> Arc<RemoteTrackStats> {
    received_from(c, from)
        .into_iter()
        .find(|t| t.video == video)
        .expect("the track is received")
}

fn received(t: &RemoteTrackStats) -> u64 {
    t.stats.lock().unwrap().received
}

fn settings(track: &RemoteTrackStats, enabled: bool) -> ClientMessage {
    ClientMessage::TrackSettings {
        track_id: track.track.clone(),
        enabled,
        width: Some(320),
        height: Some(180),
    }
}

/// Packets of `t` over `window`.
async fn rate(t: &RemoteTrackStats, window: Duration) -> u64 {
    let before = received(t);
    tokio::time::sleep(window).await;
    received(t) - before
}

/// The code of the next `error` `c` receives (within 5 s).
async fn next_error(c: &mut Client) -> Option<ErrorCode> {
    match c
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, ServerMessage::Error { .. })
        })
        .await
    {
        Some(ServerMessage::Error { code, .. }) => Some(code),
        _ => None,
    }
}

async fn paused(c: &mut Client, want: bool) -> bool {
    c.wait_event(Duration::from_secs(5), |e| {
        matches!(e, ServerMessage::PublisherPaused { source: Source::Camera, paused } if *paused == want)
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_turns_a_video_off_and_on_and_the_publisher_pauses_when_nobody_wants_it() {
    let app = spawn_app(16).await;
    let room = format!("settings-{}", uuid::Uuid::new_v4().simple());
    let mut ada = Client::join(&app.ws_url("ada"), &room, "ada")
        .await
        .expect("join");
    ada.publish(&av()).await.expect("publish");
    let mut bob = Client::join(&app.ws_url("bob"), &room, "bob")
        .await
        .expect("join");
    let cy = Client::join(&app.ws_url("cy"), &room, "cy")
        .await
        .expect("join");
    let ada_id = ada.participant_id.clone();
    for c in [&bob, &cy] {
        assert!(
            eventually(WAIT, || received_from(c, &ada_id).len() == 2
                && received_from(c, &ada_id).iter().all(|t| received(t) > 50))
            .await,
            "{} receives Ada",
            c.participant_id
        );
    }
    let (bob_video, bob_audio) = (track(&bob, &ada_id, true), track(&bob, &ada_id, false));
    let cy_video = track(&cy, &ada_id, true);

    // Bob turns Ada's camera off: nothing of it reaches him over 3 s, her audio still does at
    // its full 50 packets/s, and Cy still gets her video at 100 packets/s.
    bob.send(&settings(&bob_video, false)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let window = Duration::from_secs(3);
    let (v, a, cv) = tokio::join!(
        rate(&bob_video, window),
        rate(&bob_audio, window),
        rate(&cy_video, window)
    );
    assert_eq!(v, 0, "no video to Bob while he has it off");
    assert!(a >= 140, "Bob keeps Ada's audio: {a} packets in 3 s");
    assert!(cv >= 280, "Cy keeps Ada's video: {cv} packets in 3 s");

    // Cy turns it off too: nobody wants Ada's camera, so she is told to pause it.
    cy.send(&settings(&cy_video, false)).await.unwrap();
    assert!(
        paused(&mut ada, true).await,
        "Ada is told to pause her camera"
    );

    // Bob turns it back on: Ada is told to resume, and Bob's video comes back at the next
    // keyframe (this client sends one every 2 s and ignores PLI).
    bob.send(&settings(&bob_video, true)).await.unwrap();
    assert!(paused(&mut ada, false).await, "Ada is told to resume");
    let before = received(&bob_video);
    assert!(
        eventually(Duration::from_secs(3), || received(&bob_video)
            > before + 20)
        .await,
        "Bob's video of Ada resumes"
    );
    let v = rate(&bob_video, window).await;
    assert!(v >= 280, "at the full rate again: {v} packets in 3 s");
    assert_eq!(
        bob_video.stats.lock().unwrap().out_of_order,
        0,
        "no packet out of order across the pause"
    );

    // Refusals: a track Bob does not receive, and no track id at all.
    bob.send(&ClientMessage::TrackSettings {
        track_id: format!("{}-99", bob.participant_id),
        enabled: false,
        width: None,
        height: None,
    })
    .await
    .unwrap();
    let e = next_error(&mut bob).await;
    assert_eq!(e, Some(ErrorCode::UnknownTrack));
    bob.send_raw(r#"{"type":"track_settings","track_id":"nonsense","enabled":false}"#)
        .await
        .unwrap();
    let e = next_error(&mut bob).await;
    assert_eq!(e, Some(ErrorCode::BadJson));
}
