-- Distinct users per item since $popularity_start: the popularity baseline
-- and the cold-start fallback.
SELECT
    i.item_idx, i.item_id, i.category,
    COUNT(DISTINCT e.user_id) AS users,
    COUNT(*) AS events
FROM clean_events e
JOIN item_index i ON e.item_id = i.item_id
WHERE e.ts >= $popularity_start AND e.event_type <> 'search'
GROUP BY i.item_idx, i.item_id, i.category
ORDER BY users DESC, events DESC, i.item_idx
