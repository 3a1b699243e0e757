-- The clean catalog: one row per item_id. Stock status defaults to in stock
-- when the catalog does not say.
SELECT
    item_id, title, description, category, brand, price,
    COALESCE(in_stock, TRUE) AS in_stock,
    created_at, image_embedding
FROM items_checked
WHERE reason IS NULL
