#!/usr/bin/env bash
# demo.sh: bring up a one-node lab, start pods x/a x/b x/c, and show the
# reachability matrix before a NetworkPolicy, with it, and after deleting it.
# The lab is removed at the end (also on failure).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PALISADE_BIN_DIR:-$ROOT/bin}
K8S_BIN=${PALISADE_K8S_BIN:-$("$ROOT/hack/bootstrap.sh" --print-bin)}
DIR=${PALISADE_DEMO_DIR:-/tmp/palisade-demo}
LAB=("$BIN/palisade-lab")

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() { step "lab down"; "${LAB[@]}" down --dir "$DIR"; }
trap cleanup EXIT

step "lab up (1 node)"
"${LAB[@]}" up --nodes 1 --dir "$DIR" --bin-dir "$BIN" --k8s-bin-dir "$K8S_BIN"
eval "$("${LAB[@]}" env --dir "$DIR")"

step "pods x/a x/b x/c"
kubectl apply -f "$ROOT/docs/demo/pods.yaml"
kubectl wait --for=condition=Ready pod --all -n x --timeout=120s
"${LAB[@]}" pods --dir "$DIR"

probe() { "${LAB[@]}" probe --dir "$DIR" --namespaces x --port 80 --protocol TCP; }

# wait_for MODE MATRIX polls the probe until its output differs from (MODE
# "not") or equals (MODE "is") MATRIX. Policy realization takes well under a
# second; give up after 20 s.
wait_for() {
	local mode=$1 ref=$2 out
	for _ in $(seq 1 40); do
		out=$(probe)
		if [[ $mode == is && $out == "$ref" ]] || [[ $mode == not && $out != "$ref" ]]; then
			echo "$out"
			return 0
		fi
		sleep 0.5
	done
	echo "$out"
	echo "demo: the matrix did not change as expected within 20s" >&2
	return 1
}

step "reachability on TCP 80 before any policy (rows: from, columns: to; . allowed, X blocked)"
open=$(probe)
echo "$open"

step "kubectl apply -f docs/demo/policy.yaml   # x/b accepts TCP 80 from x/a only"
cat "$ROOT/docs/demo/policy.yaml"
kubectl apply -f "$ROOT/docs/demo/policy.yaml"
step "reachability with the policy"
wait_for not "$open"

step "flows of the node (ovs-ofctl dump-flows --names, policy tables)"
ovsdir="$DIR/nodes/node1/ovs"
ip netns exec plab-node1 ovs-ofctl -O OpenFlow15 --names --no-stats dump-flows "unix:$ovsdir/br-int.mgmt" table=IngressRule
ip netns exec plab-node1 ovs-ofctl -O OpenFlow15 --names --no-stats dump-flows "unix:$ovsdir/br-int.mgmt" table=IngressDefault

step "kubectl delete -f docs/demo/policy.yaml"
kubectl delete -f "$ROOT/docs/demo/policy.yaml"
step "reachability after deleting the policy"
wait_for is "$open"
