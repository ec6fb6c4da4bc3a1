#!/usr/bin/env bash
# Installs what a real test-bed node needs from Debian's packages (as root): containerd, runc, the
# CNI plugins, iptables and conntrack for kube-proxy, mmdebstrap for the images, and a C compiler
# with a static libc for the pause image. kubelet, kube-proxy and kube-scheduler come from
# hack/install-binaries.sh. Installs nothing when everything is there already.
#
# No service is started: the test bed runs its own containerd per node (kubelock.testbed.node).
set -euo pipefail

need=(containerd runc containernetworking-plugins iptables conntrack mmdebstrap gcc libc6-dev)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} == 0 )); then
  echo "[install-node] all present: ${need[*]}" >&2
  exit 0
fi
# Without them the end-to-end tier is skipped with the reason; under CI that is a failure.
give_up() {
  echo "[install-node] missing ${missing[*]}: $1" >&2
  [[ -n ${CI:-} ]] && exit 1
  echo "[install-node] the end-to-end tier will be skipped (unless Docker runs kind)" >&2
  exit 0
}
[[ $(id -u) -eq 0 ]] || give_up "run as root (apt-get), or install them yourself"
command -v apt-get >/dev/null || give_up "this is not a Debian-like system"
# The packages' own services (a system-wide containerd) must not start: policy-rc.d says no.
policy=/usr/sbin/policy-rc.d
made_policy=
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
fi
trap '[[ -n $made_policy ]] && rm -f "$policy"' EXIT
echo "[install-node] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
