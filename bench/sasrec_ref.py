"""Reference SASRec trained as Klenitskiy & Vasilev train it ("Turning Dross
Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023, their
"SASRec+"), scored under nightrec's protocol. The peer of nightrec's
sequence model in the sparse-log benchmark (issue 25).

What it is. SASRec (Kang & McAuley 2018) in the layout of the authors' code
(public repository antklen/sasrec-bert4rec-recsys23, itself adapted from
pmixer/SASRec.pytorch), trained from scratch - no pretraining - with a
softmax cross-entropy over the whole catalogue at every position of every
training sequence, Adam, early stopping on validation NDCG@10, and the best
epoch's weights scored on the test items. Written anew from the facts below;
no code is copied.

Hyper-parameters (defaults = the paper's; "code" = that repository):
- --dim 64, --blocks 2, --heads 1, --dropout 0.1: code src/configs/SASRec.yaml
  (model_params: hidden_units, num_blocks, num_heads, dropout_rate), used
  unchanged for Beauty, Steam and Yelp (README / src/run_final.sh override
  only ML-1M's sequence length and ML-20M's width, 256).
- --max-len 50: code SASRec.yaml dataset.max_length, the value for the
  Amazon (Beauty), Steam and Yelp runs; ML-1M and ML-20M use 200
  (README "Reproduce paper results"). Positional table of 200 rows
  (model_params.maxlen), positions counted from the oldest item shown.
- --lr 1e-3, Adam (betas 0.9/0.999, no weight decay, no clipping, constant
  rate): code SASRec.yaml seqrec_module.lr, src/modules.py
  configure_optimizers (torch.optim.Adam).
- --batch 128 users per step, shuffled each epoch: SASRec.yaml
  dataloader.batch_size; src/run.py DataLoader(shuffle=True).
- --max-epochs 100, --patience 10 on validation NDCG@10, best epoch's
  weights tested: SASRec.yaml trainer_params.max_epochs and patience;
  src/run.py training() (EarlyStopping and ModelCheckpoint on val_ndcg,
  mode max, best checkpoint reloaded before predicting).
- --val-users 10000 random users score validation each epoch: SASRec.yaml
  dataloader.validation_size; src/run.py create_dataloaders.
- Loss: src/modules.py SeqRec.compute_loss, nn.CrossEntropyLoss over the
  logits of src/models.py SASRec.forward (hidden state x item embedding
  table, tied weights, padding row 0 included as a class that is never a
  target), mean over every non-padding position.
- Training samples: src/datasets.py CausalLMDataset, one per user per
  epoch: the last max_len + 1 items of the training part, inputs = all but
  the last, labels = all but the first; right-padded per batch
  (PaddingCollateFn).
- Architecture and initialisation: src/models.py SASRec: item embedding
  x sqrt(dim) + positional embedding, dropout, padding positions zeroed;
  per block Q = LayerNorm(x), x = Q + causal single-head attention(Q, x, x)
  (attention dropout), x = LayerNorm(x), x = x + FFN(x) with FFN =
  dim->dim ReLU dim->dim (kernel-1 convolutions) and dropout, padding zeroed;
  final LayerNorm; LayerNorm eps 1e-8; embeddings, linear and convolution
  weights N(0, 0.02), biases 0; attention in-projection left at PyTorch's
  Xavier-uniform default.

Protocol - nightrec's, so the two are scored the same way:
- Split (sql/trainset/steps.sql): per user, the last item is the test item
  and the one before it the validation item; the model trains on the rest.
  A user always keeps one training item, so 2-item users hold out only a
  test item and 1-item users nothing. Only the most recent --keep-last
  items (trainset.max_sequence_length, 200) of a user are kept, as nightrec
  keeps them; with max_len 50 this changes only what is masked.
- Ranking (src/stages/evaluate/mod.rs Scorers::positions, via
  src/metrics.rs target_positions): every catalogue item is scored; masked
  (cannot take a place) are the padding index and every item of the user's
  history before the target - for the test item the whole kept sequence
  before it (training + validation items, `before_test`), for the
  validation item the training items (src/stages/train/fit.rs validate) -
  not cut to max_len. The target keeps its own score even when it is in the
  history. Position = items scoring strictly higher + half the other items
  scoring the same (0 = first). NDCG@10 = 1/log2(position + 2) and HR@10 =
  1 when position < 10, else 0; means over users. (The authors' code drops
  seen items from the top list, so a target already in the history counts
  as a miss there; --paper-mask does that. The S3Rec Sports and Toys files
  hold no such target, so both rules give the same numbers on them.)
- Catalogue: every item of the file (S3Rec) or of nightrec's item_index
  (work directory), whether or not anyone trained on it.

Inputs:
- an S3Rec-format file (`user item item ...`, one user a line, oldest item
  first; .gz read as gzip), e.g. ../shared/data/amazon-sports-and-outdoors.txt.gz;
- or a nightrec work directory `<output>/_work/dt=D/` after the trainset
  stage (`sequences` and `item_index` tables): nightrec's own sequences and
  holdout counts are used as they are. A raw nightrec input directory goes
  through nightrec first (`nightrec --input IN --output OUT run --date D
  --stage clean --stage trainset`), since cleaning and collapsing decide
  the sequences.

Outputs: one JSON object on stdout (per-epoch loss, validation NDCG@10 /
HR@10 and seconds; best epoch; test NDCG@10 / HR@10 with 95% confidence
half-widths; wall and process CPU seconds for training and in all); one
progress line per epoch on stderr; with --per-user OUT.parquet, one row per
test user: user_id (string, as in the input), rank (1-based position of the
test item among the unmasked items; x.5 on ties), ndcg10, hr10.

usage: sasrec_ref.py DATA [--seed S] [--threads N] [--max-epochs E]
       [--patience P] [--dim D] [--blocks B] [--heads H] [--dropout p]
       [--max-len L] [--lr R] [--batch N] [--val-users N] [--keep-last N]
       [--max-users N] [--paper-mask] [--per-user OUT.parquet]
Run it with the interpreter scripts/setup-torch.sh prints (PyTorch 2.11).
"""

