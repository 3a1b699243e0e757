"""nightrec's sequence model and training loop, written again in PyTorch eager mode.

The peer for `make bench-train`. It reads the work tables of a nightrec run
(`sequences`, `item_text_embeddings` under `_work/dt=D/`) and trains the same
model the same way as src/train.rs and src/model/seqrec.rs:
- SASRec-style pre-LN transformer, item input = ID embedding + projection of
  the text embedding, positions counted back from the most recent item,
  weights shared between input and output, tch's initialisations (normal
  0.02 embeddings, Kaiming-uniform(ReLU) linear weights, uniform biases);
- the same training windows (each user's training steps cut from the end
  into max_len + 1 pieces overlapping by one), length-sorted batches of the
  same size in random order, AdamW, gradient-norm clipping;
- masked-item pretraining (bidirectional, last item always masked) then
  next-item fine-tuning (causal); full softmax, or the target against shared
  uniform negatives with only the batch's items represented, chosen by the
  same cost rule;
- validation NDCG@10 after each fine-tuning epoch on the same kind of fixed
  sample of `model.validation_users` users, history masked.
Random draws differ from libtorch's in nightrec, so losses agree in value
per epoch within noise, not bit for bit.

usage: torch_twin.py WORK_DIR --config jobs/nightly.toml [--threads N]
       [--pretrain-epochs P] [--epochs F] [--seed S]
Settings come from jobs/nightly.toml's [model], then the config's [model],
then NIGHTREC_MODEL__* variables, as nightrec reads them. Prints one JSON
object per epoch, then a summary object.
"""

import argparse
import json
import math
import os
import random
import sys
import time
import tomllib

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn



def settings(config_path):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "jobs", "nightly.toml"), "rb") as f:
        model = dict(tomllib.load(f)["model"])
    with open(config_path, "rb") as f:
        model.update(tomllib.load(f).get("model", {}))
    for k, v in os.environ.items():
        if k.startswith("NIGHTREC_MODEL__"):
            key = k[len("NIGHTREC_MODEL__"):].lower()
            old = model.get(key)
            if isinstance(old, bool):
                model[key] = v.strip().lower() == "true"
            elif isinstance(old, (int, float)):
                model[key] = type(old)(v)
            else:
                model[key] = v
    return model


class Linear(nn.Linear):
    """tch's defaults: weights Kaiming-uniform with the ReLU gain, bias U(±1/√fan_in)."""

    def reset_parameters(self):
        bound = math.sqrt(6.0 / self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -1.0 / math.sqrt(self.in_features), 1.0 / math.sqrt(self.in_features))


class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.ln1, self.qkv, self.out = nn.LayerNorm(d), Linear(d, 3 * d), Linear(d, d)
        self.ln2, self.ff1, self.ff2 = nn.LayerNorm(d), Linear(d, 4 * d), Linear(4 * d, d)
        self.heads, self.p = heads, dropout

    def forward(self, x, blocked):
        b, l, d = x.shape
        dh = d // self.heads
        parts = self.qkv(self.ln1(x)).view(b, l, 3, self.heads, dh).permute(2, 0, 3, 1, 4)
        q, k, v = parts[0], parts[1], parts[2]
        att = (q @ k.transpose(-2, -1) / math.sqrt(dh)).masked_fill(blocked, -1e9).softmax(-1)
        att = F.dropout(att, self.p, self.training)
        y = self.out((att @ v).transpose(1, 2).contiguous().view(b, l, d))
        x = x + F.dropout(y, self.p, self.training)
        f = self.ff2(F.gelu(self.ff1(self.ln2(x))))
        return x + F.dropout(f, self.p, self.training)


