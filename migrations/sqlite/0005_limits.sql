-- Issue 13 part A (limits, clock steps): how long a session's stream had been open at its last
-- heartbeat, measured on the Console's monotonic clock. "Connected for" is derived from it, so a
-- step of the host's wall clock cannot make the duration wrong for longer than one heartbeat
-- interval. NULL for sessions written before this migration (then started_at is used).
ALTER TABLE sessions ADD COLUMN alive_ms INTEGER;
