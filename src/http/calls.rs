//! `GET /api/presence` and `GET /api/calls` (docs/protocol.md, "Presence and calls").

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{bearer, ApiError, AppState};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/presence", web::get().to(presence))
        .route("/api/calls", web::get().to(calls));
}

/// `GET /api/presence` (any valid token): `{"users": [{"user_id", "name", "available"}]}`,
/// everyone online, by user id.
async fn presence(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.tokens.verify(&bearer(&req).unwrap_or_default())?;
    let users = state.calls.online().await;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "users": users })))
}

#[derive(Deserialize)]
struct CallsQuery {
    limit: Option<u32>,
    before: Option<String>,
}

/// `GET /api/calls?limit={1..200, default 50}&before={call id}` (token): the token user's own
/// calls, placed or received, newest first: `{"calls": [{"id", "room", "caller", "callee",
/// "status", "end_reason", "created_at", "answered_at", "ended_at", "duration_s"}], "has_more"}`
/// (times RFC 3339 UTC; `duration_s` for answered calls that ended). The next page: `before` =
/// the last id. Errors: 401, 400 (`before` not a call id), 503 (database down).
async fn calls(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<CallsQuery>,
) -> Result<HttpResponse, ApiError> {
    let claims = state.tokens.verify(&bearer(&req).unwrap_or_default())?;
    let limit = query
        .limit
        .unwrap_or(50)
        .clamp(1, confab_store::CALLS_MAX_LIMIT);
    let before = match query.before.as_deref() {
        None | Some("") => None,
        Some(b) => Some(
            confab_store::Uuid::parse_str(b)
                .map_err(|_| ApiError::BadRequest("before is not a call id".into()))?,
        ),
    };
    let mut rows = state
        .chat
        .db()
        .calls_of_user(&claims.sub, limit + 1, before)
        .await
        .map_err(ApiError::from_store)?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let calls: Vec<_> = rows
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id.to_string(),
                "room": c.room_id,
                "caller": c.caller_id,
                "callee": c.callee_id,
                "status": c.status.as_str(),
                "end_reason": c.end_reason,
                "created_at": c.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "answered_at": c.answered_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                "ended_at": c.ended_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                "duration_s": c.duration().map(|d| d.as_secs()),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "calls": calls, "has_more": has_more })))
}
