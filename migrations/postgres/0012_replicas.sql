-- Issue 16: Console replicas sharing one database forward each webhook once. The replica that
-- holds a webhook's lease (`lease_holder`, until `lease_until`, unix ms) delivers it and moves
-- its cursors; the others wait until the lease lapses (the holder stopped) and take it over.
ALTER TABLE webhook_cursor ADD COLUMN lease_holder TEXT;
ALTER TABLE webhook_cursor ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
