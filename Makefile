# nightrec — `make help` lists the targets.
#
# One cargo profile (release) serves run, test and bench, so the tree is
# compiled once; the target dir lives outside the clone so that every clone
# and CI run on this machine reuses it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CACHE ?= $(HOME)/.cache/nightrec
export NIGHTREC_CACHE := $(CACHE)
export CARGO_TARGET_DIR ?= $(CACHE)/target
DATE ?= 2026-11-21

# LIBTORCH_USE_PYTORCH=1 links the CUDA libtorch of an installed PyTorch
# 2.11 instead of the CPU build fetched from PyPI.
ifeq ($(LIBTORCH_USE_PYTORCH),1)
LIBTORCH_ENV :=
else
LIBTORCH_ENV = export LIBTORCH="$$(scripts/setup-libtorch.sh)";
endif

.PHONY: help setup build run run-ml100k bench-sql bench-ml100k bench-cold-items bench-ids-only bench-repeat bench-topk bench-train bench-scale bench-shards bench-sparse test test-crash lint fmt sample clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## Fetch and verify libtorch, the text encoder and the Python readers (cached, once per machine).
	@$(LIBTORCH_ENV) echo "libtorch: $${LIBTORCH:-from PyTorch}"
	@echo "text encoder: $$(scripts/setup-models.sh)"
	@echo "python readers: $$(scripts/setup-python.sh)"
	@echo "chromium (report test): $$(scripts/setup-chromium.sh)"

build: ## Build the release binary at bin/nightrec.
	@$(LIBTORCH_ENV) cargo build --release --locked --bin nightrec
	@mkdir -p bin && cp -f "$(CARGO_TARGET_DIR)/release/nightrec" bin/nightrec
	@echo "built bin/nightrec"

run: build ## Run the nightly job on data/sample for $(DATE), outputs in out/.
	@scripts/setup-models.sh >/dev/null
	bin/nightrec --config jobs/nightly.toml run --date $(DATE)

run-ml100k: build ## Run the nightly job on MovieLens-100k (fetched from PyPI), outputs in out-ml100k/.
	@scripts/setup-models.sh >/dev/null
	bin/nightrec --config jobs/ml100k.toml --input "$$(scripts/setup-ml100k.sh)" --output out-ml100k \
	  run --date 1998-04-22 $(ARGS)

bench-sql: build ## 10M generated events: clean + trainset with nightrec vs the same logic in DuckDB (time, memory, row counts).
	bench/sql.sh

bench-ml100k: build ## MovieLens-100k quality and time, 3 seeds: ID-only, fusion, text + bounded delta, with the refit; baselines.
	@scripts/setup-models.sh >/dev/null
	bench/ml100k.sh

bench-cold-items: build ## MovieLens-100k: hide every rating of 10% of the movies, then rank those interactions (3 seeds, per variant).
	@scripts/setup-models.sh >/dev/null
	"$$(scripts/setup-python.sh)" bench/cold_items.py bin/nightrec "$$(scripts/setup-ml100k.sh)" bench-out/cold-items

bench-ids-only: build ## A generated ids-only catalogue (20k users, 20k items, 300k events, no item text): quality and time per VARIANTS.
	bench/ids_only.sh

bench-repeat: build ## Repeat mode on generated grocery logs, 2 shapes x 3 seeds: next-basket Recall/NDCG@10 vs personal top frequency, TIFU-KNN.
	bench/repeat.sh

bench-topk: build ## 1M users x 100k items x 64 dims exact top-100: nightrec vs FAISS IndexFlatIP (time, memory, overlap).
	"$$(scripts/setup-python.sh)" bench/topk.py bin/nightrec bench-out/topk

bench-train: build ## Training vs the same model in PyTorch eager (bench/torch_twin.py) at ml100k and M: loss, s/epoch -> bench/results/train.md.
	SIZES="$(or $(SIZES),ml100k M)" bench/train.sh

bench-scale: build ## Two nights (scratch, then warm) at S, M and L (1M/3M/10M events): per-stage wall, CPU, RSS -> bench/results/scale.md.
	SIZES="$(or $(SIZES),S M L)" bench/scale.sh

bench-shards: build ## The DAG's tasks at L (SIZE) as separate processes: prepare, 4 shards, publish vs unsharded: time, RSS -> bench/results/shards.md.
	SIZE="$(or $(SIZE),L)" SHARDS="$(or $(SHARDS),4)" EPOCHS="$(EPOCHS)" bench/shards.sh

bench-sparse: build ## Sparse shop logs (Amazon Sports, Toys, sparse generated, ML-100k), 3 seeds: nightrec's defaults vs the reference SASRec (bench/sasrec_ref.py) -> bench/results/sparse.md.
	bench/sparse.sh

test: ## Run every test (unit, SQL, end-to-end with pyarrow/DuckDB as readers, the report in headless Chromium, the Airflow DAG in Airflow 3).
	@$(LIBTORCH_ENV) NIGHTREC_PYTHON="$$(scripts/setup-python.sh)"; export NIGHTREC_PYTHON; \
	  NIGHTREC_AIRFLOW_PYTHON="$$(scripts/setup-airflow.sh)"; export NIGHTREC_AIRFLOW_PYTHON; \
	  NIGHTREC_CHROMIUM="$$(scripts/setup-chromium.sh)"; export NIGHTREC_CHROMIUM; \
	  scripts/setup-models.sh >/dev/null; \
	  cargo test --release --locked

test-crash: ## SIGKILL every stage at several points, rerun, compare with an uninterrupted run (a few minutes).
	@$(LIBTORCH_ENV) export NIGHTREC_PYTHON="$$(scripts/setup-python.sh)"; \
	  scripts/setup-models.sh >/dev/null; \
	  cargo test --release --locked --test integration ops::sigkill_in_every_stage_at_several_points -- --ignored --nocapture

lint: ## rustfmt check and clippy with warnings as errors.
	cargo fmt --check
	@$(LIBTORCH_ENV) cargo clippy --release --locked --all-targets -- -D warnings

fmt: ## Format the code.
	cargo fmt

sample: build ## Regenerate data/sample deterministically with `nightrec gen`.
	rm -rf data/sample
	bin/nightrec gen --out data/sample --users 600 --items 500 --events 40000 --days 30 --seed 42 --end-date $(DATE)

clean: ## Remove bin/ and the outputs (the shared cache stays).
	rm -rf bin out out-ml100k
