#!/bin/sh
# Installs nfqwall from source on a Debian host: the binary, the systemd unit, the man
# pages, and the built-in default config (log-only, queue 0, every TCP service) unless
# a config exists. (The Debian package, `cargo deb`, is the other way: README.)
#
#   sudo systemd/install.sh              # build (cargo, release) if needed, install
#   sudo systemctl enable --now nfqwall  # start now and at boot
#   sudo systemd/install.sh --uninstall  # stop, remove binary and unit; keeps /etc/nfqwall
#
# Environment: PREFIX (default /usr/local), DESTDIR (staging root, default none),
# NFQWALL_BIN (a binary to install instead of target/release/nfqwall).
set -eu
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
unit_dir="$DESTDIR/etc/systemd/system"
sbin="$DESTDIR$PREFIX/sbin"
etc="$DESTDIR/etc/nfqwall"
man8="$DESTDIR$PREFIX/share/man/man8"
live=0
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then live=1; fi

if [ "${1:-}" = "--uninstall" ]; then
  if [ "$live" = 1 ]; then systemctl disable --now nfqwall.service || true; fi
  rm -f "$sbin/nfqwall" "$unit_dir/nfqwall.service" "$man8"/nfqwall.8 "$man8"/nfqwall-*.8
  if [ "$live" = 1 ]; then systemctl daemon-reload; fi
  echo "nfqwall removed (config kept in $etc)"
  exit 0
fi

bin=${NFQWALL_BIN:-target/release/nfqwall}
if [ ! -x "$bin" ]; then
  cargo build --release --locked
fi
install -D -m 0755 "$bin" "$sbin/nfqwall"
# The unit is the Debian package's (binary in /usr/sbin); point its Exec lines at PREFIX.
sed "/^Exec/s#/usr/sbin/nfqwall#$PREFIX/sbin/nfqwall#g" systemd/nfqwall.service > nfqwall.service.tmp
install -D -m 0644 nfqwall.service.tmp "$unit_dir/nfqwall.service"
rm -f nfqwall.service.tmp
# Man pages (generated from the CLI: cargo run --example gen_docs); the unit's
# Documentation= names nfqwall(8).
for page in doc/man/*.8; do
  install -D -m 0644 "$page" "$man8/$(basename "$page")"
done
if [ ! -e "$etc/nfqwall.toml" ]; then
  install -D -m 0600 rules/default.toml "$etc/nfqwall.toml"
fi
"$sbin/nfqwall" check "$etc/nfqwall.toml"
if [ "$live" = 1 ]; then systemctl daemon-reload; fi
echo "installed: $sbin/nfqwall, $unit_dir/nfqwall.service, $man8/nfqwall*.8, $etc/nfqwall.toml"
echo "start it with: systemctl enable --now nfqwall   (events: journalctl -u nfqwall -o cat)"
