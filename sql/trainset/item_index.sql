-- Dense item indices for the model; 0 is reserved for padding.
SELECT
    CAST(ROW_NUMBER() OVER (ORDER BY item_id) AS INT) AS item_idx,
    item_id, title, description, category, brand, price, in_stock, created_at, image_embedding
FROM items
