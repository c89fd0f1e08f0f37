//! WebSocket signaling: the wire protocol ([`protocol`]), one task per socket ([`session`]),
//! presence and call messages ([`lobby`]), host controls ([`host`]), media-plane types as wire
//! messages (`convert`), and the single place where
//! media-plane errors become protocol error codes.

mod convert;
pub mod host;
pub mod lobby;
pub mod protocol;
pub mod ratelimit;
pub mod session;

use confab_sfu::SfuError;
use protocol::ErrorCode;

/// The display name in `raw`, trimmed: 1–64 characters, none of them control characters.
/// `None` when it breaks that rule. The one rule for names in tokens and in `join`.
pub fn display_name(raw: &str) -> Option<&str> {
    let n = raw.trim();
    (!n.is_empty() && n.chars().count() <= 64 && !n.chars().any(char::is_control)).then_some(n)
}

/// The protocol error code for a media-plane refusal (the only such mapping).
pub fn error_code(e: &SfuError) -> ErrorCode {
    match e {
        SfuError::RoomFull { .. } => ErrorCode::RoomFull,
        SfuError::UnknownParticipant => ErrorCode::NotJoined,
        SfuError::InvalidSdp(_) => ErrorCode::InvalidSdp,
        SfuError::InvalidCandidate(_) => ErrorCode::InvalidCandidate,
        SfuError::NegotiationFailed(_) => ErrorCode::NegotiationFailed,
        SfuError::Stopped | SfuError::Internal => ErrorCode::Internal,
        SfuError::ResumeFailed => ErrorCode::ResumeFailed,
        SfuError::RoomLocked => ErrorCode::RoomLocked,
        SfuError::Removed => ErrorCode::Removed,
        SfuError::UnknownTrack => ErrorCode::UnknownTrack,
    }
}
