-- Paid sessions (LangDAO) and their settlement outbox (DESIGN.md sections 5 and 6).
-- Written for both PostgreSQL and SQLite: only types both accept, no server-side defaults; ids (UUID v7) and
-- timestamps are written by the application. Chain quantities that may exceed 64 bits (session ids, token
-- amounts in the token's smallest unit) are decimal TEXT.

-- A room's paid session: one student pays one tutor per second through the contract.
CREATE TABLE paid_sessions (
    id                UUID        NOT NULL PRIMARY KEY,
    room_id           TEXT        NOT NULL,
    -- the contract's session id (SessionStarted), decimal; NULL until known
    chain_session_id  TEXT,
    -- 0x-prefixed, checksummed addresses
    student_address   TEXT        NOT NULL,
    tutor_address     TEXT        NOT NULL,
    -- the contract's uint8 language id
    language_id       BIGINT      NOT NULL CHECK (language_id BETWEEN 0 AND 255),
    started_at        TIMESTAMPTZ NOT NULL,
    ended_at          TIMESTAMPTZ,
    end_reason        TEXT CHECK (end_reason IN ('participant_ended', 'disconnected', 'heartbeat_timeout', 'shutdown')),
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);

-- The contract allows one active session per tutor; so do we.
CREATE UNIQUE INDEX paid_sessions_one_open_per_tutor ON paid_sessions (tutor_address) WHERE ended_at IS NULL;
CREATE INDEX paid_sessions_room_id_idx ON paid_sessions (room_id);

-- The outbox: a row is written in the same transaction that ends the paid session; the settlement worker sends
-- endSession(tutor) and records the outcome here.
CREATE TABLE settlements (
    id                UUID        NOT NULL PRIMARY KEY,
    paid_session_id   UUID        NOT NULL UNIQUE REFERENCES paid_sessions (id),
    tutor_address     TEXT        NOT NULL,
    chain_session_id  TEXT,
    -- pending: nothing sent; submitted: tx_hash sent, outcome unknown; settled: our tx ended it;
    -- ended_elsewhere: the chain showed it already over; failed: permanent error or attempts used up
    state             TEXT        NOT NULL CHECK (state IN ('pending', 'submitted', 'settled', 'ended_elsewhere', 'failed')),
    -- consecutive failed attempts
    attempts          BIGINT      NOT NULL,
    next_attempt_at   TIMESTAMPTZ NOT NULL,
    last_error        TEXT,
    tx_hash           TEXT,
    block_number      BIGINT,
    gas_used          BIGINT,
    -- effective gas price, wei, decimal
    gas_price_wei     TEXT,
    -- billed seconds and token units paid, from SessionEnded (or the contract's record when ended elsewhere)
    duration_s        BIGINT,
    total_paid        TEXT,
    -- when the contract recorded the end, unix seconds (block timestamp)
    chain_ended_at    BIGINT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ
);

-- The worker's query: `WHERE state IN ('pending', 'submitted') AND next_attempt_at <= $1 ORDER BY next_attempt_at`.
CREATE INDEX settlements_due_idx ON settlements (state, next_attempt_at);
