//! `GET /metrics`: the media plane's counters in the Prometheus text format (version 0.0.4).
//!
//! Nothing is registered ahead of time and nothing is updated on the packet path: the media
//! worker keeps relaxed atomics ([`SfuMetrics`]), and each scrape reads them once and builds the
//! metric families from those values. The per-packet processing time histogram comes from the
//! worker's fixed buckets ([`PROCESSING_BUCKETS_NS`]). The process's own CPU time and resident
//! memory are read from `/proc/self` at scrape time (Linux; absent elsewhere), so a load
//! generator on another machine can compute server CPU per forwarded packet too.
//!
//! Four gauges are for leak hunting (`confab-bench soak` compares them before and after rooms
//! churned): `confab_tasks_alive` (tokio tasks of every runtime of the process, see
//! [`register_runtime`]), `confab_open_fds` (`/proc/self/fd`, read at scrape time),
//! `confab_routes` and `confab_subscriber_mlines` (set by the media core off the packet path).
//!
//! With paid sessions on, the settlement outbox's backlog is exported as gauges: the worker
//! measures it after each pass and the scrape reads that last measurement ([`BacklogReader`]),
//! so a scrape never queries the database. An alert on `confab_settlements_overdue > 0` or on
//! `confab_settlement_oldest_open_seconds` catches a tutor who is not being paid.
//!
//! Not exported: NACKs. `rtc`'s NACK responder and generator interceptors answer and send them
//! inside the peer connection, and the worker never sees them; counting them would take a tap
//! interceptor like the keyframe-request one, on every RTCP packet.

use super::AppState;
use actix_web::{web, HttpResponse};
use confab_settlement::{Backlog, BacklogReader};
use confab_sfu::api::PROCESSING_BUCKETS_NS;
use confab_sfu::SfuMetrics;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::thread::ThreadId;

/// The tokio runtimes whose tasks `confab_tasks_alive` adds up, one per thread that runs one
/// (each of confab's runtimes is single-threaded: main, each HTTP worker, media).
static RUNTIMES: Mutex<Vec<(ThreadId, tokio::runtime::Handle)>> = Mutex::new(Vec::new());

/// Registers the runtime of the calling thread (if it runs one, and once per thread) for
/// `confab_tasks_alive`. Called where each runtime starts (`src/app.rs`): the main runtime, each
/// HTTP worker's (the app factory runs on the worker) and the media thread's.
pub fn register_runtime() {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let me = std::thread::current().id();
    let mut all = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|(t, _)| *t == me) {
        all.push((me, handle));
    }
}

/// Tokio tasks alive now in every registered runtime (`RuntimeMetrics::num_alive_tasks`:
/// spawned and not yet completed, idle or not). Tasks an HTTP worker runs with `spawn_local`
/// (actix's `rt::spawn`: one per signaling session) live in its `LocalSet`, which tokio does not
/// count: `confab_signaling_sockets` counts those sessions.
pub fn tasks_alive() -> u64 {
    RUNTIMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(_, h)| h.metrics().num_alive_tasks() as u64)
        .sum()
}

/// File descriptors this process has open now (entries of `/proc/self/fd`, less the one the
/// listing itself holds open); `None` where there is no `/proc` (not Linux).
pub fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// Content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub async fn metrics(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, super::ApiError> {
    super::health::probe_budget(&req, &state)?;
    let mut families = families(&state.sfu.metrics_total());
    families.extend(worker_families(state.sfu.workers()));
    families.extend(settlement_families(
        state.settlement_backlog.as_ref().map(BacklogReader::latest),
        chrono::Utc::now(),
    ));
    families.extend(webhook_families(
        state
            .webhooks
            .backlog()
            .map(|b| (b.latest(), state.webhooks.dropped_events())),
        chrono::Utc::now(),
    ));
    families.push(gauge(
        "confab_signaling_sockets",
        "Signaling WebSockets open now.",
        state.socket_limits.open_sockets() as f64,
    ));
    families.push(gauge(
        "confab_whip_sessions",
        "WHIP ingest sessions open now (RFC 9725).",
        state.whip.len() as f64,
    ));
    Ok(
        match prometheus::TextEncoder::new().encode_to_string(&families) {
            Ok(body) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(body),
            Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
        },
    )
}