class SeqRec(nn.Module):
    def __init__(self, n_items, d, heads, layers, max_len, dropout, text_dim, text_fusion):
        super().__init__()
        self.n_items, self.d, self.p, self.text_fusion = n_items, d, dropout, text_fusion
        self.item_id = nn.Embedding(n_items, d)
        nn.init.normal_(self.item_id.weight, 0.0, 0.02)
        self.mask_item = nn.Parameter(torch.randn(1, d) * 0.02)
        self.pos = nn.Embedding(max_len, d)
        nn.init.normal_(self.pos.weight, 0.0, 0.02)
        self.text_proj = Linear(text_dim, d)
        self.emb_ln = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.final_ln = nn.LayerNorm(d)
        self.scale_input = False  # model.input_norm = "scale"

    def item_table(self, text):
        return self.item_id.weight + self.text_proj(text) if self.text_fusion else self.item_id.weight

    def item_rows(self, text, ids):
        is_item = ids != self.n_items
        safe = torch.where(is_item, ids, 0)
        rows = self.item_id.weight[safe]
        if self.text_fusion:
            rows = rows + self.text_proj(text[safe])
        return torch.where(is_item.unsqueeze(-1), rows, self.mask_item.expand_as(rows))

    def encode(self, seq, items, causal):
        b, l = seq.shape
        x = items.index_select(0, seq.flatten()).view(b, l, self.d)
        positions = torch.arange(l).flip(0)
        pos = self.pos(positions).unsqueeze(0)
        x = x * self.d ** 0.5 + pos if self.scale_input else self.emb_ln(x + pos)
        x = F.dropout(x, self.p, self.training)
        pad = seq == 0
        key_ok = (~pad).unsqueeze(1) | torch.eye(l, dtype=torch.bool).unsqueeze(0)
        allowed = torch.ones(l, l, dtype=torch.bool).tril().unsqueeze(0) & key_ok if causal else key_ok
        blocked = (~allowed).unsqueeze(1)
        h = x
        for blk in self.blocks:
            h = blk(h, blocked)
        return self.final_ln(h) * (~pad).unsqueeze(-1).float()


def left_pad(seqs, max_len):
    l = max(1, max(min(len(s), max_len) for s in seqs))
    out = np.zeros((len(seqs), l), dtype=np.int64)
    for r, s in enumerate(seqs):
        tail = s[max(0, len(s) - max_len):]
        if len(tail):
            out[r, l - len(tail):] = tail
    return torch.from_numpy(out)


