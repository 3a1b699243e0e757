"""A repeat-heavy grocery log with known structure, in nightrec's input
contract, for `make bench-repeat` (next-basket evaluation).

Each user belongs to one of GROUPS taste groups (a group prefers a few
aisles and has its own item preferences on top of a Zipf-like shop-wide
popularity) and has personal staples, each bought with its own
probability in every basket. Over time a staple is sometimes dropped for a
new one (recent baskets say more than old ones); every basket also holds a
few items tried from the group's preferences (other users of the group
predict them); an item tried is often followed by its fixed "follow-up"
item of the same aisle in the next basket (the sequential signal). Baskets
come at a per-user cadence; each basket is one order: purchase events with
the order's id as session_id, all at the order's time.

usage: grocery_gen.py OUTPUT_DIR [--users N] [--items N] [--seed S] [--end YYYY-MM-DD]
                        [--staples M] [--tried M] [--follow P]
"""

import argparse
import csv
import datetime as dt
import json
import os

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--users", type=int, default=3000)
p.add_argument("--items", type=int, default=3000)
p.add_argument("--seed", type=int, default=7)
p.add_argument("--end", default="2026-11-21")
p.add_argument("--days", type=int, default=300)
p.add_argument("--staples", type=float, default=7, help="mean personal staples beyond 3")
p.add_argument("--tried", type=float, default=2, help="mean items tried per basket")
p.add_argument("--follow", type=float, default=0.35, help="chance a tried item's follow-up comes next basket")
a = p.parse_args()

GROUPS, AISLES = 15, 30
rng = np.random.default_rng(a.seed)
n_items = a.items
aisle = rng.integers(0, AISLES, n_items)
shop = (1 + rng.permutation(n_items)) ** -0.8
group_pref = []
for g in range(GROUPS):
    liked = rng.choice(AISLES, 5, replace=False)
    w = shop * np.where(np.isin(aisle, liked), 6.0, 1.0) * rng.lognormal(0, 1.0, n_items)
    group_pref.append(w / w.sum())
# Each item's follow-up: another item of its aisle.
follow = np.empty(n_items, dtype=int)
for i in range(n_items):
    same = np.flatnonzero(aisle == aisle[i])
    follow[i] = rng.choice(same[same != i]) if len(same) > 1 else i

end = dt.datetime.fromisoformat(a.end) + dt.timedelta(hours=20)
os.makedirs(f"{a.out}/events", exist_ok=True)
os.makedirs(f"{a.out}/items", exist_ok=True)
os.makedirs(f"{a.out}/users", exist_ok=True)
events = 0
with open(f"{a.out}/events/orders.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["event_id", "user_id", "item_id", "event_type", "ts", "session_id", "quantity"])
    for u in range(a.users):
        pref = group_pref[rng.integers(GROUPS)]
        n_staples = 3 + rng.poisson(a.staples)
        staples = list(rng.choice(n_items, n_staples, replace=False, p=pref))
        q = list(rng.uniform(0.15, 0.9, n_staples))
        n_baskets = min(2 + rng.geometric(1 / 10), 60)
        cadence = rng.uniform(3, 14)
        t = end - dt.timedelta(days=float(rng.uniform(0, 3)))
        times = []
        for _ in range(n_baskets):
            times.append(t)
            t -= dt.timedelta(days=float(cadence * rng.uniform(0.5, 1.5)))
        times = [x for x in reversed(times) if x > end - dt.timedelta(days=a.days)]
        pending = set()
        for b, when in enumerate(times):
            basket = {s for s, qq in zip(staples, q) if rng.random() < qq}
            tried = set(rng.choice(n_items, rng.poisson(a.tried), p=pref))
            basket |= tried | pending
            if not basket:
                basket = {staples[int(np.argmax(q))]}
            pending = {follow[i] for i in tried if rng.random() < a.follow}
            if rng.random() < 0.1:
                k = rng.integers(len(staples))
                staples[k] = rng.choice(n_items, p=pref)
                q[k] = rng.uniform(0.15, 0.9)
            ms = int(when.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
            for i in sorted(basket):
                w.writerow([f"o{u}-{b}-{i}", f"u{u}", f"i{i}", "purchase", ms, f"o{u}-{b}", 1])
                events += 1

with open(f"{a.out}/items/items.jsonl", "w") as f:
    for i in range(n_items):
        f.write(json.dumps({
            "item_id": f"i{i}",
            "title": f"Product {i} of aisle {aisle[i]}",
            "category": f"Grocery > Aisle {aisle[i]}",
            "in_stock": True,
        }) + "\n")
with open(f"{a.out}/users/users.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["user_id"])
    for u in range(a.users):
        w.writerow([f"u{u}"])
print(f"grocery: {events} purchase events of {a.users} users, {n_items} items -> {a.out}")