/// The metric families for one scrape.
pub fn families(m: &SfuMetrics) -> Vec<MetricFamily> {
    let get = SfuMetrics::get;
    let mut out = vec![
        counter(
            "confab_rtp_forwarded_packets_total",
            "RTP packets handed to subscriber transports.",
            get(&m.rtp_forwarded),
        ),
        counter(
            "confab_rtp_forwarded_bytes_total",
            "RTP header+payload bytes handed to subscriber transports.",
            get(&m.bytes_forwarded),
        ),
        counter(
            "confab_rtp_retransmitted_packets_total",
            "RTP packets sent again to subscribers that NACKed them (at most once per 200 ms per packet).",
            get(&m.rtp_retransmitted),
        ),
        counter(
            "confab_rtp_nacked_packets_total",
            "Distinct RTP packets subscribers NACKed while the server still held them.",
            get(&m.rtp_nacked),
        ),
        counter(
            "confab_rtp_nacks_over_budget_total",
            "NACKed packets not sent again: the downtrack had retransmitted half as many packets as it forwarded.",
            get(&m.nacks_over_budget),
        ),
        counter(
            "confab_publisher_bitrate_caps_total",
            "REMBs sent to publishers of single-stream video to hold them under their weakest subscriber's link, or to lift that.",
            get(&m.uplink_caps_sent),
        ),
        counter(
            "confab_bandwidth_estimates_total",
            "REMB bandwidth estimates received from subscribers.",
            get(&m.bandwidth_estimates_in),
        ),
        counter(
            "confab_rtp_received_packets_total",
            "RTP packets received from publishers.",
            get(&m.rtp_in),
        ),
        counter(
            "confab_datagrams_received_total",
            "UDP datagrams received by the media sockets.",
            get(&m.datagrams_in),
        ),
        counter(
            "confab_datagrams_sent_total",
            "UDP datagrams sent by the media sockets.",
            get(&m.datagrams_out),
        ),
        counter(
            "confab_plis_sent_total",
            "Keyframe requests (PLI) sent to publishers.",
            get(&m.plis_sent),
        ),
        counter(
            "confab_keyframe_requests_received_total",
            "Keyframe requests (PLI/FIR) received from subscribers.",
            get(&m.keyframe_requests_in),
        ),
        counter(
            "confab_ice_path_switches_total",
            "Times a transport's media moved to the 5-tuple its peer nominated (or checked after the old one went quiet).",
            get(&m.ice_path_switches),
        ),
        counter(
            "confab_simulcast_layer_switches_total",
            "Times a subscriber's downtrack began forwarding another simulcast layer of a camera.",
            get(&m.layer_switches),
        ),
        counter(
            "confab_ice_early_nominations_total",
            "Transports whose pair was selected when the peer's DTLS arrived on it, before its USE-CANDIDATE check.",
            get(&m.ice_early_nominations),
        ),
        counter(
            "confab_rtp_early_sent_total",
            "Video packets held from a keyframe while a subscriber transport first connected, sent when it did.",
            get(&m.rtp_early_sent),
        ),
        counter(
            "confab_transport_disconnects_total",
            "Times a transport went disconnected (nothing heard for 13 s; media keeps flowing).",
            get(&m.consent_disconnects),
        ),
        counter(
            "confab_transport_failures_total",
            "Transports failed: ICE consent expired (RFC 7675, 30 s) or ICE never completed.",
            get(&m.consent_failures),
        ),
        counter(
            "confab_stun_auth_failures_total",
            "STUN binding requests that did not authenticate (unknown or stale ufrag, or bad MESSAGE-INTEGRITY).",
            get(&m.stun_auth_failures),
        ),
        counter(
            "confab_detaches_total",
            "Signaling sockets lost without a leave (the participant waits to be resumed).",
            get(&m.detaches),
        ),
        counter(
            "confab_resumes_total",
            "Participants taken over on a new signaling socket with their resume token.",
            get(&m.resumes),
        ),
        counter(
            "confab_resume_grace_expiries_total",
            "Detached participants removed because the resume grace period ended.",
            get(&m.resume_grace_expiries),
        ),
        counter(
            "confab_connect_timeouts_total",
            "Participants removed because their publisher transport did not connect within the connect timeout of joining.",
            get(&m.connect_timeouts),
        ),
        counter(
            "confab_ice_restarts_total",
            "Subscriber transports offered again with an ICE restart at the client's request.",
            get(&m.ice_restarts),
        ),
        counter(
            "confab_participant_panics_total",
            "Participants removed because handling their input panicked (the others stay).",
            get(&m.participant_panics),
        ),
        counter(
            "confab_tcp_connections_total",
            "ICE-TCP connections accepted (RFC 6544 passive).",
            get(&m.tcp_connections),
        ),
        counter(
            "confab_tcp_refused_total",
            "ICE-TCP connections refused past the connection limit.",
            get(&m.tcp_refused),
        ),
        gauge("confab_rooms", "Rooms open now.", get(&m.rooms) as f64),
        gauge(
            "confab_participants",
            "Participants connected now.",
            get(&m.participants) as f64,
        ),
        gauge(
            "confab_routes",
            "ICE routes (5-tuples) in the media core's route table now.",
            get(&m.routes) as f64,
        ),
        gauge(
            "confab_subscriber_mlines",
            "m-lines of every participant's latest subscribe offer, summed over participants.",
            get(&m.subscriber_mlines) as f64,
        ),
        gauge(
            "confab_tasks_alive",
            "Tokio tasks alive now in the server's runtimes (main, HTTP workers, media; not the HTTP workers' spawn_local tasks).",
            tasks_alive() as f64,
        ),
    ];
    let drops: [(&str, &AtomicU64); 9] = [
        ("keyframe_wait", &m.drops_keyframe_wait),
        ("unmapped_payload_type", &m.drops_unmapped_pt),
        ("socket_full", &m.drops_socket_full),
        ("unroutable", &m.drops_unroutable),
        ("unheard_destination", &m.drops_unheard_destination),
        ("write_error", &m.drops_write_error),
        ("not_connected", &m.drops_not_connected),
        ("tcp_queue_full", &m.drops_tcp_queue_full),
        ("tcp_congested", &m.drops_congested),
    ];
    let mut f = family(
        "confab_drops_total",
        "Packets or datagrams dropped by the media plane, by cause.",
        MetricType::COUNTER,
    );
    f.set_metric(
        drops
            .iter()
            .map(|(cause, c)| {
                let mut v = Counter::default();
                v.set_value(get(c) as f64);
                let mut metric = Metric::from_label(vec![label("cause", cause)]);
                metric.set_counter(v);
                metric
            })
            .collect(),
    );
    out.push(f);
    out.push(processing_histogram(m));
    if let Some(fds) = open_fds() {
        out.push(gauge(
            "confab_open_fds",
            "File descriptors the server process has open now (/proc/self/fd).",
            fds as f64,
        ));
    }
    if let Some((cpu_s, rss)) = process_usage() {
        out.push(counter_f64(
            "process_cpu_seconds_total",
            "User and system CPU time of the server process, seconds.",
            cpu_s,
        ));
        out.push(gauge(
            "process_resident_memory_bytes",
            "Resident memory of the server process, bytes.",
            rss as f64,
        ));
    }
    out
}

