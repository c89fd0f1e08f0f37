// Local devices for protocol.js: camera and microphone via getUserMedia, with the fallbacks a
// machine without a camera (or without any device) needs, and failures in words for the user.

/** @typedef {import('/types.js').Kind} Kind */

export const AUDIO_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
export const VIDEO_CONSTRAINTS = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

/**
 * Camera and microphone, else whichever of the two works, else none. `error` says what is missing
 * and why (empty when both were granted).
 * @returns {Promise<{microphone: MediaStreamTrack|null, camera: MediaStreamTrack|null, error: string}>}
 */
export async function acquireDevices() {
  const md = globalThis.navigator?.mediaDevices;
  if (!md?.getUserMedia) {
    return { microphone: null, camera: null,
      error: 'This browser gives no access to camera or microphone (an insecure http:// origin?).' };
  }
  /** @type {MediaStreamConstraints[]} */
  const attempts = [
    { audio: AUDIO_CONSTRAINTS, video: VIDEO_CONSTRAINTS },
    { audio: AUDIO_CONSTRAINTS, video: false },
    { audio: false, video: VIDEO_CONSTRAINTS },
  ];
  /** @type {unknown} */
  let firstError = null;
  for (const c of attempts) {
    try {
      const stream = await md.getUserMedia(c);
      const microphone = stream.getAudioTracks()[0] || null;
      const camera = stream.getVideoTracks()[0] || null;
      return { microphone, camera, error: firstError ? missingText(microphone, camera, firstError) : '' };
    } catch (e) {
      firstError ??= e;
    }
  }
  return { microphone: null, camera: null, error: missingText(null, null, firstError) };
}

/** @param {MediaStreamTrack|null} microphone @param {MediaStreamTrack|null} camera @param {unknown} e */
function missingText(microphone, camera, e) {
  const missing = [!microphone && 'microphone', !camera && 'camera'].filter(Boolean);
  return `No ${missing.join(' or ')}: ${describeMediaError(e)}`;
}

/**
 * One device track (turning the microphone or camera back on). Throws an Error whose message is
 * for the user.
 * @param {Kind} kind @returns {Promise<MediaStreamTrack>}
 */
export async function deviceTrack(kind) {
  try {
    const stream = await navigator.mediaDevices.getUserMedia(
      kind === 'audio' ? { audio: AUDIO_CONSTRAINTS } : { video: VIDEO_CONSTRAINTS });
    return stream.getTracks()[0];
  } catch (e) {
    throw new Error(`Cannot use the ${kind === 'audio' ? 'microphone' : 'camera'}: ${describeMediaError(e)}`);
  }
}

/** A getUserMedia / getDisplayMedia failure in words. @param {unknown} e */
export function describeMediaError(e) {
  const err = /** @type {DOMException} */ (e);
  switch (err?.name) {
    case 'NotAllowedError': return 'permission was denied';
    case 'NotFoundError': return 'no such device was found';
    case 'NotReadableError': return 'the device is in use by another application';
    case 'OverconstrainedError': return 'the device does not support the requested format';
    case 'SecurityError': return 'the page is not a secure context';
    default: return err?.message || String(e);
  }
}
