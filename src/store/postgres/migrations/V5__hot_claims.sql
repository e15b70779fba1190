-- Issue 9, replicas: a claim writes only `claimed_by` and `lease_until`. With no index on
-- either, PostgreSQL can make it a HOT update (the new row version on the same page, no new
-- index entries), which is most of what a claim cost: measured, a claim wrote 6.6 WAL records
-- per delivery and left dead entries at the head of `deliveries_due` for the next claims to
-- step over. A replica now finds its own leases by primary key (it keeps their ids), and
-- `next_due` reads the leased rows through `deliveries_due`. Pages keep a fifth free for those
-- new versions (existing pages take it as they are rewritten).
DROP INDEX IF EXISTS deliveries_claimed;
ALTER TABLE deliveries SET (fillfactor = 80);