import argparse
import copy
import gzip
import json
import math
import os
import random
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

K = 10


# ---------------------------------------------------------------- data


class Data:
    """Users' item sequences (dense item indices 1..n_items, oldest first)
    and how many of their last items are held out for validation and test."""

    def __init__(self, users, seqs, valid_n, test_n, n_items, source):
        self.users, self.seqs, self.valid_n, self.test_n = users, seqs, valid_n, test_n
        self.n_items, self.source = n_items, source

    def split(self, u):
        s = self.seqs[u]
        t0 = len(s) - self.test_n[u]
        v0 = t0 - self.valid_n[u]
        return s[:v0], s[v0:t0], s[t0:], s[:t0]  # train, valid, test, before_test


def holdout_counts(n, test_steps=1, valid_steps=1):
    """sql/trainset/steps.sql: hold out test then validation steps, but
    always leave one training step."""
    test = min(test_steps, max(n - 1, 0))
    valid = min(test + valid_steps, max(n - 1, 0)) - test
    return valid, test


def load_s3rec(path, keep_last, max_users):
    opener = gzip.open if path.endswith(".gz") else open
    users, raw = [], []
    with opener(path, "rt") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            users.append(parts[0])
            raw.append(parts[1:])
            if max_users and len(users) >= max_users:
                break
    tokens = {t for s in raw for t in s}
    numeric = all(t.isdigit() for t in tokens)
    order = sorted(tokens, key=(lambda t: (int(t), t)) if numeric else None)
    index = {t: i + 1 for i, t in enumerate(order)}
    seqs, valid_n, test_n = [], [], []
    for s in raw:
        s = s[-keep_last:] if keep_last else s
        seqs.append(np.array([index[t] for t in s], dtype=np.int64))
        v, t = holdout_counts(len(s))
        valid_n.append(v)
        test_n.append(t)
    return Data(users, seqs, valid_n, test_n, len(order), os.path.abspath(path))


def load_work(work):
    import pyarrow.parquet as pq

    seq = pq.read_table(os.path.join(work, "sequences"), columns=["user_id", "item_idxs", "valid_steps", "test_steps"])
    idx = pq.read_table(os.path.join(work, "item_index"), columns=["item_idx"]).column("item_idx").to_numpy()
    n_items = int(idx.max()) if len(idx) else 0
    if len(idx) != n_items:
        raise SystemExit(f"item_index is not dense 1..{n_items} ({len(idx)} rows)")
    d = seq.to_pydict()
    seqs = [np.array(s, dtype=np.int64) for s in d["item_idxs"]]
    return Data([str(u) for u in d["user_id"]], seqs, list(d["valid_steps"]), list(d["test_steps"]), n_items, os.path.abspath(work))


