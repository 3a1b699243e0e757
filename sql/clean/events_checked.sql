-- Every raw event row (table events_ruled) with the first cleaning rule it
-- breaks (reason NULL = clean): the row-level reasons of events_ruled, then
-- bot for the rows of users whose clean events exceed either limit.
--
-- Parameters:
--   $bot_per_minute, $bot_per_day  a user above either limit is a bot
WITH per_minute AS (
    SELECT user_id, date_trunc('minute', ts) AS minute, COUNT(*) AS events
    FROM events_ruled
    WHERE reason IS NULL
    GROUP BY user_id, date_trunc('minute', ts)
),
-- Days from the minutes, so that events_ruled is scanned once.
per_day AS (
    SELECT user_id, date_trunc('day', minute) AS day, MAX(events) AS busiest_minute, SUM(events) AS events
    FROM per_minute
    GROUP BY user_id, date_trunc('day', minute)
),
bots AS (
    SELECT user_id
    FROM per_day
    GROUP BY user_id
    HAVING MAX(busiest_minute) > $bot_per_minute OR MAX(events) > $bot_per_day
)
SELECT
    d.source, d.position, d.raw, d.event_id, d.user_id, d.item_id, d.event_type, d.ts,
    d.session_id, d.query, d.rating, d.quantity, d.price,
    CASE WHEN d.reason IS NULL AND b.user_id IS NOT NULL THEN 'bot' ELSE d.reason END AS reason
-- The bot list is written first so that it is the hash join's build side.
FROM bots b
RIGHT JOIN events_ruled d ON d.user_id = b.user_id
