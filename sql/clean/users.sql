-- Known users: those in users/ plus everyone with a clean event.
SELECT user_id, MIN(signup_ts) AS signup_ts
FROM (
    SELECT user_id, signup_ts FROM users_checked WHERE reason IS NULL
    UNION ALL
    SELECT DISTINCT user_id, CAST(NULL AS TIMESTAMP) AS signup_ts FROM events_checked WHERE reason IS NULL
) u
GROUP BY user_id
