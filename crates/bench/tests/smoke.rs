//! CI smoke run of the load generator: the real `confab` binary started by the generator,
//! one room of two participants for a few seconds. Asserts that packets flowed through the
//! server and that the JSON report and the chart were written with the expected fields.
//! (The full runs are documented commands in docs/performance.md, not tests.)

use confab_bench::run::LoadSpec;
use confab_bench::{bench_run, Setup};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_run_forwards_packets_and_writes_the_report() {
    let out = std::env::temp_dir().join(format!("confab-bench-smoke-{}", std::process::id()));
    let setup = Setup {
        target: None,
        server_bin: None,
        out_dir: out.clone(),
        quiet: true,
    };
    let load = LoadSpec {
        rooms: 1,
        per_room: 2,
        video_kbps: 300,
        audio_kbps: 32,
        video_pps: 50,
        audio_pps: 50,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(3),
        ramp_per_s: 10.0,
        simulcast: false,
        tile_width: None,
    };
    let report = tokio::time::timeout(Duration::from_secs(120), bench_run(&setup, &load))
        .await
        .expect("the smoke run ends within two minutes")
        .expect("the smoke run starts the server (build it first: cargo build -p confab)");
    let r = &report.runs[0];
    assert_eq!(r.participants, 2, "both participants joined: {r:?}");
    assert!(
        r.forwarded_packets_per_s > 0.0,
        "the server forwarded packets: {r:?}"
    );
    assert!(
        r.latency_ms.samples > 0,
        "latency samples were taken: {r:?}"
    );

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json written"),
    )
    .expect("valid JSON");
    let run = &json["runs"][0];
    for field in [
        "forwarded_packets_per_s",
        "forwarded_bits_per_s",
        "server_cpu_us_per_packet",
        "loss_percent",
        "latency_ms",
        "join_ms",
        "server_memory_per_participant_kib",
        "server_drops",
        "timeline",
    ] {
        assert!(
            run.get(field).is_some(),
            "report.json has runs[0].{field}: {run}"
        );
    }
    for q in ["p50", "p95", "p99"] {
        assert!(run["latency_ms"][q].is_number(), "latency {q}");
    }
    assert!(run["join_ms"]["p50"].is_number());
    assert!(run["forwarded_packets_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        run["server_cpu_us_per_packet"].is_number(),
        "server CPU read from /proc: {run}"
    );
    let svg = std::fs::read_to_string(out.join("chart.svg")).expect("chart.svg written");
    assert!(svg.starts_with("<svg"));
    let _ = std::fs::remove_dir_all(&out);
}
