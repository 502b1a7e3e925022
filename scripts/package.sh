#!/usr/bin/env bash
# Builds the .deb and checks it the way a sysadmin will meet it: the unit's systemd-analyze
# exposure (at most 1.5), lintian (no errors), then `dpkg -i` on this machine and the installed
# binary's `check-config` against the installed configuration. Installs the tools it needs when
# they are missing (cargo-deb, lintian, systemd-analyze, adduser, dpkg-shlibdeps). Called by
# .ci/run after the tests; runs alone too.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tracks-collector/target}"
MAX_EXPOSURE=1.5
UNIT=systemd/tracks-collector.service
NAME=tracks-collector

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v lintian >/dev/null || missing+=(lintian)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v adduser >/dev/null || missing+=(adduser)
# cargo-deb resolves the package's library dependencies (`$auto`) with dpkg-shlibdeps.
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo-deb >/dev/null; then
  echo "installing cargo-deb"
  cargo install cargo-deb --locked --quiet
fi

echo "== systemd-analyze security --offline=true $UNIT"
report=$(systemd-analyze security --offline=true "$UNIT" 2>&1) || {
  echo "$report"
  exit 1
}
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$report")
if [ -z "$exposure" ]; then
  echo "$report"
  echo "no exposure level in the report" >&2
  exit 1
fi
echo "exposure $exposure (at most $MAX_EXPOSURE)"
if awk -v e="$exposure" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e > max) }'; then
  grep '✗' <<<"$report" || true
  echo "the unit's exposure $exposure is above $MAX_EXPOSURE" >&2
  exit 1
fi

echo "== cargo deb"
deb=$(cargo deb --locked | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb did not name a .deb: $deb" >&2; exit 1; }
echo "$deb ($(stat -c %s "$deb") bytes)"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
dpkg-deb --contents "$deb"

echo "== lintian"
# Warnings kept on purpose are listed, with why, in docs/operations.md ("The package").
lintian --fail-on error --tag-display-limit 0 "$deb"

echo "== dpkg -i"
installed_before=no
if dpkg-query -W -f='${Status}' "$NAME" 2>/dev/null | grep -q 'install ok installed'; then
  installed_before=yes
fi
as_root dpkg -i "$deb"

echo "== installed: systemd-analyze verify"
systemd-analyze verify /usr/lib/systemd/system/$NAME.service

echo "== installed: check-config"
# As installed, the example's all-zero placeholder hashes are refused, each with its line and
# the command that makes the real one; with real hashes pasted in, the file is valid.
config=/etc/tracks-collector/collector.toml
if said=$(/usr/bin/tracks-collector --config "$config" check-config 2>&1); then
  echo "check-config passed the example's placeholder hashes" >&2; exit 1
fi
echo "$said"
grep -q "games\[0\].measure_key.*token new --game my-game" <<<"$said" ||
  { echo "the measure key's placeholder is not named" >&2; exit 1; }
edited=$(mktemp)
key=$(/usr/bin/tracks-collector token new --game my-game | grep -o 'blake3:[0-9a-f]\{64\}' | head -1)
token=$(/usr/bin/tracks-collector token new --name central-pull --scope aggregates |
  grep -o 'blake3:[0-9a-f]\{64\}' | head -1)
sed -e "0,/blake3:0\{64\}/s//$key/" -e "s/blake3:0\{64\}/$token/" "$config" > "$edited"
/usr/bin/tracks-collector --config "$edited" check-config
rm -f "$edited"

echo "== installed: user, state directory, key"
getent passwd "$NAME" >/dev/null || { echo "no $NAME user" >&2; exit 1; }
state=$(as_root stat -c '%a %U' /var/lib/tracks-collector)
[ "$state" = "700 $NAME" ] || { echo "/var/lib/tracks-collector is $state" >&2; exit 1; }
key=$(as_root stat -c '%a %U' /var/lib/tracks-collector/db.key)
[ "$key" = "600 $NAME" ] || { echo "db.key is $key" >&2; exit 1; }
as_root grep -Eqx '[0-9a-f]{64}' /var/lib/tracks-collector/db.key ||
  { echo "db.key does not hold 64 hex characters" >&2; exit 1; }
man -w "$NAME" >/dev/null 2>&1 || [ -f /usr/share/man/man1/$NAME.1.gz ] ||
  { echo "no man page" >&2; exit 1; }

echo "== reinstall keeps the key"
before=$(as_root sha256sum /var/lib/tracks-collector/db.key)
as_root dpkg -i "$deb" >/dev/null
after=$(as_root sha256sum /var/lib/tracks-collector/db.key)
[ "$before" = "$after" ] || { echo "reinstalling replaced the database key" >&2; exit 1; }

# Leave the machine as it was: purge only what this run installed (a purge deletes the data).
if [ "$installed_before" = no ]; then
  echo "== dpkg --purge"
  as_root dpkg --purge "$NAME" >/dev/null
  if [ -e /var/lib/tracks-collector ]; then
    echo "purge left /var/lib/tracks-collector behind" >&2
    exit 1
  fi
fi
echo "package: ok"
