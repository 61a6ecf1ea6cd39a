#!/usr/bin/env bash
# Installs the Debian packages the test suite drives as real peers, and only
# those that are missing, so a machine that has them is not touched.
set -euo pipefail

missing=()
need() { # need PACKAGE CHECK-COMMAND...
	local pkg=$1
	shift
	"$@" >/dev/null 2>&1 || missing+=("$pkg")
}
need curl command -v curl
need python3-socks /usr/bin/python3 -c 'import socks'
need dante-client command -v socksify
# VLC as the real MMSU player (e2e/vlc_test.go); setpriv runs it unprivileged.
need vlc-bin command -v vlc
need vlc-plugin-base dpkg -s vlc-plugin-base
need util-linux command -v setpriv
# fail2ban-regex checks the shipped fail2ban filter against fwproxy's real
# log lines (e2e/fail2ban_test.go).
need fail2ban command -v fail2ban-regex
# promtool checks the metrics exposition and the alerting rules (metrics/).
need prometheus command -v promtool

[ ${#missing[@]} -eq 0 ] && exit 0

sudo=
[ "$(id -u)" -ne 0 ] && sudo=sudo
echo "installing test dependencies: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The tests only need fail2ban-regex: the package's own service must not
# start banning on a test machine.
if [[ " ${missing[*]} " == *" fail2ban "* ]] && command -v systemctl >/dev/null 2>&1; then
	$sudo systemctl disable --now fail2ban >/dev/null 2>&1 || true
# Only promtool is wanted from the prometheus package: its server must not
# run on the test machine.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
	$sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