def load(path, keep_last, max_users):
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, "sequences")):
            data = load_work(path)
            if max_users:
                data = Data(data.users[:max_users], data.seqs[:max_users], data.valid_n[:max_users],
                            data.test_n[:max_users], data.n_items, data.source)
            return data
        raise SystemExit(
            f"{path}: not a nightrec work directory (no sequences/). Run nightrec's clean and trainset "
            "stages on an input directory first and pass <output>/_work/dt=D/."
        )
    return load_s3rec(path, keep_last, max_users)


# ---------------------------------------------------------------- model


class FeedForward(nn.Module):
    """Two position-wise dim->dim layers (the code's kernel-1 Conv1d), ReLU,
    dropout after each, residual from the (normalised) input."""

    def __init__(self, d, p):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, d)
        self.drop1, self.drop2 = nn.Dropout(p), nn.Dropout(p)

    def forward(self, x):
        return x + self.drop2(self.fc2(F.relu(self.drop1(self.fc1(x)))))


class SASRec(nn.Module):
    def __init__(self, n_items, d, blocks, heads, p, pos_rows):
        super().__init__()
        self.d = d
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(pos_rows, d)
        self.emb_drop = nn.Dropout(p)
        self.attn_ln = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(blocks))
        self.attn = nn.ModuleList(nn.MultiheadAttention(d, heads, dropout=p, batch_first=True) for _ in range(blocks))
        self.ffn_ln = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(blocks))
        self.ffn = nn.ModuleList(FeedForward(d, p) for _ in range(blocks))
        self.last_ln = nn.LayerNorm(d, eps=1e-8)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):  # also the attention's out-projection
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        """x [B, T] right-padded item indices → hidden states [B, T, d]."""
        t = x.shape[1]
        h = self.item_emb(x) * math.sqrt(self.d) + self.pos_emb.weight[:t].unsqueeze(0)
        h = self.emb_drop(h)
        keep = (x != 0).unsqueeze(-1).to(h.dtype)
        h = h * keep
        future = torch.ones(t, t, dtype=torch.bool).triu_(1)
        for ln, attn, ffn_ln, ffn in zip(self.attn_ln, self.attn, self.ffn_ln, self.ffn):
            q = ln(h)
            a, _ = attn(q, h, h, attn_mask=future, need_weights=False)
            h = ffn(ffn_ln(q + a)) * keep
        return self.last_ln(h)


# ---------------------------------------------------------------- training


def training_windows(data, max_len):
    """Each user's last max_len + 1 training items, right-padded into one
    array, and their lengths (users with fewer than 2 give no sample)."""
    rows = []
    for u in range(len(data.seqs)):
        tr = data.split(u)[0]
        if len(tr) >= 2:
            rows.append(tr[-(max_len + 1):])
    lens = np.array([len(r) for r in rows], dtype=np.int64)
    arr = np.zeros((len(rows), max_len + 1), dtype=np.int64)
    for i, r in enumerate(rows):
        arr[i, : len(r)] = r
    return torch.from_numpy(arr), torch.from_numpy(lens)


def train_epoch(model, opt, windows, lens, batch, gen):
    model.train()
    order = torch.randperm(len(lens), generator=gen)
    table = model.item_emb.weight
    total, count = 0.0, 0
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        w = int(lens[idx].max())
        seq = windows[idx, :w]
        inp, lab = seq[:, :-1], seq[:, 1:]
        h = model(inp)
        m = lab > 0
        logits = h[m] @ table.t()  # [positions, n_items + 1]
        loss = F.cross_entropy(logits, lab[m])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n = int(m.sum())
        total += float(loss.detach()) * n
        count += n
    return total / max(count, 1)


# ---------------------------------------------------------------- scoring


