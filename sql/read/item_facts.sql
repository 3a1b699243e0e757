-- Each item's category and creation time (evaluation slices).
SELECT item_idx, category, to_unixtime(created_at) AS created_s FROM item_index
