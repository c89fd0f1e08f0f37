//! Liveness and readiness probes, for a supervisor (systemd, Docker `HEALTHCHECK`, Kubernetes)
//! and a load balancer. Neither needs a token (a probe has none); both share a per-IP budget
//! ([`PROBE_RATE_PER_S`], [`PROBE_BURST`]), past which they answer 429 `rate_limited`.
//!
//! - `GET /healthz`: is this process worth keeping? 200 while the media worker's loop turns
//!   (it runs its timers at least once a second), 503 once it has not for [`MEDIA_STALLED_AFTER`]
//!   (a worker that *died* already made the process exit with status 70, `src/app.rs`).
//! - `GET /readyz`: should it get traffic? 200 when the database answers `SELECT 1` within
//!   [`READY_DB_TIMEOUT`], the media sockets are bound and the worker turns, and (with paid
//!   sessions on) the settlement worker runs; 503 naming what is not.

use super::{ApiError, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use confab_sfu::SfuMetrics;
use std::time::Duration;

/// A media worker whose loop has not turned for this long is stuck: `/healthz` answers 503.
pub const MEDIA_STALLED_AFTER: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for the database's `SELECT 1` before calling it unavailable.
pub const READY_DB_TIMEOUT: Duration = Duration::from_secs(2);
/// Probe budget per client address: this many a second ...
pub const PROBE_RATE_PER_S: f64 = 20.0;
/// ... after a burst of this many (`/healthz`, `/readyz` and `/metrics` share it).
pub const PROBE_BURST: u32 = 100;

/// 429 `rate_limited` past the address's probe budget.
pub(super) fn probe_budget(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if state.probe_limiter.allow_request(req) {
        return Ok(());
    }
    Err(ApiError::RateLimited {
        retry_after_s: 1,
        message: "too many probes from this address".into(),
    })
}

/// The media worker's state from how long ago its loop last turned
/// ([`SfuMetrics::since_worker_beat`]): `Ok(ms)`, or `Err` with why it is not live (never
/// turned, or stalled for [`MEDIA_STALLED_AFTER`]).
fn media_state(since_beat: Option<Duration>) -> Result<u64, String> {
    match since_beat {
        None => Err("media worker never started".into()),
        Some(d) if d >= MEDIA_STALLED_AFTER => Err(format!(
            "media worker stalled: its loop last turned {} ms ago",
            d.as_millis()
        )),
        Some(d) => Ok(d.as_millis() as u64),
    }
}

/// `GET /healthz` → 200 `{"status": "ok", "media_beat_ms", "rooms", "participants"}`, or 503
/// `{"status": "unhealthy", "reason"}` when the media worker is stuck.
pub(super) async fn healthz(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    probe_budget(&req, &state)?;
    let m = state.sfu.metrics_total();
    Ok(match media_state(m.since_worker_beat()) {
        Ok(beat) => HttpResponse::Ok().json(serde_json::json!({
            "status": "ok",
            "media_beat_ms": beat,
            "media_workers": state.sfu.workers().len(),
            "rooms": SfuMetrics::get(&m.rooms),
            "participants": SfuMetrics::get(&m.participants),
        })),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "unhealthy", "reason": reason})),
    })
}

/// `GET /readyz` → 200 `{"status": "ready", "checks": {"database": "ok", "media": "ok",
/// "settlement": "ok" | "off"}}`, or 503 `{"status": "not_ready", "checks": {...}}` where each
/// failing check holds its reason instead of `"ok"`. Database errors are summarised, never
/// echoed (they may carry the URL).
pub(super) async fn readyz(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    probe_budget(&req, &state)?;
    let database = match tokio::time::timeout(READY_DB_TIMEOUT, state.db.health_check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!("readiness: database check failed: {e}");
            Err("unavailable".to_owned())
        }
        Err(_) => Err(format!(
            "no answer within {} ms",
            READY_DB_TIMEOUT.as_millis()
        )),
    };
    let media = media_state(state.sfu.metrics_total().since_worker_beat()).and_then(|_| {
        if state.sfu.udp_addrs().is_empty() {
            Err("no media socket bound".into())
        } else {
            Ok(())
        }
    });
    let settlement = match &state.settlement_backlog {
        None => Ok("off"),
        Some(b) if b.worker_running() => Ok("ok"),
        Some(_) => Err("settlement worker stopped".to_owned()),
    };
    let ready = database.is_ok() && media.is_ok() && settlement.is_ok();
    let show = |r: Result<&str, String>| match r {
        Ok(s) => serde_json::Value::from(s),
        Err(e) => serde_json::Value::from(e),
    };
    let checks = serde_json::json!({
        "database": show(database.map(|()| "ok")),
        "media": show(media.map(|()| "ok")),
        "settlement": show(settlement),
    });
    Ok(if ready {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready", "checks": checks}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "not_ready", "checks": checks}))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_never_turned_or_stopped_turning_is_not_live() {
        assert!(media_state(None).is_err());
        assert_eq!(media_state(Some(Duration::from_millis(400))), Ok(400));
        let stalled = media_state(Some(MEDIA_STALLED_AFTER)).unwrap_err();
        assert!(stalled.contains("stalled"), "{stalled}");
    }
}
