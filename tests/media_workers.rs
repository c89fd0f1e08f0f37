//! Several media workers in one process (`--media-workers`): rooms are placed on workers by a
//! stable hash of their id and never split; each worker forwards its own rooms on its own
//! thread and ports; `/metrics` reports each worker (`confab_worker_*{worker="i"}`) beside the
//! totals. (`crates/sfu/src/worker.rs` tests the ICE-TCP hand-over by ufrag between workers.)

mod common;

use common::{call_of, received_av, spawn_app_with};
use confab_sfu::api::worker_for_room;
use confab_sfu::RoomId;
use std::time::{Duration, Instant};

/// The window the media rates are measured over.
const WINDOW: Duration = Duration::from_secs(20);

/// A room name (with `tag`) that [`worker_for_room`] places on `worker` of `workers`.
fn room_on(worker: usize, workers: usize, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .find(|r| worker_for_room(&RoomId::parse(r).unwrap(), workers) == worker)
        .unwrap()
}

/// `name{worker="i"}` in a `/metrics` text.
fn per_worker(text: &str, name: &str, worker: usize) -> f64 {
    let prefix = format!("{name}{{worker=\"{worker}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{prefix} in /metrics"))
}

#[tokio::test]
async fn two_workers_each_forward_their_own_room_at_the_rate_sent() {
    let app = spawn_app_with(|a| a.media_workers = Some(2)).await;
    let rooms = [room_on(0, 2, "workers"), room_on(1, 2, "workers")];
    let (calls0, ids0) = call_of(&app, &rooms[0], &["ada", "bob"]).await;
    let (calls1, ids1) = call_of(&app, &rooms[1], &["cy", "dee"]).await;

    let text = app.metrics_text().await;
    for w in 0..2 {
        assert_eq!(
            per_worker(&text, "confab_worker_participants", w),
            2.0,
            "two participants on worker {w}"
        );
        assert_eq!(per_worker(&text, "confab_worker_rooms", w), 1.0);
    }
    assert_eq!(app.metric("confab_participants").await, 4.0, "the total");

    let pairs = [
        (&calls0[0], &ids0[1]),
        (&calls0[1], &ids0[0]),
        (&calls1[0], &ids1[1]),
        (&calls1[1], &ids1[0]),
    ];
    let before: Vec<_> = pairs.iter().map(|(c, id)| received_av(c, id)).collect();
    let forwarded0: Vec<f64> = (0..2)
        .map(|w| per_worker(&text, "confab_worker_rtp_forwarded_packets_total", w))
        .collect();
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after: Vec<_> = pairs.iter().map(|(c, id)| received_av(c, id)).collect();
    let text = app.metrics_text().await;
    for (w, before) in forwarded0.iter().enumerate() {
        let forwarded = per_worker(&text, "confab_worker_rtp_forwarded_packets_total", w) - before;
        // Two subscribers, each receiving 50 audio + 100 video packets a second.
        let rate = forwarded / elapsed;
        println!("worker {w}: {rate:.0} packets/s forwarded");
        assert!(
            rate >= 0.95 * 300.0,
            "worker {w} forwarded {rate:.0} packets/s of the 300 its room sends"
        );
    }
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let audio = (a.0 - b.0) as f64 / (50.0 * elapsed);
        let video = (a.1 - b.1) as f64 / (100.0 * elapsed);
        println!(
            "pair {i}: {:.1} % audio, {:.1} % video over {elapsed:.1} s",
            audio * 100.0,
            video * 100.0
        );
        assert!(
            audio >= 0.95 && video >= 0.95,
            "pair {i}: {:.1} % of the audio and {:.1} % of the video sent arrived",
            audio * 100.0,
            video * 100.0
        );
    }
}
