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
# ffmpeg as the real RTSP player (and the tone's publisher) in
# e2e/rtsp_test.go; VLC's RTSP output is the second RTSP server there.
need ffmpeg command -v ffmpeg
# fail2ban-regex checks the shipped fail2ban filter against fwproxy's real
# log lines (e2e/fail2ban_test.go).
need fail2ban command -v fail2ban-regex
# promtool checks the metrics exposition and the alerting rules (metrics/).
need prometheus command -v promtool
# The test hosts: network namespaces and veth pairs (internal/netns).
need iproute2 command -v ip
# The balancer in front of two proxies (e2e/balancer_test.go); the test
# runs its own haproxy in a namespace, never the package's service.
need haproxy test -x /usr/sbin/haproxy

[ ${#missing[@]} -eq 0 ] && exit 0

sudo=
[ "$(id -u)" -ne 0 ] && sudo=sudo
echo "installing test dependencies: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Only the commands are wanted from these packages: their own services
# (fail2ban banning, a Prometheus server, HAProxy) must not run on a test
# machine. The tests start what they need themselves.
if command -v systemctl >/dev/null 2>&1; then
	for svc in fail2ban prometheus haproxy; do
		if [[ " ${missing[*]} " == *" $svc "* ]]; then
			$sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
		fi
	done
fi