def pad_right(seqs, width=None):
    w = width or max(1, max(len(s) for s in seqs))
    out = np.zeros((len(seqs), w), dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


@torch.no_grad()
def positions(model, cases, max_len, batch, paper_mask):
    """cases: (input items, target, history to mask). Returns each case's
    position (0-based, ties half) by src/metrics.rs target_positions."""
    model.eval()
    table = model.item_emb.weight
    out = np.zeros(len(cases), dtype=np.float64)
    order = sorted(range(len(cases)), key=lambda i: len(cases[i][0]))
    for s in range(0, len(order), batch):
        ids = order[s : s + batch]
        inputs = [cases[i][0][-max_len:] for i in ids]
        x = pad_right(inputs)
        last = torch.tensor([len(v) - 1 for v in inputs])
        h = model(x)[torch.arange(len(ids)), last]
        scores = h @ table.t()
        tgt = torch.tensor([cases[i][1] for i in ids]).unsqueeze(1)
        hist = pad_right([cases[i][2] for i in ids])
        t = scores.gather(1, tgt)
        masked = scores.clone()
        masked[:, 0] = -math.inf
        masked.scatter_(1, hist, -math.inf)
        masked.scatter_(1, tgt, -math.inf)
        above = (masked > t).sum(1, dtype=torch.float64)
        tied = (masked == t).sum(1, dtype=torch.float64)
        pos = above + 0.5 * tied
        if paper_mask:
            seen = (hist == tgt).any(1)
            pos[seen] = math.inf
        out[ids] = pos.numpy()
    return out


def ndcg_hr(pos):
    hit = pos < K
    return np.where(hit, 1.0 / np.log2(np.where(hit, pos, 0) + 2.0), 0.0), hit.astype(np.float64)


def ci95(v):
    return 1.96 * float(np.std(v, ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else 0.0


def validation_cases(data, users):
    cases = []
    for u in users:
        tr, va, _, _ = data.split(u)
        if len(tr) and len(va):
            cases.append((tr, int(va[0]), tr))
    return cases


def test_cases(data):
    """(user, case) for each distinct test item of each user with history."""
    owners, cases = [], []
    for u in range(len(data.seqs)):
        _, _, te, before = data.split(u)
        if not len(before):
            continue
        seen = []
        for t in te:
            if int(t) not in seen:
                seen.append(int(t))
                owners.append(u)
                cases.append((before, int(t), before))
    return owners, cases


def per_user(owners, pos):
    """nightrec's per-user NDCG@10 / HR@10 (src/metrics.rs Accuracy::user)
    over each user's distinct test items; rank = best position + 1."""
    by = {}
    for u, p in zip(owners, pos):
        by.setdefault(u, []).append(p)
    users, rank, ndcg, hr = [], [], [], []
    for u, ps in by.items():
        idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(ps), K)))
        dcg = sum(1.0 / math.log2(p + 2) for p in ps if p < K)
        users.append(u)
        rank.append(min(ps) + 1.0)
        ndcg.append(dcg / idcg)
        hr.append(1.0 if any(p < K for p in ps) else 0.0)
    return users, np.array(rank), np.array(ndcg), np.array(hr)


