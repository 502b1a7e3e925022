#!/usr/bin/env bash
# Runs the test suite on a fresh machine: installs what the tests drive (a SQLCipher 4 client
# for Python, faketime for the scheduled jobs, Pebble (a test ACME CA) for the certificates, HAProxy
# in front of two collectors, Chromium for the collect script and links in a
# real browser, Python requests and curl as the TRACKS documentation's clients, blake3 and
# cryptography for the signed documents' example), then
# `cargo test`. Safe to run again; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v faketime >/dev/null || missing+=(faketime)
command -v chromium >/dev/null || missing+=(chromium)
command -v curl >/dev/null || missing+=(curl)
command -v pebble >/dev/null || missing+=(pebble)
command -v haproxy >/dev/null || missing+=(haproxy)
python3 -c 'import requests' 2>/dev/null || missing+=(python3-requests)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! python3 -c 'import sqlcipher3' 2>/dev/null; then
  echo "installing the SQLCipher 4 client for Python (sqlcipher3-binary)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore sqlcipher3-binary
fi

# The verification example of docs/api.md ("Signed documents") runs as written.
if ! python3 -c 'import blake3, cryptography' 2>/dev/null; then
  echo "installing blake3 and cryptography for Python (the signed documents' example)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore blake3 cryptography
fi

exec cargo test --locked "$@"
