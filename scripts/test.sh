#!/usr/bin/env bash
# Install everything the test suite needs, then run it.
#   bash scripts/test.sh [pytest args...]
# As root (CI) it also installs the reference tools from Debian (tshark, and sipp, nftables,
# tcpdump, iproute2 for the namespace lab of tests/test_e2e_sipp.py; systemd for
# systemd-analyze in tests/test_systemd_unit.py; kamailio and sngrep as real HEP senders
# in tests/test_hep_kamailio.py and tests/test_hep_sngrep.py; tcpreplay as the mirroring
# router's sender in tests/test_e2e_mirrored.py; chromium renders /calls in tests/test_e2e_agent.py); elsewhere it
# uses sudo when available, or goes on without them (tests that need them then skip,
# saying why — in CI, with CI=true, they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, each as package:command (the command tells whether the
# package is installed: sip-tester provides sipp, iproute2 ip, nftables nft).
apt_pkgs=(tshark:tshark sip-tester:sipp nftables:nft tcpdump:tcpdump iproute2:ip prometheus:promtool
          systemd:systemd-analyze kamailio:kamailio sngrep:sngrep tcpreplay:tcpreplay
          chromium:chromium curl:curl)
missing=()
for pc in "${apt_pkgs[@]}"; do command -v "${pc#*:}" >/dev/null 2>&1 || missing+=("${pc%%:*}"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; fi
  fi
  if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "scripts/test.sh: not root and no sudo: not installing ${missing[*]}; tests that need them will skip" >&2
  fi
fi

py=${PYTHON:-}
if [ -z "$py" ]; then
  for c in python3.11 python3; do command -v "$c" >/dev/null 2>&1 && { py=$c; break; }; done
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
if [ $rc -eq 5 ]; then echo "scripts/test.sh: pytest collected no tests" >&2; exit 1; fi
exit $rc
