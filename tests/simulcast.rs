//! Simulcast from a non-browser stack: a webrtc-rs publisher sends its camera as three layers
//! (RIDs l, m, h at 10, 33 and 100 packets/s, MID and RID header extensions on every packet).
//! A subscriber that reports a small tile (320 px) receives the low layer's rate; one that
//! reports nothing receives the top layer's; both on one SSRC each, without loss, over a
//! 10-second window; the publisher is asked to keep only those two layers
//! (`publisher_layers`). Real webrtc-rs peers through the real server.

mod common;

use common::{eventually, received_from, spawn_app};
use confab_client::{Client, ClientOptions, RemoteTrackStats, SyntheticTrack};
use confab_protocol::{ServerMessage, Source};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const WINDOW: Duration = Duration::from_secs(10);

/// `c`'s received video of participant `from` (its id).
fn video_from(c: &Client, from: &str) -> Option<Arc<RemoteTrackStats>> {
    received_from(c, from).into_iter().find(|t| t.video)
}

/// `(packets, loss fraction)` of `t` over `window`: loss from the counters of the first and
/// last packet seen in it.
async fn window(t: &RemoteTrackStats, window: Duration) -> (u64, f64) {
    let (r0, last0) = {
        let s = t.stats.lock().unwrap();
        (s.received, s.last)
    };
    tokio::time::sleep(window).await;
    let s = t.stats.lock().unwrap();
    let got = s.received - r0;
    let expected = match (last0, s.last) {
        (Some(a), Some(b)) if b >= a => u64::from(b - a),
        _ => 0,
    };
    let loss = if expected == 0 {
        1.0
    } else {
        (expected.saturating_sub(got)) as f64 / expected as f64
    };
    (got, loss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tile_gets_the_low_layer_and_an_unsized_one_the_top_layer() {
    let app = spawn_app(16).await;
    let room = format!("simulcast-{}", uuid::Uuid::new_v4().simple());
    let mut ada = Client::join(&app.ws_url("ada"), &room, "ada")
        .await
        .expect("join");
    let camera = SyntheticTrack {
        simulcast: true,
        keyframe_every: 100,
        ..SyntheticTrack::video()
    };
    ada.publish(&[(Source::Camera, camera)])
        .await
        .expect("publish three layers");
    let small = ClientOptions {
        tile_width: Some(320),
        ..ClientOptions::default()
    };
    let bob = Client::join_with(&app.ws_url("bob"), &room, "bob", small)
        .await
        .expect("join");
    let cy = Client::join(&app.ws_url("cy"), &room, "cy")
        .await
        .expect("join");
    let ada_id = ada.participant_id.clone();
    assert!(
        eventually(WAIT, || video_from(&bob, &ada_id).is_some()
            && video_from(&cy, &ada_id).is_some())
        .await,
        "bob and cy receive ada's camera"
    );
    let (to_bob, to_cy) = (
        video_from(&bob, &ada_id).unwrap(),
        video_from(&cy, &ada_id).unwrap(),
    );
    // Layer choice every 500 ms and a switch on the next keyframe (every second here).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ((bob_pkts, bob_loss), (cy_pkts, cy_loss)) =
        tokio::join!(window(&to_bob, WINDOW), window(&to_cy, WINDOW));
    let secs = WINDOW.as_secs_f64();
    println!(
        "bob (320 px tile): {:.1} pkt/s, loss {:.2} %; cy (no size): {:.1} pkt/s, loss {:.2} %",
        bob_pkts as f64 / secs,
        bob_loss * 100.0,
        cy_pkts as f64 / secs,
        cy_loss * 100.0
    );
    // The low layer sends 10 packets/s, the top one 100.
    let bob_rate = bob_pkts as f64 / secs;
    let cy_rate = cy_pkts as f64 / secs;
    assert!(
        (7.0..=14.0).contains(&bob_rate),
        "bob gets the low layer: {bob_rate:.1} pkt/s"
    );
    assert!(
        (80.0..=110.0).contains(&cy_rate),
        "cy gets the top layer: {cy_rate:.1} pkt/s"
    );
    assert!(bob_loss < 0.02, "bob's layer arrives whole: {bob_loss:.3}");
    assert!(cy_loss < 0.02, "cy's layer arrives whole: {cy_loss:.3}");
    // Nobody wants the middle layer: ada was told to keep only the low and the top one (and
    // stopped sending the middle one, as a browser stops encoding it).
    let told = ada
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, ServerMessage::PublisherLayers { source: Source::Camera, rids }
                if rids.len() == 2 && rids.iter().any(|r| r == "l") && rids.iter().any(|r| r == "h"))
        })
        .await;
    assert!(told.is_some(), "ada is asked to send only layers l and h");
    ada.leave().await;
    bob.leave().await;
    cy.leave().await;
}