/// The settlement backlog gauges: none without paid sessions (`None`), zeros until the worker's
/// first pass (`Some(None)`), else the last measurement with the oldest age taken at `now`.
pub fn settlement_families(
    backlog: Option<Option<Backlog>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<MetricFamily> {
    let Some(backlog) = backlog else {
        return vec![];
    };
    let (open, overdue, set_aside, oldest) = match backlog {
        Some(b) => (
            b.open,
            b.overdue,
            b.set_aside,
            b.oldest_open_age(now).as_secs_f64(),
        ),
        None => (0, 0, 0, 0.0),
    };
    vec![
        gauge(
            "confab_settlements_open",
            "Settlements not yet confirmed on chain (pending or submitted), set-aside rows excluded.",
            open as f64,
        ),
        gauge(
            "confab_settlements_overdue",
            "Open settlements whose paid session ended longer ago than --settlement-overdue-after-s.",
            overdue as f64,
        ),
        gauge(
            "confab_settlements_set_aside",
            "Settlements set aside because their row does not decode; an operator must repair them.",
            set_aside as f64,
        ),
        gauge(
            "confab_settlement_oldest_open_seconds",
            "Seconds the oldest open settlement has waited since its paid session ended (0: none open).",
            oldest,
        ),
    ]
}

/// The webhook outbox gauges: none without endpoints (`None`), zeros until the delivery worker's
/// first pass, else its last measurement (the oldest age taken at `now`); with the count of room
/// and participant events dropped because the writer's queue was full.
pub fn webhook_families(
    backlog: Option<(Option<confab_webhooks::WebhookBacklog>, u64)>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<MetricFamily> {
    let Some((backlog, dropped)) = backlog else {
        return vec![];
    };
    let (pending, oldest) = backlog
        .map(|b| (b.pending, b.oldest_pending_age(now).as_secs_f64()))
        .unwrap_or((0, 0.0));
    vec![
        gauge(
            "confab_webhooks_pending",
            "Webhook deliveries not yet acknowledged by their endpoint (retried with back-off, never dropped).",
            pending as f64,
        ),
        gauge(
            "confab_webhook_oldest_pending_seconds",
            "Seconds since the event of the oldest unacknowledged webhook delivery happened (0: none pending).",
            oldest,
        ),
        counter(
            "confab_webhook_events_dropped_total",
            "Room and participant events not written to the webhook outbox because its writer's queue was full.",
            dropped,
        ),
    ]
}

/// Per media worker (label `worker`, its index): what tells an operator whether the rooms are
/// spread over the workers and whether one of them is saturated. The unlabelled families above
/// are the sums over workers; these carry a `confab_worker_` prefix so a sum over both never
/// counts a packet twice.
pub fn worker_families(workers: &[confab_sfu::MediaWorker]) -> Vec<MetricFamily> {
    type Read = fn(&SfuMetrics) -> f64;
    let series: [(&str, &str, MetricType, Read); 6] = [
        (
            "confab_worker_rooms",
            "Rooms open now on this media worker.",
            MetricType::GAUGE,
            |m| SfuMetrics::get(&m.rooms) as f64,
        ),
        (
            "confab_worker_participants",
            "Participants now on this media worker.",
            MetricType::GAUGE,
            |m| SfuMetrics::get(&m.participants) as f64,
        ),
        (
            "confab_worker_rtp_received_packets_total",
            "RTP packets this media worker received from publishers.",
            MetricType::COUNTER,
            |m| SfuMetrics::get(&m.rtp_in) as f64,
        ),
        (
            "confab_worker_rtp_forwarded_packets_total",
            "RTP packets this media worker handed to subscriber transports.",
            MetricType::COUNTER,
            |m| SfuMetrics::get(&m.rtp_forwarded) as f64,
        ),
        (
            "confab_worker_processing_seconds_total",
            "Time this media worker spent on received datagrams (its busy time; a rate near 1 means its core is saturated).",
            MetricType::COUNTER,
            |m| SfuMetrics::get(&m.processing_ns) as f64 / 1e9,
        ),
        (
            "confab_worker_beat_age_seconds",
            "Time since this media worker's loop last turned (it turns at least once a second).",
            MetricType::GAUGE,
            |m| m.since_worker_beat().map_or(f64::INFINITY, |d| d.as_secs_f64()),
        ),
    ];
    series
        .into_iter()
        .map(|(name, help, t, read)| {
            let mut f = family(name, help, t);
            f.set_metric(
                workers
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let v = read(w.metrics());
                        let mut metric = if t == MetricType::COUNTER {
                            let mut c = Counter::default();
                            c.set_value(v);
                            let mut m = Metric::default();
                            m.set_counter(c);
                            m
                        } else {
                            let mut g = Gauge::default();
                            g.set_value(v);
                            Metric::from_gauge(g)
                        };
                        metric.set_label(vec![label("worker", &i.to_string())]);
                        metric
                    })
                    .collect(),
            );
            f
        })
        .collect()
}

