-- Each plugin whose sends cause events has a share of the outbound webhook queue: a delivery names
-- the plugin that caused it (NULL: the engine or the host), counted per cause among pending rows
-- (plugbox/webhooks/store.py).
ALTER TABLE webhook_deliveries ADD COLUMN cause TEXT;
CREATE INDEX webhook_deliveries_cause ON webhook_deliveries (cause, state);
