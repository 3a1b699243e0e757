-- Each item's text, by item (text stage).
SELECT item_idx, item_id, text FROM item_text ORDER BY item_idx
