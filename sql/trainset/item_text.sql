-- The text the item encoder reads: title, category path, brand, description.
SELECT
    item_idx, item_id,
    concat_ws(' . ', title, category, brand, description) AS text
FROM item_index
ORDER BY item_idx
