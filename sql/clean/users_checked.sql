-- Every raw user row with the rule it breaks (reason NULL = clean).
WITH norm AS (
    SELECT
        _source AS source,
        _position AS position,
        concat_ws('|', COALESCE(user_id, ''), COALESCE(signup_ts, '')) AS raw,
        NULLIF(TRIM(user_id), '') AS user_id,
        TRY_CAST(signup_ts AS TIMESTAMP) AS signup_ts
    FROM raw_users
),
ranked AS (
    SELECT
        norm.*,
        ROW_NUMBER() OVER (
            PARTITION BY user_id IS NULL, user_id
            ORDER BY source DESC, position DESC
        ) AS copy_no
    FROM norm
)
SELECT
    source, position, raw, user_id, signup_ts,
    CASE
        WHEN user_id IS NULL THEN 'missing_id'
        WHEN copy_no > 1 THEN 'duplicate'
    END AS reason
FROM ranked
