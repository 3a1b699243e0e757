-- Every raw user row with the rule it breaks (reason NULL = clean):
-- malformed (unparsable record or signup time), missing_id, duplicate (the
-- last version of a user wins).
WITH norm AS (
    SELECT
        _source AS source,
        _position AS position,
        COALESCE(_malformed, concat_ws('|', COALESCE(user_id, ''), COALESCE(signup_ts, ''))) AS raw,
        _malformed IS NOT NULL
            OR (NULLIF(TRIM(signup_ts), '') IS NOT NULL AND TRY_CAST(TRIM(signup_ts) AS TIMESTAMP) IS NULL)
            AS malformed,
        NULLIF(TRIM(user_id), '') AS user_id,
        TRY_CAST(NULLIF(TRIM(signup_ts), '') AS TIMESTAMP) AS signup_ts
    FROM raw_users
),
ranked AS (
    SELECT
        norm.*,
        ROW_NUMBER() OVER (
            PARTITION BY malformed OR user_id IS NULL, user_id
            ORDER BY source DESC, position DESC
        ) AS copy_no
    FROM norm
)
SELECT
    source, position, raw, user_id, signup_ts,
    CASE
        WHEN malformed THEN 'malformed'
        WHEN user_id IS NULL THEN 'missing_id'
        WHEN copy_no > 1 THEN 'duplicate'
    END AS reason
FROM ranked
