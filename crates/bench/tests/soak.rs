//! CI-sized soak: the real `confab` binary started by the generator, 3 rooms of at most 4
//! participants churning for 60 s (joins, leaves, mute toggles, chat on the DataChannel), then
//! emptied. Asserts that the server came back to where it started: tasks, ICE routes, subscriber
//! m-lines, rooms, participants and signaling sockets at their start values, memory and file
//! descriptors within their allowances over the warm baseline (see `confab_bench::soak`). About
//! 80 s of wall time. The long soak is a documented command in docs/performance.md.

use confab_bench::soak::{bench_soak, table, SoakSpec};
use confab_bench::Setup;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_churn_leaves_the_server_as_it_started() {
    let out = std::env::temp_dir().join(format!("confab-bench-soak-{}", std::process::id()));
    let setup = Setup {
        target: None,
        server_bin: None,
        out_dir: out.clone(),
        quiet: true,
    };
    let spec = SoakSpec {
        duration_s: 60.0,
        rooms: 3,
        max_per_room: 4,
        // Light media: the point is the churn, on a 2-core machine shared with the generator.
        video_kbps: 150,
        video_pps: 20,
        audio_kbps: 24,
        audio_pps: 25,
        warmup_hold_s: 2.0,
        settle_s: 3.0,
        settle_max_s: 20.0,
        ..SoakSpec::default()
    };
    let began = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(115), bench_soak(&setup, &spec))
        .await
        .expect("the soak ends within 115 s")
        .expect("the soak starts the server (build it first: cargo build -p confab)");
    let summary = table(&report);
    eprintln!(
        "{summary}(wall time {:.0} s)",
        began.elapsed().as_secs_f64()
    );

    // Every quantity was measured and came back.
    for c in &report.checks {
        assert_eq!(c.status, "ok", "{}: {c:?}\n{summary}", c.quantity);
    }
    assert!(report.passed, "{summary}");
    let start = &report.start;
    let end = &report.end;
    assert_eq!(start.participants, Some(0), "{summary}");
    assert_eq!(end.participants, Some(0), "{summary}");
    assert_eq!(end.rooms, Some(0), "{summary}");
    assert_eq!(end.routes, Some(0), "{summary}");
    assert_eq!(end.subscriber_mlines, Some(0), "{summary}");
    assert_eq!(end.tasks_alive, start.tasks_alive, "{summary}");
    assert_eq!(end.signaling_sockets, Some(0), "{summary}");

    // The soak did churn, and the gauges saw it.
    let a = &report.activity;
    assert!(
        a.joins > 12 && a.leaves == a.joins,
        "joined beyond the first fill, and everyone left: {a:?}"
    );
    assert!(a.rooms_opened > 3, "rooms emptied and reopened: {a:?}");
    assert!(
        a.mute_toggles > 0 && a.chats_sent > 0 && a.chat_acks > 0,
        "{a:?}"
    );
    assert!(a.received_packets > 0, "media flowed: {a:?}");
    let peak = &report.peak;
    assert!(peak.participants >= Some(8), "the rooms filled: {summary}");
    assert!(peak.routes > Some(0), "{summary}");
    assert!(
        peak.subscriber_mlines >= Some(8 * 2),
        "participants received the others' tracks: {summary}"
    );
    assert!(report.warm.is_some());

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("soak.json")).expect("soak.json written"),
    )
    .expect("valid JSON");
    for field in [
        "start", "warm", "peak", "end", "checks", "activity", "timeline",
    ] {
        assert!(json.get(field).is_some(), "soak.json has {field}");
    }
    assert_eq!(json["passed"], true);
    let _ = std::fs::remove_dir_all(&out);
}
