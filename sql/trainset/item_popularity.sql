-- Distinct users per item since $popularity_start: the popularity baseline
-- and the cold-start fallback. Counted per (item, user) first and then per
-- item: two plain aggregations that spill, where COUNT(DISTINCT user_id)
-- keeps a set of users per item in memory.
WITH per_user AS (
    SELECT e.item_id, e.user_id, COUNT(*) AS events
    FROM clean_events e
    WHERE e.ts >= $popularity_start AND e.event_type <> 'search'
    GROUP BY e.item_id, e.user_id
),
per_item AS (
    SELECT item_id, COUNT(*) AS users, SUM(events) AS events
    FROM per_user
    GROUP BY item_id
)
SELECT i.item_idx, i.item_id, i.category, p.users, p.events
FROM item_index i
JOIN per_item p ON p.item_id = i.item_id
ORDER BY p.users DESC, p.events DESC, i.item_idx
