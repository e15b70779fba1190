-- Issue 9, ingest cost: the foreign key from deliveries to events checked every new delivery
-- with a query of its own (a trigger) and locked the event row it had just inserted, one more
-- WAL record per delivery. Only this relay writes these tables: a delivery is inserted by the
-- same statement as its event, and an event is deleted only once it has no deliveries left
-- (`prune`), so the key guarded nothing that can happen, and its ON DELETE CASCADE never ran.
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_event_id_fkey;

-- `events_received` serves only `prune` (old events by time). Events arrive in time order, so
-- a BRIN index (one summary per range of pages) finds them as well, and an insert rarely
-- writes to it, where the b-tree took one more leaf write and WAL record per event.
DROP INDEX IF EXISTS events_received;
CREATE INDEX events_received ON events USING brin (received_at);
