-- Audit queries and retention pruning go by time.
CREATE INDEX ix_audit_events_occurred ON audit_events (occurred_at);
