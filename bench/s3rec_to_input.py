"""An S3Rec-format log (one user a line: `user_id item_id item_id ...`,
oldest item first, no timestamps, no item text; e.g.
../shared/data/amazon-toys-and-games.txt.gz) → nightrec's input contract,
so that nightrec and bench/sasrec_ref.py read the same sequences.

Every (user, item) of a line becomes a `purchase` event (a review is a
purchase in these logs). The files carry order, not time: a user's events
are one hour apart, the last at 23:00 UTC of the run date minus the user's
line number in seconds, so each user's order is kept, every event lies
inside a 30-day window ending at the run date, and no two events of a user
share a timestamp. Items become catalogue rows with an id only (no title,
category or description: every text embedding is zero, as in the logs
issue 25 describes); users become users/ rows. Standard library only.

usage: s3rec_to_input.py S3REC_FILE OUTPUT_DIR [RUN_DATE (default 2026-11-21)]
"""

import csv
import datetime as dt
import gzip
import json
import os
import sys

src, out = sys.argv[1], sys.argv[2]
run_date = dt.date.fromisoformat(sys.argv[3] if len(sys.argv) > 3 else "2026-11-21")
end = dt.datetime(run_date.year, run_date.month, run_date.day, 23, tzinfo=dt.timezone.utc)
end_ms = int(end.timestamp() * 1000)
HOUR_MS = 3_600_000
WINDOW_HOURS = 29 * 24

opener = gzip.open if src.endswith(".gz") else open
for d in ("events", "items", "users"):
    os.makedirs(f"{out}/{d}", exist_ok=True)
items, users, longest = set(), [], 0
with opener(src, "rt") as f, open(f"{out}/events/events.csv", "w", newline="") as ev:
    w = csv.writer(ev)
    w.writerow(["event_id", "user_id", "item_id", "event_type", "ts"])
    for line_no, line in enumerate(f):
        parts = line.split()
        if len(parts) < 2:
            continue
        user, seq = parts[0], parts[1:]
        longest = max(longest, len(seq))
        if len(seq) > WINDOW_HOURS:
            sys.exit(f"user {user} has {len(seq)} events: more than one an hour fits in the window")
        last = end_ms - (line_no % 3600) * 1000
        for i, item in enumerate(seq):
            ts = last - (len(seq) - 1 - i) * HOUR_MS
            w.writerow([f"e{user}-{i}", user, item, "purchase", ts])
        users.append(user)
        items.update(seq)

with open(f"{out}/items/items.jsonl", "w") as f:
    for item in sorted(items, key=lambda t: (len(t), t)):
        f.write(json.dumps({"item_id": item, "in_stock": True}) + "\n")
with open(f"{out}/users/users.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["user_id"])
    for u in users:
        w.writerow([u])
print(json.dumps({"users": len(users), "items": len(items), "longest": longest, "run_date": str(run_date)}))
