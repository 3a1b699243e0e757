-- Each step with its basket, whether it was a purchase, its time in seconds and whether it is held out (next-basket histories).
SELECT user_id, step, item_idx, basket, event_type = 'purchase' AS purchase,
       to_unixtime(ts) AS ts_s, split = 'test' AS test
FROM steps
