-- Stock and category of each item, by item (candidates).
SELECT item_idx, in_stock, category FROM item_index ORDER BY item_idx
