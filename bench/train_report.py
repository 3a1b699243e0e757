"""bench/results/train.md from bench/train.sh's outputs.

usage: train_report.py OUT_DIR "SIZES" "COMMAND"
Per size: each epoch's loss and seconds for nightrec and the PyTorch twin,
validation NDCG@10 after each fine-tuning epoch, the speed ratio per phase
(PyTorch seconds / nightrec seconds: above 1 means nightrec is faster), and
whether both trained the same thing (windows, batch size, loss).
"""

import datetime
import json
import os
import re
import statistics
import subprocess
import sys

out, sizes, command = sys.argv[1], sys.argv[2].split(), sys.argv[3]


def nightrec_epochs(path):
    rows = []
    for line in open(path):
        if not line.startswith("{"):
            continue
        f = json.loads(line).get("fields", {})
        msg = f.get("message", "")
        if msg.startswith("pretraining epoch") or msg.startswith("fine-tuning epoch"):
            rows.append({"phase": "pretrain" if msg.startswith("pretraining") else "finetune", "epoch": f["epoch"],
                         "loss": f["loss"], "seconds": f["seconds"], "valid_ndcg": f.get("valid_ndcg10")})
    return rows


def facts(path):
    text = open(path).read()
    get = lambda key: (re.search(rf"{re.escape(key)}: (.*)", text) or [None, None])[1]  # noqa: E731
    windows = get("training users (windows)")
    return {"windows": int(windows.split("(")[1].rstrip(")")) if windows else None,
            "loss": get("loss"), "batch_size": int(get("batch size") or 0), "precision": get("precision")}


commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print("# bench-train: nightrec's training against the same model in PyTorch eager mode\n")
model = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), "?")
mem = int(next(x.split()[1] for x in open("/proc/meminfo") if x.startswith("MemTotal"))) / 2**20
print(f"- date: {datetime.date.today()}, commit {commit}; machine: {os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM, "
      "no GPU")
print(f"- command: `{command}` (bench/train.sh, twin: bench/torch_twin.py)")
print("- same work tables, windows, batch size, dimensions, loss, epochs and threads; same malloc thresholds\n")
for size in sizes:
    n = nightrec_epochs(f"{out}/{size}/nightrec.log")
    fp32_path = f"{out}/{size}/nightrec-fp32.log"
    dn = nightrec_epochs(fp32_path) if os.path.exists(fp32_path) else []
    lines = [json.loads(x) for x in open(f"{out}/{size}/torch.jsonl")]
    head, t = lines[0], lines[1:]
    nf = facts(f"{out}/{size}/nightrec.summary")
    same = (nf["windows"] == head["windows"] and nf["batch_size"] == head["batch_size"]
            and (nf["loss"] == "full softmax") == head["full_softmax"])
    print(f"## {size}: {head['n_items'] - 1:,} items, {head['windows']:,} training windows, batch {head['batch_size']}, "
          f"{'full' if head['full_softmax'] else 'sampled'} softmax, {head['threads']} threads, torch {head['torch']}\n")
    print(f"Same training on both sides (windows, batch size, loss): {'yes' if same else 'NO: ' + json.dumps(nf)}")
    print(f"nightrec's precision: {nf['precision']}; PyTorch: fp32")
    if dn:
        print("nightrec runs twice: as configured, and in fp32 (`NIGHTREC_MODEL__PRECISION=fp32`, the twin's arithmetic)")
    print()
    cols = ["nightrec"] + (["nightrec fp32"] if dn else []) + ["PyTorch"]
    print("| phase | epoch | " + " | ".join(f"loss {c}" for c in cols) + " | "
          + " | ".join(f"valid NDCG@10 {c}" for c in cols) + " | " + " | ".join(f"s {c}" for c in cols)
          + " | PyTorch s / nightrec s |")
    print("|---|---|" + "---|" * (3 * len(cols) + 1))
    for i, (a, b) in enumerate(zip(n, t)):
        runs = [a] + ([dn[i]] if dn else []) + [b]
        nd = lambda e: "" if e.get("valid_ndcg") is None else f"{e['valid_ndcg']:.4f}"  # noqa: E731
        print(f"| {a['phase']} | {a['epoch']} | " + " | ".join(f"{e['loss']:.4f}" for e in runs) + " | "
              + " | ".join(nd(e) for e in runs) + " | " + " | ".join(f"{e['seconds']:.1f}" for e in runs)
              + f" | {b['seconds'] / a['seconds']:.2f}x |")
    for phase in ("pretrain", "finetune"):
        a = [e["seconds"] for e in n if e["phase"] == phase]
        d = [e["seconds"] for e in dn if e["phase"] == phase]
        b = [e["seconds"] for e in t if e["phase"] == phase]
        if a and b:
            extra = (f", nightrec fp32 {statistics.mean(d):.1f} ({statistics.mean(b) / statistics.mean(d):.2f}x PyTorch)"
                     if d else "")
            print(f"\n{phase}: mean s/epoch nightrec {statistics.mean(a):.1f}{extra}, PyTorch {statistics.mean(b):.1f}: "
                  f"nightrec {statistics.mean(b) / statistics.mean(a):.2f}x PyTorch eager's speed")
    nt = json.load(open(f"{out}/{size}/nightrec.time.json"))
    tt = json.load(open(f"{out}/{size}/torch.time.json"))
    print(f"\nWhole process: nightrec train stage {nt['wall']:.0f} s wall / {nt['user'] + nt['sys']:.0f} s CPU / "
          f"{nt['max_rss_kb'] / 1024:.0f} MiB; PyTorch {tt['wall']:.0f} s / {tt['user'] + tt['sys']:.0f} s / "
          f"{tt['max_rss_kb'] / 1024:.0f} MiB (each includes loading and per-epoch validation)\n")
