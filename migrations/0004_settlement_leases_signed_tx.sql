-- Settlement robustness (issue 10): the signed transaction is stored before it is broadcast, rows are leased to
-- one worker at a time (several servers may share one PostgreSQL), an undecodable row is set aside instead of
-- stalling the outbox, and a row pending too long is reported once.
-- Only ADD COLUMN (both backends can; SQLite cannot change the existing CHECK on `state`, so being set aside is a
-- column, not a state: the row keeps its state and data for an operator to repair and release).

-- The signed endSession transaction (EIP-2718 envelope, 0x-prefixed hex), stored before the first broadcast and
-- rebroadcast as is on every retry; its hash is `tx_hash`, its nonce `tx_nonce`. NULL before signing, and for rows
-- submitted before this migration (those carry only `tx_hash`).
ALTER TABLE settlements ADD COLUMN raw_tx TEXT;
ALTER TABLE settlements ADD COLUMN tx_nonce BIGINT;

-- The worker that claimed the row and until when (a crashed worker's lease simply runs out).
ALTER TABLE settlements ADD COLUMN leased_by TEXT;
ALTER TABLE settlements ADD COLUMN lease_until TIMESTAMPTZ;

-- Set aside: the row could not be read into a settlement (corrupt value); the worker skips it until an operator
-- repairs it and sets set_aside_at back to NULL. set_aside_reason is the decoding error.
ALTER TABLE settlements ADD COLUMN set_aside_at TIMESTAMPTZ;
ALTER TABLE settlements ADD COLUMN set_aside_reason TEXT;

-- When the row was first reported (warning log) as open for longer than the worker's threshold: once per row.
ALTER TABLE settlements ADD COLUMN overdue_warned_at TIMESTAMPTZ;
