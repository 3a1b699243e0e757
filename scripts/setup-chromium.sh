#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver, for the test that opens the nightly
# report in a headless browser (tests/report.rs). Installed with apt-get
# from Debian's archive when missing (as root, or through sudo).
# Prints the chromium binary's path on stdout. Idempotent.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  echo "setup-chromium: installing Debian's chromium and chromium-driver ..." >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
fi
chromium="$(command -v chromium)"
if [[ ! -x "$(dirname "$chromium")/chromedriver" ]]; then
  echo "setup-chromium: chromedriver is not beside $chromium" >&2
  exit 1
fi
echo "$chromium"
