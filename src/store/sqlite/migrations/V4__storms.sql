-- Issue 10, storm control. `urgency` is set by the storm planner (NULL: not planned yet; its
-- claims order by next_at, which the planner moves earlier for urgent alerts, see
-- delivery::storm::rank_next_at). A delivery whose message another one carries (a newer
-- event of the same alert, or a digest) is state 'folded' with `folded_into` that delivery.
-- `alert_json` keeps the alert as fetched once, for every target, retry and restart.
ALTER TABLE deliveries ADD COLUMN urgency INTEGER;
ALTER TABLE deliveries ADD COLUMN folded_into INTEGER;
ALTER TABLE events ADD COLUMN alert_json TEXT;
CREATE INDEX deliveries_folded ON deliveries (folded_into) WHERE folded_into IS NOT NULL;
