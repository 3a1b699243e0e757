#!/usr/bin/env bash
# Fetch a CPU libtorch 2.11.0 from PyPI wheels (the only download host we may
# use), verify every wheel by sha256, and unpack the few libraries tch needs
# into a cache folder shared by every clone on the machine.
#
# Prints the libtorch folder on stdout. Idempotent: a finished cache (marked
# by .complete) is reused without touching the network.
set -euo pipefail

CACHE="${NIGHTREC_CACHE:-$HOME/.cache/nightrec}"
DEST="$CACHE/libtorch-2.11.0-cpu"
WHEELS="$CACHE/wheels"

if [[ -f "$DEST/.complete" ]]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$WHEELS"
PY="${PYTHON:-python3}"

declare -A SHA=(
  [torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl]=7aa2f9bbc6d4595ba72138026b2074be1233186150e9292865e04b7a63b8c67a
  [nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl]=7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
  [nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl]=4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8
)

have_all() {
  local f
  for f in "${!SHA[@]}"; do [[ -f "$WHEELS/$f" ]] || return 1; done
}

if ! have_all; then
  echo "setup-libtorch: downloading torch==2.11.0 and CUDA runtime wheels from PyPI (once per machine)" >&2
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 >&2
fi

for f in "${!SHA[@]}"; do
  if [[ ! -f "$WHEELS/$f" ]]; then
    echo "setup-libtorch: expected wheel $f was not downloaded; found: $(ls "$WHEELS")" >&2
    exit 1
  fi
  got=$(sha256sum "$WHEELS/$f" | cut -d' ' -f1)
  if [[ "$got" != "${SHA[$f]}" ]]; then
    echo "setup-libtorch: sha256 mismatch for $f: got $got, want ${SHA[$f]}; deleting it" >&2
    rm -f "$WHEELS/$f"
    exit 1
  fi
done

tmp="$DEST.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/lib"
trap 'rm -rf "$tmp"' EXIT
"$PY" - "$WHEELS" "$tmp" <<'PYEOF'
import sys, zipfile, os, shutil
wheels, out = sys.argv[1], sys.argv[2]
keep_libs = ("libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp")
def extract(zf, member, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with zf.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
for name in sorted(os.listdir(wheels)):
    path = os.path.join(wheels, name)
    with zipfile.ZipFile(path) as zf:
        for m in zf.namelist():
            if m.endswith("/"):
                continue
            base = os.path.basename(m)
            if name.startswith("torch-"):
                if m.startswith("torch/include/"):
                    extract(zf, m, os.path.join(out, "include", m[len("torch/include/"):]))
                elif m.startswith("torch/lib/") and base.startswith(keep_libs):
                    extract(zf, m, os.path.join(out, "lib", base))
            elif base.startswith(("libcudart.so.13", "libcupti.so.13")):
                extract(zf, m, os.path.join(out, "lib", base))
PYEOF
# tch's build script looks for libtorch's version file and the share folder.
echo "2.11.0" > "$tmp/build-version"
for lib in libtorch_cpu.so libtorch.so libc10.so libcudart.so.13 libcupti.so.13; do
  [[ -f "$tmp/lib/$lib" ]] || { echo "setup-libtorch: $lib missing after extraction" >&2; exit 1; }
done
touch "$tmp/.complete"
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
echo "$DEST"
