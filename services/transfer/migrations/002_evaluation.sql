-- When each order's catch-up pass last completed (NULL: never; a new order is caught up at once).
ALTER TABLE orders ADD COLUMN caught_up_at timestamptz;
-- Transfers whose next hop is a via peer that holds the file: the via peer was asked to send it on.
CREATE INDEX transfers_forwarded ON transfers (forwarded_at) WHERE forwarded_at IS NOT NULL AND delivered_at IS NULL;
