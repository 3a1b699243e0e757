-- Day-over-day stability of user_candidates against previous_candidates
-- (the latest earlier published date), one row: users in both, and the
-- mean share of a user's items today that were in their list before.
WITH cur AS (SELECT DISTINCT user_id, item_id FROM user_candidates),
prev AS (SELECT DISTINCT user_id, item_id FROM previous_candidates),
both_users AS (SELECT DISTINCT user_id FROM prev),
per_user AS (
    SELECT c.user_id,
           CAST(COUNT(p.item_id) AS DOUBLE) / COUNT(*) AS kept
    FROM cur c
    JOIN both_users b ON c.user_id = b.user_id
    LEFT JOIN prev p ON c.user_id = p.user_id AND c.item_id = p.item_id
    GROUP BY c.user_id
)
SELECT COUNT(*) AS users, COALESCE(AVG(kept), 1.0) AS overlap
FROM per_user
