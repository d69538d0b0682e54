-- How each Defender captures what its application does (Hello and heartbeats): "exact"
-- (seccomp user notification) or "polling", why, and what it knows it missed.
ALTER TABLE defenders ADD COLUMN capture_mode TEXT NOT NULL DEFAULT '';
ALTER TABLE defenders ADD COLUMN capture_detail TEXT NOT NULL DEFAULT '';
ALTER TABLE defenders ADD COLUMN capture_error TEXT NOT NULL DEFAULT '';
ALTER TABLE defenders ADD COLUMN capture_poll_interval_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE defenders ADD COLUMN capture_intercepted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE defenders ADD COLUMN capture_timed_out INTEGER NOT NULL DEFAULT 0;
ALTER TABLE defenders ADD COLUMN capture_missed INTEGER NOT NULL DEFAULT 0;
