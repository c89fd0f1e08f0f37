// Wire-format parsing for protocol.js: server JSON into the room model, SDP and token details the
// client needs. Pure functions, no DOM, no state.

/** @typedef {import('/types.js').Track} Track */
/** @typedef {import('/types.js').Participant} Participant */

/** @param {any} raw @returns {Track} */
export function toTrack(raw) {
  return { id: String(raw.id), kind: raw.kind, source: raw.source, muted: !!raw.muted };
}

/** @param {any} raw @returns {Participant} */
export function toParticipant(raw) {
  const tracks = new Map();
  for (const t of raw.tracks || []) { const x = toTrack(t); tracks.set(x.id, x); }
  return { id: String(raw.id), name: String(raw.name || 'Guest'), tracks };
}

/**
 * mid → {participantId, trackId} from the `a=msid:` lines of an SDP.
 * @param {string} sdp
 */
export function msidBindings(sdp) {
  /** @type {Map<string, {participantId: string, trackId: string}>} */
  const out = new Map();
  for (const section of String(sdp).split(/\r?\nm=/).slice(1)) {
    const mid = /\r?\na=mid:(\S+)/.exec(section)?.[1];
    const msid = /\r?\na=msid:(\S+) (\S+)/.exec(section);
    if (mid && msid) out.set(mid, { participantId: msid[1], trackId: msid[2] });
  }
  return out;
}

/**
 * The claims of a JWT, not verified (the server checks every token; the page only reads who it is
 * and which controls to show). `{}` when it does not decode.
 * @param {string} jwt @returns {Record<string, unknown>}
 */
export function jwtClaims(jwt) {
  try {
    const b64 = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = new TextDecoder().decode(Uint8Array.from(atob(b64 + '='.repeat((4 - b64.length % 4) % 4)), (c) => c.charCodeAt(0)));
    const claims = JSON.parse(json);
    return claims && typeof claims === 'object' ? claims : {};
  } catch {
    return {};
  }
}

/** The `sub` claim of a JWT (not verified: only to recognise our own chat messages). @param {string} jwt */
export function jwtSubject(jwt) {
  return String(jwtClaims(jwt).sub || '');
}

/** The `role` claim of a JWT (`participant` when absent, as the server reads it). @param {string} jwt */
export function jwtRole(jwt) {
  return String(jwtClaims(jwt).role || 'participant');
}