# ---------------------------------------------------------------- main


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="S3Rec-format file (.gz ok) or nightrec work directory _work/dt=D/")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--pos-rows", type=int, default=200, help="positional table rows (code: model_params.maxlen)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--eval-batch", type=int, default=1024, help="cases per scoring batch (speed only)")
    ap.add_argument("--val-users", type=int, default=10000, help="random validation sample (0 = all)")
    ap.add_argument("--keep-last", type=int, default=200, help="most recent items kept per user, S3Rec input (0 = all)")
    ap.add_argument("--max-users", type=int, default=0, help="first N users only (smoke tests)")
    ap.add_argument("--paper-mask", action="store_true", help="a target already in the history is a miss")
    ap.add_argument("--per-user", metavar="OUT.parquet")
    a = ap.parse_args()

    wall0, cpu0, pcpu0 = time.perf_counter(), cpu_seconds(), time.process_time()
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    data = load(a.data, a.keep_last, a.max_users)
    windows, lens = training_windows(data, a.max_len)
    eligible = [u for u in range(len(data.seqs)) if len(data.split(u)[0]) and len(data.split(u)[1])]
    rng = np.random.default_rng(a.seed)
    val_users = eligible
    if a.val_users and len(eligible) > a.val_users:
        val_users = sorted(rng.choice(eligible, size=a.val_users, replace=False).tolist())
    vcases = validation_cases(data, val_users)
    owners, tcases = test_cases(data)
    in_hist = sum(1 for c in tcases if c[1] in set(c[2].tolist()))

    model = SASRec(data.n_items, a.dim, a.blocks, a.heads, a.dropout, max(a.pos_rows, a.max_len))
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    print(
        f"sasrec_ref: {len(data.users)} users, {data.n_items} items, {int(lens.sum())} training-window items, "
        f"{len(vcases)} validation / {len(tcases)} test cases",
        file=sys.stderr,
        flush=True,
    )

    epochs, best, best_epoch, best_state, wait, stopped = [], -1.0, 0, None, 0, "max_epochs"
    train_wall0, train_cpu0 = time.perf_counter(), cpu_seconds()
    for epoch in range(1, a.max_epochs + 1):
        t0, c0 = time.perf_counter(), cpu_seconds()
        loss = train_epoch(model, opt, windows, lens, a.batch, gen)
        t1 = time.perf_counter()
        vpos = positions(model, vcases, a.max_len, a.eval_batch, a.paper_mask)
        vn, vh = ndcg_hr(vpos)
        t2, c2 = time.perf_counter(), cpu_seconds()
        row = {
            "epoch": epoch,
            "loss": round(loss, 5),
            "val_ndcg10": round(float(vn.mean()), 5),
            "val_hr10": round(float(vh.mean()), 5),
            "train_s": round(t1 - t0, 2),
            "val_s": round(t2 - t1, 2),
            "cpu_s": round(c2 - c0, 2),
        }
        epochs.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if row["val_ndcg10"] > best:
            best, best_epoch, wait = row["val_ndcg10"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            wait += 1
            if wait >= a.patience:
                stopped = "patience"
                break
    train_wall, train_cpu = time.perf_counter() - train_wall0, cpu_seconds() - train_cpu0

    model.load_state_dict(best_state)
    t0 = time.perf_counter()
    tpos = positions(model, tcases, a.max_len, a.eval_batch, a.paper_mask)
    users, rank, ndcg, hr = per_user(owners, tpos)
    test_s = time.perf_counter() - t0
    if a.per_user:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.table(
                {
                    "user_id": pa.array([data.users[u] for u in users], pa.string()),
                    "rank": pa.array(rank, pa.float64()),
                    "ndcg10": pa.array(ndcg, pa.float64()),
                    "hr10": pa.array(hr, pa.float64()),
                }
            ),
            a.per_user,
        )

    summary = {
        "model": "SASRec+ reference (Klenitskiy & Vasilev, RecSys 2023): full softmax CE, no pretraining",
        "data": data.source,
        "users": len(data.users),
        "items": data.n_items,
        "events": int(sum(len(s) for s in data.seqs)),
        "params": {k: getattr(a, k) for k in ("seed", "threads", "dim", "blocks", "heads", "dropout", "max_len",
                                               "pos_rows", "lr", "batch", "max_epochs", "patience", "val_users",
                                               "keep_last", "max_users", "paper_mask")},
        "trainable_parameters": sum(p.numel() for p in model.parameters()),
        "validation_cases": len(vcases),
        "epochs": epochs,
        "stopped": stopped,
        "best_epoch": best_epoch,
        "best_val_ndcg10": best,
        "test": {
            "users": len(users),
            "cases": len(tcases),
            "targets_in_history": in_hist,
            "ndcg10": round(float(ndcg.mean()), 5),
            "ndcg10_ci95": round(ci95(ndcg), 5),
            "hr10": round(float(hr.mean()), 5),
            "hr10_ci95": round(ci95(hr), 5),
            "seconds": round(test_s, 2),
        },
        "timing": {
            "epochs_run": len(epochs),
            "mean_train_epoch_s": round(float(np.mean([e["train_s"] for e in epochs])), 2),
            "mean_val_s": round(float(np.mean([e["val_s"] for e in epochs])), 2),
            "train_wall_s": round(train_wall, 2),
            "train_cpu_s": round(train_cpu, 2),
            "total_wall_s": round(time.perf_counter() - wall0, 2),
            "total_cpu_s": round(cpu_seconds() - cpu0, 2),
            "total_process_time_s": round(time.process_time() - pcpu0, 2),
        },
        "per_user": a.per_user,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
