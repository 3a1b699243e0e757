# Sourced by the benchmarks that take VARIANTS (sparse.sh, ml100k.sh,
# ids_only.sh). `variant_env SPEC` sets VARIANT_NAME and the array
# VARIANT_ENV from SPEC: `default` (no settings) or NAME:VAR=VALUE,...
# with NIGHTREC_MODEL__ left off each VAR, e.g. "nopre:PRETRAIN_EPOCHS=0".
variant_env() {
  case "$1" in
    default) VARIANT_NAME=default; VARIANT_ENV=() ;;
    *:*)
      VARIANT_NAME="${1%%:*}"
      local kv; IFS=, read -ra kv <<< "${1#*:}"
      VARIANT_ENV=("${kv[@]/#/NIGHTREC_MODEL__}") ;;
    *) echo "unknown variant $1 (default, or NAME:VAR=VALUE,...)" >&2; return 2 ;;
  esac
}
