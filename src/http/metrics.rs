//! `GET /metrics`: the media plane's counters in the Prometheus text format (version 0.0.4).
//!
//! Nothing is registered ahead of time and nothing is updated on the packet path: the media
//! worker keeps relaxed atomics ([`SfuMetrics`]), and each scrape reads them once and builds the
//! metric families from those values. The per-packet processing time histogram comes from the
//! worker's fixed buckets ([`PROCESSING_BUCKETS_NS`]). The process's own CPU time and resident
//! memory are read from `/proc/self` at scrape time (Linux; absent elsewhere), so a load
//! generator on another machine can compute server CPU per forwarded packet too.
//!
//! Not exported: NACKs. `rtc`'s NACK responder and generator interceptors answer and send them
//! inside the peer connection, and the worker never sees them; counting them would take a tap
//! interceptor like the keyframe-request one, on every RTCP packet.

use super::AppState;
use actix_web::{web, HttpResponse};
use confab_sfu::api::PROCESSING_BUCKETS_NS;
use confab_sfu::SfuMetrics;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use std::sync::atomic::AtomicU64;

/// Content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let families = families(state.sfu.metrics());
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(body) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(body),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
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
            "confab_ice_early_nominations_total",
            "Transports whose pair was selected when the peer's DTLS arrived on it, before its USE-CANDIDATE check.",
            get(&m.ice_early_nominations),
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
    ];
    let drops: [(&str, &AtomicU64); 8] = [
        ("keyframe_wait", &m.drops_keyframe_wait),
        ("unmapped_payload_type", &m.drops_unmapped_pt),
        ("socket_full", &m.drops_socket_full),
        ("unroutable", &m.drops_unroutable),
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
}
