#!/usr/bin/env bash
# bootstrap.sh installs what Palisade's lab and tests need on a Debian machine
# (run as root) and builds the pinned Kubernetes control plane into a cache
# outside the repository. It is idempotent: a second run only checks.
#
#   hack/bootstrap.sh            # install packages, build k8s binaries
#   hack/bootstrap.sh --print-bin # print the directory holding the k8s binaries
set -euo pipefail

K8S_VERSION=v1.37.1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${PALISADE_CACHE_DIR:-/var/cache/palisade}
BIN=$CACHE/k8s-$K8S_VERSION/bin
K8S_BINS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

if [[ ${1:-} == --print-bin ]]; then
	echo "$BIN"
	exit 0
fi

log() { printf '[bootstrap %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- Debian packages --------------------------------------------------------
PKGS=(openvswitch-switch ethtool iproute2 iputils-ping netcat-openbsd iperf3 conntrack jq)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "bootstrap: missing packages ${missing[*]}; run as root to install them" >&2
		exit 1
	fi
	log "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	log "packages present: ${PKGS[*]}"
fi
# The Debian package may start a system OVS; the lab runs its own per node.
if systemctl is-active --quiet openvswitch-switch 2>/dev/null; then
	systemctl stop openvswitch-switch || true
fi

# --- Kubernetes binaries ----------------------------------------------------
need=()
for b in "${K8S_BINS[@]}"; do [[ -x $BIN/$b ]] || need+=("$b"); done
if ((${#need[@]} == 0)); then
	log "kubernetes $K8S_VERSION binaries cached in $BIN"
	exit 0
fi
mkdir -p "$BIN"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
cd "$ROOT/hack/k8s"
for b in "${need[@]}"; do
	case $b in
	etcd) pkg=go.etcd.io/etcd/server/v3 ;;
	*) pkg=k8s.io/kubernetes/cmd/$b ;;
	esac
	log "building $b ($pkg); a cold build takes minutes"
	start=$SECONDS
	go build -trimpath -ldflags "$ldflags" -o "$BIN/$b.tmp" "$pkg"
	mv "$BIN/$b.tmp" "$BIN/$b"
	log "built $b in $((SECONDS - start))s"
done
log "kubernetes $K8S_VERSION binaries ready in $BIN"
