//! The media plane's types and events as wire messages ([`super::protocol`]): tracks,
//! participants, events, and paid-session states and errors. Pure conversions, no I/O.

use super::protocol::{
    ActiveSpeakerMsg, ErrorCode, Kind, ParticipantMsg, ServerMessage, Source, SubscribedTrackMsg,
    TrackMsg,
};
use crate::paid::PaidError;
use confab_sfu::{MediaKind, ParticipantInfo, SfuEvent, TrackInfo, TrackSource};

/// `paid_session` for `info`.
pub(super) fn paid_session_msg(info: &crate::paid::PaidInfo) -> ServerMessage {
    ServerMessage::PaidSession {
        session: confab_protocol::PaidSessionMsg {
            id: info.id.to_string(),
            student: info.student.to_checksum(None),
            tutor: info.tutor.to_checksum(None),
            language: info.language,
            chain_session_id: info.chain_session_id.to_string(),
            rate_per_second: info.rate_per_second.to_string(),
            started_at: info.started_at,
        },
    }
}

pub(super) fn kind_of(s: Source) -> Kind {
    match s {
        Source::Microphone => Kind::Audio,
        Source::Camera | Source::Screen => Kind::Video,
    }
}

pub(super) fn source_in(s: Source) -> TrackSource {
    match s {
        Source::Microphone => TrackSource::Microphone,
        Source::Camera => TrackSource::Camera,
        Source::Screen => TrackSource::Screen,
    }
}

pub(super) fn source_out(s: TrackSource) -> Source {
    match s {
        TrackSource::Microphone => Source::Microphone,
        TrackSource::Camera => Source::Camera,
        TrackSource::Screen => Source::Screen,
    }
}

pub(super) fn kind_out(k: MediaKind) -> Kind {
    match k {
        MediaKind::Audio => Kind::Audio,
        MediaKind::Video => Kind::Video,
    }
}

pub(super) fn track_msg(t: &TrackInfo) -> TrackMsg {
    TrackMsg {
        id: t.id.to_string(),
        kind: kind_out(t.kind),
        source: source_out(t.source),
        muted: t.muted,
    }
}

pub(super) fn participant_msg(p: &ParticipantInfo) -> ParticipantMsg {
    ParticipantMsg {
        id: p.id.to_string(),
        name: p.name.clone(),
        tracks: p.tracks.iter().map(track_msg).collect(),
    }
}

/// The wire message for a media-plane event (`None`: not for the client).
pub(super) fn event_message(ev: SfuEvent) -> Option<ServerMessage> {
    Some(match ev {
        SfuEvent::ParticipantJoined(p) => ServerMessage::ParticipantJoined {
            participant: participant_msg(&p),
        },
        SfuEvent::ParticipantLeft(id) => ServerMessage::ParticipantLeft {
            participant_id: id.to_string(),
        },
        SfuEvent::TrackPublished(t) => ServerMessage::TrackPublished {
            participant_id: t.id.participant.to_string(),
            track: track_msg(&t),
        },
        SfuEvent::TrackUnpublished(t) => ServerMessage::TrackUnpublished {
            participant_id: t.participant.to_string(),
            track_id: t.to_string(),
        },
        SfuEvent::TrackMuted {
            track,
            source,
            muted,
        } => ServerMessage::TrackMuted {
            participant_id: track.participant.to_string(),
            track_id: track.to_string(),
            source: source_out(source),
            muted,
        },
        SfuEvent::SubscribeOffer { sdp, tracks } => ServerMessage::SubscribeOffer {
            sdp,
            tracks: tracks
                .into_iter()
                .map(|t| SubscribedTrackMsg {
                    mid: t.mid,
                    participant_id: t.track.participant.to_string(),
                    track_id: t.track.to_string(),
                    source: source_out(t.source),
                    kind: kind_out(t.kind),
                })
                .collect(),
        },
        SfuEvent::ParticipantReconnecting(id) => ServerMessage::ParticipantReconnecting {
            participant_id: id.to_string(),
        },
        SfuEvent::ParticipantReconnected(id) => ServerMessage::ParticipantReconnected {
            participant_id: id.to_string(),
        },
        SfuEvent::MutedByHost(source) => ServerMessage::MutedByHost {
            source: source_out(source),
        },
        SfuEvent::RoomLocked(locked) => ServerMessage::RoomLocked { locked },
        SfuEvent::PublisherLayers { source, active } => ServerMessage::PublisherLayers {
            source: source_out(source),
            rids: active,
        },
        SfuEvent::PublisherPaused { source, paused } => ServerMessage::PublisherPaused {
            source: source_out(source),
            paused,
        },
        SfuEvent::ActiveSpeakers(list) => ServerMessage::ActiveSpeakers {
            speakers: list
                .iter()
                .map(|s| ActiveSpeakerMsg {
                    participant_id: s.participant.to_string(),
                    // Two decimals are all a client shows.
                    level: (s.level * 100.0).round() / 100.0,
                })
                .collect(),
        },
        SfuEvent::DataMessage { .. } | SfuEvent::DataChannelOpen { .. } => return None,
        SfuEvent::Closed(_) => return None,
    })
}

/// The protocol error code for a paid-session refusal (the only such mapping).
pub(super) fn paid_error_code(e: &PaidError) -> ErrorCode {
    match e {
        PaidError::NotOnChain => ErrorCode::PaidSessionNotFound,
        PaidError::ChainUnavailable(_) => ErrorCode::ChainUnavailable,
        PaidError::TutorBusy => ErrorCode::TutorBusy,
        PaidError::RoomBusy => ErrorCode::PaidSessionRunning,
        PaidError::BadAddress(_) => ErrorCode::BadJson,
        PaidError::Unavailable(_) | PaidError::Stopped => ErrorCode::Unavailable,
    }
}
