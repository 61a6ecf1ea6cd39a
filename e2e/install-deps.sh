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
if [[ " ${missing[*]} " == *" haproxy "* ]] && command -v systemctl >/dev/null 2>&1; then
	$sudo systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
