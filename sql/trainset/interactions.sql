-- Per user, item and event type: how often and when last. Used for
-- exclusions ("already purchased") and by baselines.
SELECT
    e.user_id, i.item_idx, e.event_type,
    COUNT(*) AS events,
    MAX(e.ts) AS last_ts
FROM clean_events e
JOIN item_index i ON e.item_id = i.item_id
GROUP BY e.user_id, i.item_idx, e.event_type
ORDER BY e.user_id, i.item_idx, e.event_type
