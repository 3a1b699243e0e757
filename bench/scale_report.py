"""Turn bench/scale.sh's run summaries into bench/results/scale.md.

usage: scale_report.py OUT "S M L" "command"
Per size and night: every stage's wall time, CPU time, peak RSS and rows
(from nightrec's run summary), the whole process's wall/CPU/peak RSS
(/usr/bin/time), and the growth exponent of each stage's wall time and
RSS from the smallest to the largest size (time ~ events^exponent).
"""
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys

out, sizes, command = sys.argv[1], sys.argv[2].split(), sys.argv[3]
STAGE = re.compile(r"^(\w+)\s+(ran|skipped)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(.*)$")


def summary(path):
    stages, facts, current = {}, {}, None
    for line in open(path):
        m = STAGE.match(line.rstrip("\n"))
        if m:
            name, status, wall, cpu, rss, tables = m.groups()
            rows = sum(int(n) for n in re.findall(r"\((\d+)\)", tables))
            current = name
            stages[name] = {"ran": status == "ran", "wall": float(wall), "cpu": float(cpu), "rss": float(rss), "rows": rows}
        elif current and line.startswith(" ") and ":" in line:
            k, v = line.strip().split(":", 1)
            facts.setdefault(current, {})[k.strip()] = v.strip()
    return stages, facts


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0) / 1024 / 1024
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


runs = {}
for s in sizes:
    info = json.load(open(f"{out}/{s}/size.json"))
    for night in (1, 2):
        if not os.path.exists(f"{out}/{s}/night{night}.time.json"):
            continue  # not run (or stopped before it finished): reported as missing
        st, facts = summary(f"{out}/{s}/night{night}.summary")
        t = json.load(open(f"{out}/{s}/night{night}.time.json"))
        runs[(s, night)] = (info, st, facts, t)
missing = [f"{s} night {n}" for s in sizes for n in (1, 2) if (s, n) not in runs]

print("# Scale benchmark: two nights per size\n")
commits = {s: runs[(s, 1)][0].get("commit", commit()) for s in sizes}
if len(set(commits.values())) == 1:
    print(f"- date: {datetime.date.today()}, commit {next(iter(commits.values()))}")
else:
    print(f"- date: {datetime.date.today()}; commits: " + ", ".join(f"{s} at {c}" for s, c in commits.items())
          + " (sizes run in different sessions; see the notes below for what changed between them)")
print(f"- machine: {machine()}; no GPU")
print(f"- command: `{command}` (bench/scale.sh; data from `nightrec gen --seed 1`, 31 days)")
print(f"- threads: {runs[(sizes[0], 1)][0]['threads']} (`run.threads`, every pool)\n")
if missing:
    print(f"**Not measured: {', '.join(missing)}.**\n")
print("Night 1: `run --date D` from scratch. Night 2: `run --date D+1` with one more day of data, warm-started.\n")
print("A stage's peak RSS is the process's resident high-water mark during that stage (reset when it starts),")
print("so it includes what earlier stages of the same process still hold; the whole process's peak is given per night.\n")
stages = ["clean", "trainset", "text", "train", "embed", "candidates", "evaluate", "publish"]
for (s, night), (info, st, facts, t) in runs.items():
    print(f"## {s} night {night}: {info['events']:,} events, {info['users']:,} users, {info['items']:,} items\n")
    # Each stage resets the kernel's high-water mark, which /usr/bin/time
    # reads too: the process's peak is the largest of the stages' peaks.
    peak = max([t["max_rss_kb"] / 1024] + [x["rss"] for x in st.values()])
    print(f"Whole process: wall {t['wall']:.0f} s, CPU {t['user'] + t['sys']:.0f} s, peak RSS {peak:.0f} MiB\n")
    print("| stage | ran | wall s | CPU s | CPU/wall | peak RSS MiB | rows written |")
    print("|---|---|---|---|---|---|---|")
    for name in stages:
        x = st.get(name)
        if x:
            ratio = x["cpu"] / x["wall"] if x["wall"] > 0 else 0
            print(f"| {name} | {'yes' if x['ran'] else 'skipped'} | {x['wall']:.1f} | {x['cpu']:.1f} | {ratio:.2f} | {x['rss']:.0f} | {x['rows']:,} |")
    keep = ["loss", "pretraining epochs", "fine-tuning epochs (best)", "texts encoded / from cache",
            "NDCG@10 nightrec / popularity", "Recall@10 nightrec / popularity", "test cases (users"]
    notes = [f"{k}: {v}" for f in facts.values() for k, v in f.items() if any(k.startswith(p) for p in keep)]
    if notes:
        print("\n" + "; ".join(notes))
    print()

if len(sizes) > 1:
    pairs = list(zip(sizes, sizes[1:])) + ([(sizes[0], sizes[-1])] if len(sizes) > 2 else [])
    print(f"## Growth between sizes\n")
    print("Exponent e in time ~ events^e (1 = linear), between each pair of sizes, wall time (RSS in brackets).")
    print("Exact top-K (in candidates) grows with users x items: e = 2 expected for that part. `train, s/epoch`")
    print("is the mean fine-tuning epoch (the number of epochs is set by early stopping, not by the data size).\n")

    def epoch_s(st_facts):
        v = st_facts.get("train", {}).get("sequences/s, s/epoch")
        return float(v.split(",")[1]) if v else None

    for night in (1, 2):
        have = [(a, b) for a, b in pairs if (a, night) in runs and (b, night) in runs]
        if not have:
            continue
        print(f"Night {night}:\n")
        print("| stage | " + " | ".join(f"{a}→{b}" for a, b in have) + " |")
        print("|---|" + "---|" * len(have))
        for name in stages + ["train, s/epoch"]:
            cells = []
            for a, b in have:
                ra, rb = runs[(a, night)], runs[(b, night)]
                ratio = math.log(rb[0]["events"] / ra[0]["events"])
                if name == "train, s/epoch":
                    ea, eb = epoch_s(ra[2]), epoch_s(rb[2])
                    cells.append(f"{math.log(eb / ea) / ratio:.2f}" if ea and eb else "")
                    continue
                x, y = ra[1].get(name), rb[1].get(name)
                if x and y and x["ran"] and y["ran"] and x["wall"] > 0:
                    e = math.log(max(y["wall"], 1e-3) / max(x["wall"], 1e-3)) / ratio
                    r = math.log(max(y["rss"], 1) / max(x["rss"], 1)) / ratio
                    cells.append(f"{e:.2f} ({r:.2f})")
                else:
                    cells.append("")
            print(f"| {name} | " + " | ".join(cells) + " |")
        print()
