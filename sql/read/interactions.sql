-- Per user and item: events of each type (candidates inputs).
SELECT user_id, item_idx, event_type, events FROM interactions
