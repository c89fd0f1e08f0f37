//! The webhook events of paid sessions and settlements, built here (pure) and written by [`crate::repo`] in
//! the same transaction as the state they report (`confab_store::webhooks`). Shapes are documented in
//! `docs/protocol.md` ("Webhooks").

use chrono::{DateTime, Utc};
use confab_store::WebhookEvent;
use serde_json::json;
use uuid::Uuid;

/// `paid_session_started`: `{paid_session_id, room, student, tutor, language, chain_session_id}`.
pub(crate) fn paid_session_started(
    id: Uuid,
    room: &str,
    student: &str,
    tutor: &str,
    language: u8,
    chain_session_id: Option<&str>,
    at: DateTime<Utc>,
) -> WebhookEvent {
    WebhookEvent::new(
        "paid_session_started",
        json!({"paid_session_id": id, "room": room, "student": student, "tutor": tutor,
               "language": language, "chain_session_id": chain_session_id}),
        at,
    )
}

/// The parties and times of a paid session that just ended.
pub(crate) struct Ended<'a> {
    pub id: Uuid,
    pub room: &'a str,
    pub student: &'a str,
    pub tutor: &'a str,
    pub chain_session_id: Option<&'a str>,
    pub started_at: DateTime<Utc>,
    pub reason: &'a str,
    pub settlement_id: Uuid,
}

/// `paid_session_ended`: `{paid_session_id, room, student, tutor, chain_session_id, started_at, ended_at,
/// reason, settlement_id}`; for LangDAO endpoints `session-ended` `{type, sessionId (the room), endedBy,
/// userAddress (the tutor, whose session the contract ends), studentAddress, tutorAddress, reason, timestamp
/// (ms)}`.
pub(crate) fn paid_session_ended(e: &Ended<'_>, at: DateTime<Utc>) -> WebhookEvent {
    let ended_by = match e.reason {
        "participant_ended" => "participant",
        "disconnected" => "disconnect",
        "heartbeat_timeout" => "heartbeat-timeout",
        _ => "server",
    };
    WebhookEvent::new(
        "paid_session_ended",
        json!({"paid_session_id": e.id, "room": e.room, "student": e.student, "tutor": e.tutor,
               "chain_session_id": e.chain_session_id, "started_at": rfc3339(e.started_at),
               "ended_at": rfc3339(at), "reason": e.reason, "settlement_id": e.settlement_id}),
        at,
    )
    .with_langdao(
        "session-ended",
        json!({"type": "session-ended", "sessionId": e.room, "endedBy": ended_by, "userAddress": e.tutor,
               "studentAddress": e.student, "tutorAddress": e.tutor, "reason": e.reason,
               "timestamp": at.timestamp_millis()}),
    )
}

/// The settlement columns a finished-settlement event reports.
pub(crate) struct Finished<'a> {
    pub settlement_id: Uuid,
    pub paid_session_id: Uuid,
    pub room: &'a str,
    pub tutor: &'a str,
    pub state: &'a str,
    pub tx_hash: Option<&'a str>,
    pub chain_session_id: Option<&'a str>,
    pub duration_s: Option<i64>,
    pub total_paid: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// `settlement_confirmed` (state `settled` or `ended_elsewhere`): `{settlement_id, paid_session_id, room, tutor,
/// state, tx_hash, chain_session_id, duration_s, total_paid}`; `settlement_failed` (state `failed`): the same
/// with `error` instead of the chain results. `None` for a state that is not final.
pub(crate) fn settlement_finished(f: &Finished<'_>, at: DateTime<Utc>) -> Option<WebhookEvent> {
    let base = json!({"settlement_id": f.settlement_id, "paid_session_id": f.paid_session_id, "room": f.room,
                      "tutor": f.tutor, "state": f.state});
    let mut data = base;
    let map = data.as_object_mut()?;
    let kind = match f.state {
        "settled" | "ended_elsewhere" => {
            map.insert("tx_hash".into(), json!(f.tx_hash));
            map.insert("chain_session_id".into(), json!(f.chain_session_id));
            map.insert("duration_s".into(), json!(f.duration_s));
            map.insert("total_paid".into(), json!(f.total_paid));
            "settlement_confirmed"
        }
        "failed" => {
            map.insert("error".into(), json!(f.error));
            "settlement_failed"
        }
        _ => return None,
    };
    Some(WebhookEvent::new(kind, data, at))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: &WebhookEvent) -> serde_json::Value {
        serde_json::from_str(&e.standard.as_ref().unwrap().1).unwrap()
    }

    #[test]
    fn a_settled_settlement_is_confirmed_and_a_failed_one_reports_its_error() {
        let f = Finished {
            settlement_id: Uuid::nil(),
            paid_session_id: Uuid::nil(),
            room: "r",
            tutor: "0xT",
            state: "settled",
            tx_hash: Some("0xabc"),
            chain_session_id: Some("7"),
            duration_s: Some(60),
            total_paid: Some("1000"),
            error: None,
        };
        let e = settlement_finished(&f, Utc::now()).unwrap();
        let b = body(&e);
        assert_eq!(b["type"], "settlement_confirmed");
        assert_eq!(b["data"]["total_paid"], "1000");
        assert!(e.langdao.is_none());
        let failed = settlement_finished(
            &Finished {
                state: "failed",
                error: Some("reverted"),
                ..f
            },
            Utc::now(),
        )
        .unwrap();
        assert_eq!(body(&failed)["type"], "settlement_failed");
        assert_eq!(body(&failed)["data"]["error"], "reverted");
        assert!(settlement_finished(
            &Finished {
                state: "submitted",
                ..f
            },
            Utc::now()
        )
        .is_none());
    }

    #[test]
    fn an_ended_paid_session_has_a_langdao_session_ended_body_under_the_same_id() {
        let e = paid_session_ended(
            &Ended {
                id: Uuid::nil(),
                room: "room-1",
                student: "0xS",
                tutor: "0xT",
                chain_session_id: None,
                started_at: Utc::now(),
                reason: "disconnected",
                settlement_id: Uuid::nil(),
            },
            Utc::now(),
        );
        assert!(e.id.starts_with("msg_"));
        let (kind, langdao) = e.langdao.as_ref().unwrap();
        assert_eq!(kind, "session-ended");
        let l: serde_json::Value = serde_json::from_str(langdao).unwrap();
        assert_eq!(l["sessionId"], "room-1");
        assert_eq!(l["endedBy"], "disconnect");
        assert_eq!(body(&e)["data"]["reason"], "disconnected");
    }
}
