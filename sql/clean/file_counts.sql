-- Per input file: rows read (counted on the raw table itself), and how
-- many of them came out clean or quarantined. read = clean + quarantined
-- must hold for every file.
WITH raw AS (
    SELECT _source AS source, COUNT(*) AS rows_read FROM raw_events GROUP BY _source
    UNION ALL
    SELECT _source AS source, COUNT(*) AS rows_read FROM raw_items GROUP BY _source
    UNION ALL
    SELECT _source AS source, COUNT(*) AS rows_read FROM raw_users GROUP BY _source
),
outcome AS (
    SELECT source, reason FROM events_checked
    UNION ALL
    SELECT source, reason FROM items_checked
    UNION ALL
    SELECT source, reason FROM users_checked
),
counted AS (
    SELECT
        source,
        COUNT(*) FILTER (WHERE reason IS NULL) AS clean,
        COUNT(*) FILTER (WHERE reason IS NOT NULL) AS quarantined
    FROM outcome
    GROUP BY source
)
SELECT
    r.source,
    r.rows_read,
    COALESCE(c.clean, 0) AS clean,
    COALESCE(c.quarantined, 0) AS quarantined
FROM raw r
LEFT JOIN counted c ON r.source = c.source
ORDER BY r.source
