#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every check and
# test: formatting, clippy, unit, integration, and the root-only network-namespace
# tests (run as root, as CI does, or those tests skip with a message saying so);
# builds the Debian package (cargo deb), which tests/package.rs inspects.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

packages=(
  iptables iproute2 iputils-ping ethtool conntrack tcpdump tshark curl socat
  dnsmasq-base dnsutils dnsperf iperf3 nftables python3 python3-scapy systemd
  libnetfilter-queue-dev pkg-config
  man-db binutils
  prometheus python3-prometheus-client
  chromium  # tests/report_html.rs loads nfqwall report's HTML in headless Chromium
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# cargo-deb builds the package (tests/package.rs inspects it with dpkg-deb and man).
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing: cargo-deb"
  cargo install --locked cargo-deb --version '^3'
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo deb
cargo test --release --all-targets --no-fail-fast
# The forced-panic check needs the test hook (src/daemon/test_hook.rs), compiled in a
# separate target directory so no binary built here carries it.
cargo test --release --features test-hooks --target-dir target/test-hooks --test host_failopen

# Fuzz each target for a bounded time where nightly and cargo-fuzz exist (fuzz/run.sh
# skips with a note otherwise, fails on a crash). The committed corpus is replayed on
# stable above (tests/fuzz_corpus.rs).
if cargo +nightly --version >/dev/null 2>&1 && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
fuzz/run.sh "${NFQWALL_FUZZ_SECONDS:-60}"