fn processing_histogram(m: &SfuMetrics) -> MetricFamily {
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(PROCESSING_BUCKETS_NS.len());
    for (i, bound) in PROCESSING_BUCKETS_NS.iter().enumerate() {
        cumulative += SfuMetrics::get(&m.processing_hist[i]);
        let mut b = Bucket::default();
        b.set_upper_bound(*bound as f64 / 1e9);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    let total = cumulative + SfuMetrics::get(&m.processing_hist[PROCESSING_BUCKETS_NS.len()]);
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(total);
    h.set_sample_sum(SfuMetrics::get(&m.processing_ns) as f64 / 1e9);
    let mut metric = Metric::default();
    metric.set_histogram(h);
    let mut f = family(
        "confab_packet_processing_seconds",
        "Media worker time per received datagram: receive to the last datagram it caused to be sent.",
        MetricType::HISTOGRAM,
    );
    f.set_metric(vec![metric]);
    f
}

fn family(name: &str, help: &str, t: MetricType) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(t);
    f
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn counter(name: &str, help: &str, v: u64) -> MetricFamily {
    counter_f64(name, help, v as f64)
}

fn counter_f64(name: &str, help: &str, v: f64) -> MetricFamily {
    let mut c = Counter::default();
    c.set_value(v);
    let mut metric = Metric::default();
    metric.set_counter(c);
    let mut f = family(name, help, MetricType::COUNTER);
    f.set_metric(vec![metric]);
    f
}

fn gauge(name: &str, help: &str, v: f64) -> MetricFamily {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut f = family(name, help, MetricType::GAUGE);
    f.set_metric(vec![Metric::from_gauge(g)]);
    f
}

/// `(cpu seconds, resident bytes)` of this process from `/proc/self` (Linux only). Clock ticks
/// are taken as 100 per second (`USER_HZ`, fixed on Linux for every architecture we run on).
fn process_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(((utime + stime) as f64 / 100.0, rss_kib * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_scrape_shows_counters_drops_by_cause_and_a_cumulative_histogram() {
        let m = SfuMetrics::default();
        m.rtp_forwarded.store(42, Ordering::Relaxed);
        m.drops_keyframe_wait.store(3, Ordering::Relaxed);
        m.processing_hist[0].store(5, Ordering::Relaxed);
        m.processing_hist[2].store(1, Ordering::Relaxed);
        m.processing_hist[PROCESSING_BUCKETS_NS.len()].store(1, Ordering::Relaxed);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&families(&m))
            .unwrap();
        assert!(
            text.contains("confab_rtp_forwarded_packets_total 42"),
            "{text}"
        );
        assert!(
            text.contains("confab_drops_total{cause=\"keyframe_wait\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("confab_packet_processing_seconds_bucket{le=\"0.000001\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("confab_packet_processing_seconds_bucket{le=\"0.000005\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("confab_packet_processing_seconds_bucket{le=\"+Inf\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("confab_packet_processing_seconds_count 7"),
            "{text}"
        );
    }

    #[test]
    fn the_leak_hunting_gauges_show_routes_mlines_tasks_and_fds() {
        let m = SfuMetrics::default();
        m.routes.store(4, Ordering::Relaxed);
        m.subscriber_mlines.store(6, Ordering::Relaxed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            register_runtime();
            register_runtime();
            let before = tasks_alive();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let _ = rx.await;
            });
            assert_eq!(
                tasks_alive(),
                before + 1,
                "the spawned task is counted once"
            );
            let text = encode(&families(&m));
            assert!(text.contains("confab_routes 4"), "{text}");
            assert!(text.contains("confab_subscriber_mlines 6"), "{text}");
            assert!(text.contains("confab_tasks_alive "), "{text}");
            assert!(text.contains("confab_open_fds "), "{text}");
            let _ = tx.send(());
            task.await.unwrap();
            assert_eq!(
                tasks_alive(),
                before,
                "a finished task is no longer counted"
            );
        });
        assert!(open_fds().unwrap() >= 3, "stdin, stdout, stderr at least");
    }

    fn encode(families: &[MetricFamily]) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(families)
            .unwrap()
    }

    #[test]
    fn the_settlement_backlog_is_exported_as_gauges_with_the_oldest_age_at_scrape_time() {
        let now = chrono::Utc::now();
        let b = Backlog {
            measured_at: now - chrono::Duration::seconds(1),
            overdue_after: std::time::Duration::from_secs(600),
            open: 3,
            overdue: 1,
            oldest_open_since: Some(now - chrono::Duration::seconds(700)),
            set_aside: 2,
        };
        let text = encode(&settlement_families(Some(Some(b)), now));
        for line in [
            "confab_settlements_open 3",
            "confab_settlements_overdue 1",
            "confab_settlements_set_aside 2",
            "confab_settlement_oldest_open_seconds 700",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
    }

    #[test]
    fn the_webhook_backlog_and_dropped_events_are_exported_and_absent_without_endpoints() {
        let now = chrono::Utc::now();
        let b = confab_webhooks::WebhookBacklog {
            measured_at: now,
            pending: 4,
            oldest_pending_since: Some(now - chrono::Duration::seconds(90)),
        };
        let text = encode(&webhook_families(Some((Some(b), 7)), now));
        for line in [
            "confab_webhooks_pending 4",
            "confab_webhook_oldest_pending_seconds 90",
            "confab_webhook_events_dropped_total 7",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
        assert!(webhook_families(None, now).is_empty());
    }

    #[test]
    fn settlement_gauges_are_zero_before_the_first_pass_and_absent_without_paid_sessions() {
        let now = chrono::Utc::now();
        let text = encode(&settlement_families(Some(None), now));
        assert!(text.contains("confab_settlements_open 0"), "{text}");
        assert!(
            text.contains("confab_settlement_oldest_open_seconds 0"),
            "{text}"
        );
        assert!(settlement_families(None, now).is_empty());
    }
}
