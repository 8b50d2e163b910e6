-- Several hosts on one database: a host claims the queued deliveries it attempts, so no other host
-- attempts them at the same time (plugbox/webhooks/store.py, plugbox/ingress/store.py). A claim names
-- the claiming host's queue (claimed_by) and lasts until claimed_until (epoch seconds) unless renewed;
-- an expired claim (its host died) is no claim. Unclaimed rows keep both NULL.
ALTER TABLE webhook_deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN claimed_until REAL;
ALTER TABLE ingress_deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE ingress_deliveries ADD COLUMN claimed_until REAL;
