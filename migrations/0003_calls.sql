-- 1:1 call records (DESIGN.md section 5): who called whom, when, how long, how it ended.
-- (0002 is left to the settlement tables.) Same rules as 0001: types both backends accept,
-- ids (UUID v7) and timestamps written by the application.
CREATE TABLE calls (
    id          UUID        NOT NULL PRIMARY KEY,
    room_id     TEXT        NOT NULL,
    caller_id   TEXT        NOT NULL,
    callee_id   TEXT        NOT NULL,
    status      TEXT        NOT NULL
                CHECK (status IN ('pending', 'ringing', 'ongoing', 'ended', 'rejected', 'missed')),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    -- set when the call becomes ongoing
    answered_at TIMESTAMPTZ,
    -- set when the call reaches ended, rejected or missed
    ended_at    TIMESTAMPTZ,
    -- free text from the server: 'hangup', 'timeout', 'network', …
    end_reason  TEXT
);

CREATE INDEX calls_caller_id_idx ON calls (caller_id, id);
CREATE INDEX calls_callee_id_idx ON calls (callee_id, id);
CREATE INDEX calls_room_id_idx ON calls (room_id, id);
