-- One row per step of each user's chronological item sequence. Searches
-- are left out; consecutive events on the same item (view, cart,
-- purchase) collapse into one step that keeps the strongest event type and
-- its weight (table event_weights). Only the most recent $max_length steps
-- are kept. The last $test_steps steps are held out for test and the
-- $valid_steps before them for validation; every user keeps at least one
-- training step, so short histories give up their holdouts first.
--
-- `basket` numbers the user's sessions (1 = the oldest; a step belongs to
-- the session of its first event). With $repeat (`--repeat-purchases`)
-- the test holdout is the user's whole last session, the next basket,
-- instead of the last $test_steps steps (users with a single session hold
-- out no test basket), and steps never collapse across sessions: an item
-- bought in two baskets in a row is two steps.
WITH ev AS (
    SELECT
        e.user_id, i.item_idx, e.event_type, e.ts, w.weight,
        CASE
            WHEN LAG(i.item_idx) OVER w IS DISTINCT FROM i.item_idx THEN 1
            WHEN $repeat AND LAG(e.session_id) OVER w IS DISTINCT FROM e.session_id THEN 1
            ELSE 0
        END AS new_run,
        CASE WHEN LAG(e.session_id) OVER w IS DISTINCT FROM e.session_id THEN 1 ELSE 0 END AS new_basket
    FROM clean_events e
    JOIN item_index i ON e.item_id = i.item_id
    JOIN event_weights w ON e.event_type = w.event_type
    WHERE e.event_type <> 'search'
    WINDOW w AS (PARTITION BY e.user_id ORDER BY e.ts, i.item_idx, e.event_type)
),
runs AS (
    SELECT
        ev.*,
        SUM(new_run) OVER (
            PARTITION BY user_id ORDER BY ts, item_idx, event_type
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS run,
        SUM(new_basket) OVER (
            PARTITION BY user_id ORDER BY ts, item_idx, event_type
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS basket
    FROM ev
),
collapsed AS (
    SELECT
        user_id, run,
        MIN(item_idx) AS item_idx,
        MIN(ts) AS ts,
        MAX(weight) AS weight,
        first_value(event_type ORDER BY weight DESC, event_type) AS event_type,
        MIN(basket) AS basket
    FROM runs
    GROUP BY user_id, run
),
numbered AS (
    SELECT collapsed.*, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY run DESC) AS from_end
    FROM collapsed
),
kept AS (
    SELECT
        numbered.*,
        COUNT(*) OVER (PARTITION BY user_id) AS n,
        MAX(basket) OVER (PARTITION BY user_id) AS last_basket
    FROM numbered
    WHERE from_end <= $max_length
),
held AS (
    SELECT
        kept.*,
        CASE
            WHEN NOT $repeat THEN LEAST($test_steps, n - 1)
            WHEN SUM(CASE WHEN basket = last_basket THEN 1 ELSE 0 END) OVER (PARTITION BY user_id) < n
                THEN SUM(CASE WHEN basket = last_basket THEN 1 ELSE 0 END) OVER (PARTITION BY user_id)
            ELSE 0
        END AS test_n
    FROM kept
)
SELECT
    user_id,
    CAST(n - from_end + 1 AS INT) AS step,
    item_idx,
    event_type,
    weight,
    ts,
    CAST(basket AS INT) AS basket,
    CASE
        WHEN from_end <= test_n THEN 'test'
        WHEN from_end <= LEAST(test_n + $valid_steps, n - 1) THEN 'valid'
        ELSE 'train'
    END AS split
FROM held
ORDER BY user_id, step
