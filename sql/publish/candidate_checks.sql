-- Publish gate for user_candidates: one row per check with the number of
-- violations (all must be 0). Parameter: $k. Table excluded_event_types
-- lists the event types whose items must not be recommended again.
--
-- Written to run in a bounded memory pool however many candidate rows
-- there are (100 million at a million users): user_candidates only ever
-- streams into aggregates and sorts, which spill, and every hash join
-- builds on its small side (written first: the catalog, the excluded
-- pairs, the users), never on the candidates.
WITH per_user AS (
    SELECT user_id, COUNT(*) AS n, MIN(rank) AS min_rank, MAX(rank) AS max_rank
    FROM user_candidates
    GROUP BY user_id
),
repeated AS (
    SELECT user_id
    FROM user_candidates
    GROUP BY user_id, item_id
    HAVING COUNT(*) > 1
),
ordered AS (
    SELECT score,
           LAG(score) OVER (PARTITION BY user_id ORDER BY rank) AS prev_score
    FROM user_candidates
),
excluded AS (
    SELECT DISTINCT x.user_id, i.item_id, i.in_stock
    FROM item_index i
    JOIN (excluded_event_types t JOIN interactions x ON x.event_type = t.event_type)
        ON x.item_idx = i.item_idx
),
eligible AS (
    SELECT u.user_id,
           (SELECT COUNT(*) FROM item_index WHERE in_stock)
               - COUNT(e.item_id) FILTER (WHERE e.in_stock) AS n
    FROM excluded e
    RIGHT JOIN user_embeddings u ON u.user_id = e.user_id
    GROUP BY u.user_id
)
SELECT 'ranks_not_1_to_n' AS "check", COUNT(*) AS violations
FROM per_user WHERE min_rank <> 1 OR max_rank <> n
UNION ALL
SELECT 'duplicate_items', COUNT(DISTINCT user_id) FROM repeated
UNION ALL
SELECT 'score_increases_with_rank', COUNT(*) FROM ordered WHERE prev_score < score
UNION ALL
SELECT 'excluded_item_recommended', COUNT(*)
FROM excluded e JOIN user_candidates c ON c.user_id = e.user_id AND c.item_id = e.item_id
UNION ALL
SELECT 'out_of_stock_recommended', COUNT(*)
FROM item_index i JOIN user_candidates c ON c.item_id = i.item_id WHERE NOT i.in_stock
UNION ALL
SELECT 'warm_user_short_of_k', COUNT(*)
FROM eligible e LEFT JOIN per_user p ON e.user_id = p.user_id
WHERE COALESCE(p.n, 0) < $k AND COALESCE(p.n, 0) < e.n
