// JSDoc types of the confab browser client (no code): the room model and the protocol's shapes,
// shared by protocol.js, stats.js and the UI modules.

/** @typedef {'audio'|'video'} Kind */
/** @typedef {'microphone'|'camera'|'screen'} Source */
/** @typedef {'idle'|'connecting'|'connected'|'reconnecting'|'failed'|'left'} SessionState */
/** @typedef {'publisher'|'subscriber'} Target */

/**
 * @typedef {Object} Track   a published track as the server describes it
 * @property {string} id
 * @property {Kind} kind
 * @property {Source} source
 * @property {boolean} muted
 */

/**
 * @typedef {Object} Participant   another participant of the room
 * @property {string} id
 * @property {string} name
 * @property {Map<string, Track>} tracks   by track id
 * @property {boolean} [reconnecting]       their signaling socket is gone; they may come back (`participant_reconnecting`)
 */

/**
 * @typedef {Object} RemoteBinding   what one m-line of the subscriber transport carries
 * @property {string} mid
 * @property {string} participantId
 * @property {string} trackId
 * @property {Source} source
 * @property {Kind} kind
 * @property {MediaStreamTrack|null} track
 */

/**
 * @typedef {Object} PaidSession   the `session` of a `paid_session` message
 * @property {string} id
 * @property {string} student        checksummed address
 * @property {string} tutor          checksummed address
 * @property {number} language
 * @property {string} chain_session_id
 * @property {string} rate_per_second   token units per second (decimal string)
 * @property {number} started_at        Unix seconds
 */

/**
 * @typedef {Object} ParticipantStats   test hook result, one per remote participant
 * @property {string} participantId
 * @property {string} name
 * @property {number} framesDecoded          camera video
 * @property {number} frameWidth             width of the camera frames decoded last, px (0: none yet)
 * @property {number} videoPacketsReceived   camera video
 * @property {number} videoPacketsLost       camera video, as the receiver counts it (RFC 3550 A.3)
 * @property {number} freezeCount            camera video freezes (webrtc-stats: a frame later than max(3 × mean, mean + 150 ms))
 * @property {number} totalFreezesDuration   camera video, seconds
 * @property {number} screenFramesDecoded
 * @property {number} audioPacketsReceived   microphone
 * @property {number} audioPacketsLost       microphone
 * @property {number} audioLevel             0..1, microphone
 * @property {number} audioStatsAt           when the browser read the microphone counters (ms since the epoch; 0: none)
 */

/**
 * @typedef {Object} SendStats   test hook result: what our publisher transport sent
 * @property {number} videoPacketsSent
 * @property {number} videoBytesSent       RTP payload bytes of video sent (first transmissions)
 * @property {number} framesSent
 * @property {number} audioPacketsSent
 * @property {string} frameSize            camera video `<width>x<height>` as sent now ('' before the first frame)
 * @property {string} qualityLimitation    the encoder's `qualityLimitationReason` (none, cpu, bandwidth, other)
 */

/**
 * @typedef {Object} PairStats   test hook result: one transport's ICE candidate pairs
 * @property {string|null} local    selected pair's local candidate, `<protocol> <address>:<port> <type>`
 * @property {string|null} remote   selected pair's remote candidate
 * @property {number} succeeded     pairs in state succeeded
 * @property {number} nominated     pairs nominated
 * @property {number} changes       selected pair changes so far
 */

export {};
