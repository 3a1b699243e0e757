-- Item index to item id (candidates).
SELECT item_idx, item_id FROM item_index
