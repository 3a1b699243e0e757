# Sourced by the setup-*.sh scripts: `pinned_venv NAME "REQS" [pip args]`
# makes (once) a virtual environment NAME under the nightrec cache with the
# pinned requirements REQS, from PyPI wheels only (no compiling; pip checks
# each wheel's hash against the index's record of it), and prints its
# python. A venv whose recorded requirements differ is rebuilt.
pinned_venv() {
  local name="$1" reqs="$2"
  shift 2
  local venv="${NIGHTREC_CACHE:-$HOME/.cache/nightrec}/$name"
  if [[ -f "$venv/.complete" ]] && [[ "$(cat "$venv/.complete")" == "$reqs" ]]; then
    echo "$venv/bin/python"
    return 0
  fi
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv" >&2
  # shellcheck disable=SC2086 # REQS is a list of requirements
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "$@" $reqs >&2
  echo "$reqs" > "$venv/.complete"
  echo "$venv/bin/python"
}
