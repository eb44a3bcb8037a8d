#!/usr/bin/env bash
# Make sure the Debian programs the tests talk to are installed: install them when root,
# otherwise name what is missing and how to install it.
set -euo pipefail

# binary-or-file -> Debian package
declare -A PEERS=(
  [/usr/bin/prometheus]=prometheus
  [/usr/bin/promtool]=prometheus
  [/usr/bin/prometheus-alertmanager]=prometheus-alertmanager
  [/usr/bin/prometheus-blackbox-exporter]=prometheus-blackbox-exporter
  [/usr/bin/prometheus-snmp-exporter]=prometheus-snmp-exporter
  [/usr/sbin/snmpd]=snmpd
  [/usr/bin/snmpget]=snmp
  [/usr/sbin/snmptrapd]=snmptrapd
  [/usr/lib/nagios/plugins/check_http]=monitoring-plugins-basic
  [/usr/lib/nagios/plugins/check_dig]=monitoring-plugins-standard
  [/usr/bin/dig]=bind9-dnsutils
  [/usr/sbin/nginx]=nginx-light
  [/usr/bin/prometheus-node-exporter]=prometheus-node-exporter
  [/usr/bin/chromium]=chromium
  [/usr/sbin/dnsmasq]=dnsmasq-base
  [/usr/sbin/dovecot]=dovecot-imapd
  [/usr/sbin/slapd]=slapd
  [/usr/sbin/kamailio]=kamailio
  [/usr/sbin/nats-server]=nats-server
  [/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]=fonts-dejavu-core
)

missing=()
for path in "${!PEERS[@]}"; do
  [ -e "$path" ] || missing+=("${PEERS[$path]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -eq 0 ]; then
  echo "Installing test peers: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packages' own services from starting: the tests start their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "Missing test peers: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
  echo "Tests that need them are skipped (and fail when CI=true)." >&2
fi
