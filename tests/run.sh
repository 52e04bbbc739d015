#!/usr/bin/env bash
# The whole gaswatch test suite, on a fresh machine or a developer's.
#
# Installs what the tests need when it is missing (Debian packages: the real
# mosquitto broker, InfluxDB 1.6.7, pymodbus as an independent Modbus peer),
# then runs every test of the workspace. The tests start their own servers on
# 127.0.0.1 free ports in temp dirs and stop them; nothing needs to be running.
#
# Usage: tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
command -v influx >/dev/null 2>&1 || need+=(influxdb-client)
/usr/bin/python3 -c 'import pymodbus' >/dev/null 2>&1 || need+=(python3-pymodbus)
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's packages start their services on install; the tests run their own.
for svc in mosquitto influxdb; do
  if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done

# Two cores: keep test binaries from oversubscribing the machine with servers.
export RUST_BACKTRACE=1
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast "$@" -- --test-threads=2