def windows(trains, max_len):
    out = []
    for t in trains:
        end = len(t)
        while end >= 2:
            start = max(0, end - (max_len + 1))
            out.append(t[start:end])
            if start == 0:
                break
            end = start + 1
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--config", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pretrain-epochs", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    m = settings(a.config)
    pre_epochs = m["pretrain_epochs"] if a.pretrain_epochs is None else a.pretrain_epochs
    epochs = m["epochs"] if a.epochs is None else a.epochs
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)

    seq = pq.read_table(os.path.join(a.work, "sequences"), columns=["user_id", "item_idxs", "valid_steps", "test_steps"])
    seq = seq.to_pydict()
    # nightrec reads them ORDER BY user_id (bytewise; the column may be a view type pyarrow cannot sort).
    order = sorted(range(len(seq["user_id"])), key=lambda i: seq["user_id"][i])
    seq = {k: [v[i] for i in order] for k, v in seq.items()}
    text_t = pq.read_table(os.path.join(a.work, "item_text_embeddings"), columns=["item_idx", "embedding"])
    text_t = text_t.sort_by("item_idx")
    emb = np.array(text_t.column("embedding").to_pylist(), dtype=np.float32)
    n_items = len(emb) + 1
    text = torch.from_numpy(np.vstack([np.zeros((1, emb.shape[1]), np.float32), emb]))
    splits = []
    for s, v, t in zip(seq["item_idxs"], seq["valid_steps"], seq["test_steps"]):
        s = np.asarray(s, dtype=np.int64)
        t0 = max(0, len(s) - t)
        v0 = max(0, t0 - v)
        splits.append((s[:v0], s[v0:t0]))
    trains = [tr for tr, _ in splits if len(tr) >= 2]
    valid = [u for u, (tr, va) in enumerate(splits) if len(va) and len(tr)]
    rng.shuffle(valid)
    valid = sorted(valid[:m["validation_users"]], key=lambda u: (len(splits[u][0]), u))

    d, max_len = m["dim"], m["max_len"]
    # The loss by cost (train.rs step_costs / full_softmax_chosen).
    encoder = m["layers"] * (12.0 * d * d + 2.0 * max_len * d)
    full_cost, sampled_cost = n_items * d, (m["sampled_negatives"] + 1) * d
    positions = sum(len(tr) - 1 for tr in trains)
    full = {"full": True, "sampled": False}.get(
        m["loss"], full_cost <= m["full_softmax_max_cost"] * (encoder + sampled_cost)
        or positions * full_cost <= m.get("full_softmax_max_epoch_gmacs", 0.0) * 1e9)
    classes = n_items if full else m["sampled_negatives"] + 1
    budget = m["memory_budget_mb"] * 1024 * 1024
    batch = min(m["batch_size"], max(1, int(budget / (max_len * classes * 4.0 * 3.0))))

    model = SeqRec(n_items, d, m["heads"], m["layers"], max_len, m["dropout"], text.shape[1], m["text_fusion"])
    model.scale_input = m.get("input_norm", "layer_norm") == "scale"
    opt = torch.optim.AdamW(model.parameters(), lr=m["learning_rate"], weight_decay=m["weight_decay"],
                            betas=(0.9, 0.999), eps=1e-8)
    samples = windows(trains, max_len)

    def loss_of(x, y, causal):
        if full:
            items = model.item_table(text)
            table = items if causal else torch.cat([items, model.mask_item], 0)
            h = model.encode(x, table, causal)
            at = y.flatten().nonzero().squeeze(1)
            return F.cross_entropy(h.view(-1, d)[at] @ items.t(), y.flatten()[at])
        neg = torch.randint(1, n_items, (m["sampled_negatives"],))
        allids = torch.cat([torch.zeros(1, dtype=torch.int64), x.flatten(), y.flatten(), neg])
        uniq, inv = torch.unique(allids, sorted=True, return_inverse=True)
        table = model.item_rows(text, uniq)
        nx, ny = x.numel(), y.numel()
        lx, ly, lneg = inv[1:1 + nx].view(x.shape), inv[1 + nx:1 + nx + ny].view(y.shape), inv[1 + nx + ny:]
        h = model.encode(lx, table, causal)
        yf = ly.flatten()
        at = yf.nonzero().squeeze(1)
        h, yt = h.view(-1, d)[at], yf[at]
        pos = (h * table[yt]).sum(-1, keepdim=True)
        negl = (h @ table[lneg].t()).masked_fill(yt.unsqueeze(-1) == lneg.unsqueeze(0), float("-inf"))
        logits = torch.cat([pos, negl], -1)
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.int64))

    def epoch(masked):
        model.train()
        started = time.perf_counter()
        order = samples[:]
        rng.shuffle(order)
        if m.get("batches", "by_length") == "by_length":
            order.sort(key=len)
        batches = [order[i:i + batch] for i in range(0, len(order), batch)]
        rng.shuffle(batches)
        total, n = 0.0, 0
        for parts in batches:
            if masked:
                x = left_pad(parts, max_len)
                real = x != 0
                chosen = (torch.rand(x.shape) < m["mask_prob"]) & real
                chosen[:, -1] = True
                loss = loss_of(torch.where(chosen, n_items, x), torch.where(chosen, x, 0), False)
            else:
                loss = loss_of(left_pad([p[:-1] for p in parts], max_len), left_pad([p[1:] for p in parts], max_len), True)
            v = loss.item()
            if not math.isfinite(v):
                sys.exit(f"training loss became {v}")
            opt.zero_grad(set_to_none=False)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), m["grad_clip"])
            opt.step()
            total, n = total + v, n + 1
        return total / max(n, 1), time.perf_counter() - started

    @torch.no_grad()
    def validate():
        model.eval()
        items = model.item_table(text)
        ndcg, users = 0.0, 0
        for i in range(0, len(valid), 256):
            chunk = valid[i:i + 256]
            inputs = [splits[u][0] for u in chunk]
            targets = torch.tensor([int(splits[u][1][0]) for u in chunk])
            h = model.encode(left_pad(inputs, max_len), items, True)[:, -1]
            scores = h @ items.t()
            t = scores.gather(1, targets.unsqueeze(1))
            masked = scores.clone()
            masked.scatter_(1, left_pad(inputs, 1 << 62), float("-inf"))
            masked[:, 0] = float("-inf")
            rank = (masked > t).sum(1).double()
            ndcg += float(((rank < 10).double() / torch.log2(rank + 2.0)).sum())
            users += len(chunk)
        return ndcg / max(users, 1)

    print(json.dumps({"settings": m, "n_items": n_items, "windows": len(samples), "batch_size": batch,
                      "full_softmax": full, "threads": a.threads, "torch": torch.__version__}), flush=True)
    for e in range(1, pre_epochs + 1):
        loss, secs = epoch(True)
        print(json.dumps({"phase": "pretrain", "epoch": e, "loss": loss, "seconds": secs}), flush=True)
    for e in range(1, epochs + 1):
        loss, secs = epoch(False)
        print(json.dumps({"phase": "finetune", "epoch": e, "loss": loss, "seconds": secs, "valid_ndcg": validate()}),
              flush=True)


if __name__ == "__main__":
    main()
