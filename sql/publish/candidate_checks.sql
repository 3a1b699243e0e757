-- Publish gate for user_candidates: one row per check with the number of
-- violations (all must be 0). Parameter: $k. Table excluded_event_types
-- lists the event types whose items must not be recommended again.
WITH per_user AS (
    SELECT user_id, COUNT(*) AS n, MIN(rank) AS min_rank, MAX(rank) AS max_rank,
           COUNT(DISTINCT item_id) AS items
    FROM user_candidates
    GROUP BY user_id
),
ordered AS (
    SELECT user_id, score,
           LAG(score) OVER (PARTITION BY user_id ORDER BY rank) AS prev_score
    FROM user_candidates
),
excluded AS (
    SELECT DISTINCT x.user_id, i.item_id
    FROM interactions x
    JOIN excluded_event_types t ON x.event_type = t.event_type
    JOIN item_index i ON x.item_idx = i.item_idx
),
eligible AS (
    SELECT u.user_id,
           (SELECT COUNT(*) FROM item_index WHERE in_stock) - COUNT(i.item_id) AS n
    FROM user_embeddings u
    LEFT JOIN excluded e ON u.user_id = e.user_id
    LEFT JOIN item_index i ON e.item_id = i.item_id AND i.in_stock
    GROUP BY u.user_id
)
SELECT 'ranks_not_1_to_n' AS "check", COUNT(*) AS violations
FROM per_user WHERE min_rank <> 1 OR max_rank <> n
UNION ALL
SELECT 'duplicate_items', COUNT(*) FROM per_user WHERE items <> n
UNION ALL
SELECT 'score_increases_with_rank', COUNT(*) FROM ordered WHERE prev_score < score
UNION ALL
SELECT 'excluded_item_recommended', COUNT(*)
FROM user_candidates c JOIN excluded e ON c.user_id = e.user_id AND c.item_id = e.item_id
UNION ALL
SELECT 'out_of_stock_recommended', COUNT(*)
FROM user_candidates c JOIN item_index i ON c.item_id = i.item_id WHERE NOT i.in_stock
UNION ALL
SELECT 'warm_user_short_of_k', COUNT(*)
FROM eligible e LEFT JOIN per_user p ON e.user_id = p.user_id
WHERE COALESCE(p.n, 0) < $k AND COALESCE(p.n, 0) < e.n
