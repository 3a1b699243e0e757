-- Every raw catalog row, normalised, with the rule it breaks (reason NULL =
-- clean): malformed (unparsable record, or a price, stock flag or creation
-- time that does not parse), missing_id, duplicate. A repeated item_id
-- keeps its last version (latest file, last row): catalog exports are
-- updated in place. `raw` is the record as read (unparsable ones) or every
-- column of the row as a JSON object of text, so that a quarantined row can
-- be replayed whole, description and image embedding included.
WITH norm AS (
    SELECT
        _source AS source,
        _position AS position,
        COALESCE(_malformed,
                 json_object('item_id', item_id, 'title', title, 'description', description,
                             'category', category, 'brand', brand, 'price', price, 'in_stock', in_stock,
                             'created_at', created_at, 'image_embedding', image_embedding)) AS raw,
        _malformed IS NOT NULL
            OR (NULLIF(TRIM(price), '') IS NOT NULL AND TRY_CAST(TRIM(price) AS DOUBLE) IS NULL)
            OR (NULLIF(TRIM(in_stock), '') IS NOT NULL
                AND LOWER(TRIM(in_stock)) NOT IN ('true', 'false', '1', '0', 'yes', 'no'))
            OR (NULLIF(TRIM(created_at), '') IS NOT NULL AND TRY_CAST(TRIM(created_at) AS TIMESTAMP) IS NULL)
            AS malformed,
        NULLIF(TRIM(item_id), '') AS item_id,
        NULLIF(TRIM(title), '') AS title,
        NULLIF(TRIM(description), '') AS description,
        NULLIF(TRIM(category), '') AS category,
        NULLIF(TRIM(brand), '') AS brand,
        TRY_CAST(NULLIF(TRIM(price), '') AS DOUBLE) AS price,
        CASE LOWER(TRIM(in_stock))
            WHEN 'true' THEN TRUE WHEN '1' THEN TRUE WHEN 'yes' THEN TRUE
            WHEN 'false' THEN FALSE WHEN '0' THEN FALSE WHEN 'no' THEN FALSE
        END AS in_stock,
        TRY_CAST(NULLIF(TRIM(created_at), '') AS TIMESTAMP) AS created_at,
        -- A JSON array of numbers as text; the text stage parses and checks it.
        NULLIF(TRIM(image_embedding), '') AS image_embedding
    FROM raw_items
),
ranked AS (
    SELECT
        norm.*,
        ROW_NUMBER() OVER (
            PARTITION BY malformed OR item_id IS NULL, item_id
            ORDER BY source DESC, position DESC
        ) AS copy_no
    FROM norm
)
SELECT
    source, position, raw, item_id, title, description, category, brand, price, in_stock, created_at,
    image_embedding,
    CASE
        WHEN malformed THEN 'malformed'
        WHEN item_id IS NULL THEN 'missing_id'
        WHEN copy_no > 1 THEN 'duplicate'
    END AS reason
FROM ranked
