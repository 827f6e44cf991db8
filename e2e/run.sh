#!/usr/bin/env bash
# The e2e suite on a real kube-apiserver + etcd (built by e2e/build.sh from Go
# modules, cached): the CRDs install and become Established; good objects are
# accepted; each bad object is refused by `kubectl apply` with a message naming
# the field; the objects survive an API server restart. Exits non-zero on any
# failure; ends with one line `e2e: N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/env.sh
source e2e/lib/cluster.sh
ensure_packages openssl curl
command -v python3 >/dev/null || ensure_packages python3
WORK=$(mktemp -d /tmp/darter-e2e.XXXXXX)
trap 'cluster_down; rm -rf "$WORK"' EXIT
pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

echo "== control plane"
cluster_up "$WORK/cluster"
kubectl version -o yaml | grep -E 'gitVersion' | head -2

echo "== CRDs"
kubectl apply -f crds/generated/ >/dev/null
if kubectl wait --for condition=established --timeout=60s crd --all >/dev/null; then
  ok "all $(ls crds/generated | wc -l) CRDs established"
else
  bad "CRDs not established"
fi
for kind in clusters peerpolicies peers preheatjobs taskcaches; do
  kubectl get "$kind" -A >/dev/null 2>&1 && ok "kubectl get $kind" || bad "kubectl get $kind"
done
kubectl api-resources --categories darter -o name | sort | tr '\n' ' ' | grep -q "clusters.darter.dev.*taskcaches.darter.dev" \
  && ok "category darter lists the resources" || bad "category darter"

echo "== good objects are accepted"
if out=$(kubectl apply -f e2e/manifests/good.yaml 2>&1); then
  ok "good objects: $(echo "$out" | wc -l) created"
else
  bad "good objects refused: $out"
fi
kubectl get dcl east -o jsonpath='{.spec.scopes.cidrs[1]}' | grep -q 'fd00::/64' && ok "Cluster scopes stored" || bad "Cluster scopes"
kubectl get peers | grep -q 'node-east-5.*east.*seed' && ok "kubectl get peers shows printer columns" || bad "peer columns: $(kubectl get peers)"

echo "== bad objects are refused, naming the field"
while IFS=$'\t' read -r want obj; do
  case "$want" in ''|'#'*) continue ;; esac
  if out=$(echo "$obj" | kubectl apply -f - 2>&1); then
    bad "accepted: $obj"
  elif echo "$out" | grep -qF "$want"; then
    ok "refused ($want)"
  else
    bad "refused without naming $want: $out"
  fi
done < e2e/manifests/bad.tsv

echo "== API server restart"
apiserver_restart
kubectl get peerpolicy leech-builders -o jsonpath='{.spec.uploadRateLimit}' | grep -q '100MiB/s' \
  && ok "objects survive an API server restart" || bad "objects lost after restart"

echo "e2e: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
