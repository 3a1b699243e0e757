-- Per input file: rows its reader produced (counted by the reader itself,
-- table files_read), and how many of them came out clean or quarantined.
-- read = clean + quarantined must hold for every file.
WITH outcome AS (
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
    r.dataset,
    r.rows_read,
    r.unreadable,
    COALESCE(c.clean, 0) AS clean,
    COALESCE(c.quarantined, 0) AS quarantined
FROM files_read r
LEFT JOIN counted c ON r.source = c.source
ORDER BY r.source
