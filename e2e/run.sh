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
kubectl api-resources --categories darter -o name | sort | tr '\n' ' ' | grep -c "clusters.darter.dev.*taskcaches.darter.dev" >/dev/null \
  && ok "category darter lists the resources" || bad "category darter"

echo "== good objects are accepted"
if out=$(kubectl apply -f e2e/manifests/good.yaml 2>&1); then
  ok "good objects: $(echo "$out" | wc -l) created"
else
  bad "good objects refused: $out"
fi
kubectl get dcl east -o jsonpath='{.spec.scopes.cidrs[1]}' | grep -c 'fd00::/64' >/dev/null && ok "Cluster scopes stored" || bad "Cluster scopes"
kubectl get peers | grep -c 'node-east-5.*east.*seed' >/dev/null && ok "kubectl get peers shows printer columns" || bad "peer columns: $(kubectl get peers)"

echo "== bad objects are refused, naming the field"
while IFS=$'\t' read -r want obj; do
  case "$want" in ''|'#'*) continue ;; esac
  if out=$(echo "$obj" | kubectl apply -f - 2>&1); then
    bad "accepted: $obj"
  elif echo "$out" | grep -cF "$want" >/dev/null; then
    ok "refused ($want)"
  else
    bad "refused without naming $want: $out"
  fi
done < e2e/manifests/bad.tsv

echo "== API server restart"
apiserver_restart
kubectl get peerpolicy leech-builders -o jsonpath='{.spec.uploadRateLimit}' | grep -c '100MiB/s' >/dev/null \
  && ok "objects survive an API server restart" || bad "objects lost after restart"

echo "== Helm chart: lint, render, server-side validation, least-privilege RBAC"
helm lint charts/darter >"$WORK/lint.log" 2>&1 && ok "helm lint" || bad "helm lint: $(cat "$WORK/lint.log")"
if helm template darter charts/darter --namespace darter --include-crds >"$WORK/chart.yaml" 2>"$WORK/template.log"; then
  ok "helm template renders $(grep -c '^kind:' "$WORK/chart.yaml") objects"
else
  bad "helm template: $(cat "$WORK/template.log")"
fi
kubectl create namespace darter >/dev/null
kubectl apply --dry-run=server -f "$WORK/chart.yaml" >"$WORK/dry-run.log" 2>&1 \
  && ok "the API server accepts every rendered object (server-side dry run)" || bad "dry run: $(cat "$WORK/dry-run.log")"
helm template darter charts/darter --namespace darter --set tls.secretName=darter-tls >"$WORK/chart-tls.yaml" \
  && kubectl apply --dry-run=server -f "$WORK/chart-tls.yaml" >"$WORK/dry-run-tls.log" 2>&1 \
  && grep -c 'serverName: darter' "$WORK/chart-tls.yaml" >/dev/null \
  && ok "with tls.secretName the chart mounts the certificates and passes the dry run" || bad "chart TLS: $(cat "$WORK/dry-run-tls.log")"
[ "$(grep -c 'automountServiceAccountToken: false' "$WORK/chart.yaml")" -ge 2 ] \
  && ok "agents mount no ServiceAccount token" || bad "agent token mounted"
# No kubelet here to run Pods: apply the RBAC objects and run the operator
# binary with its ServiceAccount's token, so every scenario below runs with
# exactly the chart's rights.
awk 'BEGIN { RS = "\n---" } /\nkind: (ServiceAccount|ClusterRole|ClusterRoleBinding|Role|RoleBinding)\n/ { print "---" $0 }' \
  "$WORK/chart.yaml" | kubectl apply -f - >/dev/null && ok "chart RBAC applied" || bad "chart RBAC"
SA=system:serviceaccount:darter:darter-operator
can() { [ "$(kubectl auth can-i --as="$SA" "$@" 2>/dev/null)" = yes ]; }
can patch peers && can create peers && can patch peerpolicies/status && can update leases/darter-operator -n darter \
  && ok "operator may write Peers, policy status and its Lease" || bad "operator lacks a right it needs"
! can get secrets -A && ! can create pods -n darter && ! can delete clusters.darter.dev && ! can update leases/other -n darter \
  && ! can patch nodes && ok "operator may not read Secrets, run Pods, delete Clusters, take other Leases or change Nodes" \
  || bad "operator has more rights than it needs"
[ "$(kubectl auth can-i --as=system:serviceaccount:darter:darter-agent list peers 2>/dev/null)" = no ] \
  && ok "the agents' ServiceAccount has no rights" || bad "agent SA has rights"
OPERATOR_TOKEN=$(kubectl create token darter-operator -n darter --duration 2h)
sed "s|user: {token: .*}|user: {token: $OPERATOR_TOKEN}|" "$KUBECONFIG" >"$WORK/operator.kubeconfig"

echo "== operator: agents join Clusters by scope, Peers mirror them"
cargo build -q --bins
BIN="$CARGO_TARGET_DIR/debug"
kubectl delete dcl --all >/dev/null
kubectl delete peers --all >/dev/null
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: darter.dev/v1alpha1
kind: Cluster
metadata: {name: east}
spec: {scopes: {hostnames: ["^agent-[01]$"]}}
---
apiVersion: darter.dev/v1alpha1
kind: Cluster
metadata: {name: west}
spec: {isDefault: true, scopes: {cidrs: ["127.0.1.3/32"]}}
YAML
# Mutual TLS everywhere, as the chart sets it up: one CA, one certificate
# naming "darter" shared by the operator and every agent.
mkdir -p "$WORK/tls"
(
  cd "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout ca.key -out ca.crt -subj /CN=darter-e2e-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout tls.key -out tls.csr -subj /CN=darter
  printf 'subjectAltName=DNS:darter\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n' >ext.cnf
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out tls.crt
) 2>"$WORK/tls/openssl.log" || { bad "openssl: $(cat "$WORK/tls/openssl.log")"; }
TLS_FLAGS=(--tls-ca-cert "$WORK/tls/ca.crt" --tls-cert "$WORK/tls/tls.crt" --tls-key "$WORK/tls/tls.key")
HEALTH="http://127.0.0.1:$(free_port)"
HEALTH_B="http://127.0.0.1:$(free_port)"
SCHED="127.0.0.1:$(free_port)"
# Two replicas, one Lease: only the holder binds the scheduler port.
run_operator() { # HEALTH_URL LOG
  KUBECONFIG="$WORK/operator.kubeconfig" "$BIN/darter-operator" run --listen "$SCHED" \
    --peer-write-interval 1s --announce-interval 2s --lease-namespace darter "${TLS_FLAGS[@]}" \
    --lease-duration 4s --health-listen "${1#http://}" >"$2.out" 2>"$2.log" &
}
run_operator "$HEALTH" "$WORK/operator"
OPERATOR_PID=$!
trap 'kill $OPERATOR_PID ${OPERATOR_B_PID:-} ${AGENT_PIDS:-} 2>/dev/null || true; cluster_down; rm -rf "$WORK"' EXIT
for _ in $(seq 60); do grep -q "listening on" "$WORK/operator.out" && break; sleep 0.5; done
grep -q "listening on $SCHED" "$WORK/operator.out" && ok "operator leads and serves the scheduler on $SCHED" \
  || { bad "operator did not start"; tail "$WORK/operator.log"; }
run_operator "$HEALTH_B" "$WORK/operator-b"
OPERATOR_B_PID=$!
AGENT_PIDS=""
for i in 0 1 2; do
  mkdir -p "$WORK/agent-$i"
  printf 'tls: {caCert: %s, cert: %s, key: %s, serverName: darter}\n' \
    "$WORK/tls/ca.crt" "$WORK/tls/tls.crt" "$WORK/tls/tls.key" >"$WORK/agent-$i/agent.yaml"
  "$BIN/darter-agent" --config "$WORK/agent-$i/agent.yaml" --storage-dir "$WORK/agent-$i/storage" daemon --scheduler "$SCHED" \
    --ip "127.0.1.$((i + 1))" --hostname "agent-$i" --upload-port 0 --data-port 0 \
    >"$WORK/agent-$i/out" 2>"$WORK/agent-$i/log" &
  AGENT_PIDS="$AGENT_PIDS $!"
done
wait_for() { # DESCRIPTION COMMAND...: retries for 30 s
  local what=$1; shift
  for _ in $(seq 60); do "$@" >/dev/null 2>&1 && { ok "$what"; return 0; }; sleep 0.5; done
  bad "$what"; return 1
}
peer_cluster() { kubectl get peer "127.0.1.$(($1 + 1))-agent-$1" -o jsonpath='{.spec.cluster}'; }
is_cluster() { [ "$(peer_cluster "$1")" = "$2" ]; }
wait_for "three agents became Peers" bash -c '[ "$(kubectl get peers --no-headers | wc -l)" -eq 3 ]'
if curl -sk --max-time 5 -o /dev/null "https://$SCHED/" 2>/dev/null; then
  bad "the scheduler port answered a client without a certificate"
else
  ok "mutual TLS: the scheduler port refuses a client without a certificate; agents with one joined"
fi
wait_for "agent-0 in east" is_cluster 0 east
wait_for "agent-1 in east" is_cluster 1 east
wait_for "agent-2 in west" is_cluster 2 west
cluster_peers() { [ "$(kubectl get dcl "$1" -o jsonpath='{.status.peers}')" = "$2" ]; }
wait_for "Cluster status counts east's 2 peers" cluster_peers east 2
wait_for "Cluster status counts west's 1 peer" cluster_peers west 1
kubectl get dcl -o wide | grep -c 'east.*True' >/dev/null && ok "kubectl get dcl shows Ready" || bad "dcl: $(kubectl get dcl)"
kubectl get dcl
kubectl get peers
curl -sf "$HEALTH/healthz" >/dev/null && ok "/healthz" || bad "/healthz"
curl -sf "$HEALTH/readyz" >/dev/null && ok "/readyz (Cluster objects read)" || bad "/readyz"
wait_for "/metrics counts the 3 hosts" bash -c "curl -sf $HEALTH/metrics | grep -cx 'darter_scheduler_hosts 3' >/dev/null"
curl -sf "$HEALTH/metrics" | grep -c '^darter_operator_peer_writes_total [1-9]' >/dev/null \
  && ok "/metrics counts Peer writes" || bad "/metrics: $(curl -s "$HEALTH/metrics")"

echo "== a swarm download through the operator's scheduler"
source scripts/lib/nginx.sh
mkdir -p "$WORK/www"
head -c $((24 << 20)) /dev/urandom >"$WORK/www/blob"
WANT=$(sha256sum "$WORK/www/blob" | cut -d' ' -f1)
NGINX_BYTES_LOG="$WORK/origin-bytes.log" start_nginx "$WORK/www" "$WORK/nginx"
trap 'stop_nginx; kill $OPERATOR_PID ${AGENT_PIDS:-} 2>/dev/null || true; cluster_down; rm -rf "$WORK"' EXIT
for i in 0 1; do
  "$BIN/darter" --storage-dir "$WORK/agent-$i/storage" get "http://127.0.0.1:$NGINX_PORT/blob" \
    --piece-length 4MiB --digest "sha256:$WANT" -O "$WORK/out-$i" 2>"$WORK/get-$i.log" &
done
wait_gets=0
for job in $(jobs -p | tail -n 2); do wait "$job" || wait_gets=1; done
[ "$wait_gets" -eq 0 ] && ok "both east agents got the blob, sha256 checked" || bad "swarm download failed: $(cat "$WORK"/get-*.log)"
grep -q "via daemon" "$WORK/get-0.log" && ok "darter get went through the daemon" || bad "not via daemon: $(cat "$WORK/get-0.log")"
served=$(awk '{s += $1} END {print s + 0}' "$WORK/origin-bytes.log")
[ "$served" -le $(((24 << 20) * 105 / 100)) ] && ok "origin served $served bytes for a $((24 << 20))-byte blob" \
  || bad "origin served $served bytes for $((24 << 20))"

echo "== PeerPolicy: agent-0 becomes a leech at run time"
agent_status() { "$BIN/darter" --storage-dir "$WORK/agent-$1/storage" status; }
policy_matched() { [ "$(kubectl get dpp "$1" -o jsonpath='{.status.matchedPeers}')" = "$2" ]; }
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: darter.dev/v1alpha1
kind: PeerPolicy
metadata: {name: agent-0-leech}
spec:
  selector: {hostnames: ["^agent-0$"], clusters: [east]}
  disableShared: true
  uploadRateLimit: 5MiB/s
YAML
wait_for "the policy reached agent-0 without a restart" bash -c "'$BIN/darter' --storage-dir '$WORK/agent-0/storage' status | grep -c 'policy: agent-0-leech' >/dev/null"
agent_status 0 | grep -c 'disableShared: true' >/dev/null && ok "agent-0 runs in leech mode" || bad "agent-0 status: $(agent_status 0)"
curl -sf "$HEALTH/metrics" | grep -cx 'darter_operator_agents_attached 3' >/dev/null \
  && curl -sf "$HEALTH/metrics" | grep -c '^darter_operator_settings_pushes_total [1-9]' >/dev/null \
  && ok "/metrics counts 3 command streams and the pushes" || bad "/metrics: $(curl -s "$HEALTH/metrics" | grep agents_attached)"
agent_status 0 | grep -c 'uploadRateLimit: 5MiB/s' >/dev/null && ok "agent-0 upload limit is 5MiB/s" || bad "agent-0 status: $(agent_status 0)"
agent_status 1 | grep -c 'disableShared: false' >/dev/null && ok "agent-1 is not affected" || bad "agent-1 status: $(agent_status 1)"
wait_for "Peer agent-0 shows LEECH and POLICY" bash -c "kubectl get peer 127.0.1.1-agent-0 | grep -c 'true.*agent-0-leech' >/dev/null"
wait_for "PeerPolicy status: 1 matched peer" policy_matched agent-0-leech 1
wait_for "a policy matching nobody reports 0 peers" policy_matched leech-builders 0
kubectl get dpp agent-0-leech -o jsonpath='{.status.conditions[0].status}' | grep -cx True >/dev/null \
  && ok "PeerPolicy Ready" || bad "PeerPolicy status: $(kubectl get dpp agent-0-leech -o yaml)"
kubectl get dpp agent-0-leech -o jsonpath='{.metadata.finalizers}' | grep -c 'darter.dev/revert-agent-settings' >/dev/null \
  && ok "PeerPolicy holds the finalizer" || bad "no finalizer"
wait_for "an Applied Event was recorded" bash -c "kubectl get events -n default | grep -c 'Applied.*governs 1 agent' >/dev/null"
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: darter.dev/v1alpha1
kind: PeerPolicy
metadata: {name: zero-rate}
spec: {selector: {hostnames: ["^nobody$"]}, uploadRateLimit: 0MiB/s}
YAML
wait_for "a policy the schema admits but the operator cannot apply is Ready=False with the reason" bash -c \
  "kubectl get dpp zero-rate -o jsonpath='{.status.conditions[0].status} {.status.conditions[0].message}' | grep -c '^False .*uploadRateLimit.*above zero' >/dev/null"
kubectl get events -n default | grep -c 'Invalid.*peerpolicy/zero-rate' >/dev/null && ok "an Invalid Event names it" || bad "no Invalid Event"
kubectl delete dpp zero-rate >/dev/null
kubectl get dpp
# agent-0 holds a new blob whole before agent-1 asks: the scheduler must not offer it.
head -c $((8 << 20)) /dev/urandom >"$WORK/www/blob2"
: >"$WORK/origin-bytes.log"
up_before=$(agent_status 0 | grep '^uploadedBytes:')
"$BIN/darter" --storage-dir "$WORK/agent-0/storage" get "http://127.0.0.1:$NGINX_PORT/blob2" --piece-length 1MiB \
  -O "$WORK/leech-out" 2>"$WORK/leech.log" && ok "the leech downloads" || bad "leech download: $(cat "$WORK/leech.log")"
"$BIN/darter" --storage-dir "$WORK/agent-1/storage" get "http://127.0.0.1:$NGINX_PORT/blob2" --piece-length 1MiB \
  -O "$WORK/after-leech" 2>"$WORK/after-leech.log" && cmp -s "$WORK/www/blob2" "$WORK/after-leech" \
  && ok "agent-1 got blob2 intact" || bad "agent-1 blob2: $(cat "$WORK/after-leech.log")"
[ "$(agent_status 0 | grep '^uploadedBytes:')" = "$up_before" ] && agent_status 0 | grep -cx 'refusedRequests: 0' >/dev/null \
  && ok "the scheduler never offered the leech: it served and refused nothing" || bad "leech was asked ($up_before before): $(agent_status 0)"
served=$(awk '{s += $1} END {print s + 0}' "$WORK/origin-bytes.log")
[ "$served" -ge $((2 * (8 << 20))) ] && ok "the origin served both ($served bytes): the leech's copy was not shared" \
  || bad "origin served only $served bytes"
kubectl delete dpp agent-0-leech --wait=true --timeout=30s >/dev/null && ok "deleting the policy completes (finalizer released)" \
  || bad "PeerPolicy deletion stuck: $(kubectl get dpp agent-0-leech -o yaml)"
agent_status 0 | grep -c 'disableShared: false' >/dev/null && ! agent_status 0 | grep -c 'policy:' >/dev/null \
  && ok "agent-0 is back on its own config once the policy is gone" || bad "agent-0 after delete: $(agent_status 0)"
wait_for "Peer agent-0 no longer a leech" bash -c "[ \"\$(kubectl get peer 127.0.1.1-agent-0 -o jsonpath='{.spec.disableShared}')\" = false ]"
kubectl get events -n default | grep -c 'Reverted' >/dev/null && ok "a Reverted Event was recorded" || bad "events: $(kubectl get events -n default)"
seen() { kubectl get peer 127.0.1.2-agent-1 -o jsonpath='{.status.lastSeen}'; }
# Wait until agent-1's Peer is quiet (no counter changes to write), then ask.
before=$(seen)
for _ in $(seq 10); do sleep 3; now=$(seen); [ "$now" = "$before" ] && break; before=$now; done
kubectl annotate peer 127.0.1.2-agent-1 darter.dev/refresh="$(date +%s)" --overwrite >/dev/null
wait_for "the refresh annotation forces a Peer write" bash -c "[ \"\$(kubectl get peer 127.0.1.2-agent-1 -o jsonpath='{.status.lastSeen}')\" != '$before' ]"

kubectl delete peer 127.0.1.2-agent-1 >/dev/null
wait_for "a Peer deleted by hand is written again" kubectl get peer 127.0.1.2-agent-1
# Seed peers by node label: a Node object for agent-1 (no kubelet needed).
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Node
metadata: {name: agent-1, labels: {darter.dev/seed: "true"}}
YAML
kubectl patch dcl east --type merge -p '{"spec":{"seedPeers":{"nodeSelector":{"darter.dev/seed":"true"}}}}' >/dev/null
wait_for "a labelled node's agent becomes its Cluster's seed peer" bash -c \
  "kubectl get peer 127.0.1.2-agent-1 -o jsonpath='{.spec.type}' | grep -cx seed >/dev/null"
wait_for "Cluster status counts 1 seed peer" bash -c "[ \"\$(kubectl get dcl east -o jsonpath='{.status.seedPeers}')\" = 1 ]"
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: darter.dev/v1alpha1
kind: PeerPolicy
metadata: {name: seed-uploads}
spec: {selector: {nodeSelector: {darter.dev/seed: "true"}}, uploadRateLimit: 7MiB/s}
YAML
wait_for "a PeerPolicy selects agent-1 by its Node's labels" bash -c \
  "'$BIN/darter' --storage-dir '$WORK/agent-1/storage' status | grep -c 'uploadRateLimit: 7MiB/s' >/dev/null"
kubectl delete dpp seed-uploads --wait=true --timeout=30s >/dev/null
kubectl get dcl east -o jsonpath='{.metadata.finalizers}' | grep -c 'darter.dev/replace-agents' >/dev/null \
  && ok "Clusters hold the finalizer" || bad "no Cluster finalizer"
wait_for "Cluster status counts east's tasks" bash -c '[ "$(kubectl get dcl east -o jsonpath={.status.tasks})" -ge 1 ]'
kubectl get events -n default | grep -c 'ScopesApplied' >/dev/null && ok "a ScopesApplied Event was recorded" || bad "no ScopesApplied Event"
kubectl patch dcl east --type merge -p '{"spec":{"scopes":{"hostnames":["^agent-0$"]}}}' >/dev/null
wait_for "a scope change moves agent-1 to the default cluster on its next announce" is_cluster 1 west
echo "== leader election: the standby waits, then takes over"
for _ in $(seq 20); do curl -sf "$HEALTH_B/healthz" >/dev/null && break; sleep 0.5; done
curl -sf "$HEALTH_B/healthz" >/dev/null && ok "standby replica alive" || bad "standby /healthz"
code=$(curl -s -o /dev/null -w '%{http_code}' "$HEALTH_B/readyz")
[ "$code" = 503 ] && ok "standby not ready while the other leads" || bad "standby /readyz $code"
grep -q "another replica leads" "$WORK/operator-b.log" && ok "standby waits for the Lease" || bad "standby log: $(tail -3 "$WORK/operator-b.log")"
kill -9 "$OPERATOR_PID"; wait "$OPERATOR_PID" 2>/dev/null || true
wait_for "standby took the Lease and serves the scheduler" grep -q "listening on $SCHED" "$WORK/operator-b.out"
wait_for "agents re-announced to the new leader" bash -c "curl -sf $HEALTH_B/metrics | grep -Eqx 'darter_scheduler_hosts [3-9]'"
wait_for "agents reopened their command streams to the new leader" bash -c \
  "curl -sf $HEALTH_B/metrics | grep -cx 'darter_operator_agents_attached 3' >/dev/null"
"$BIN/darter" --storage-dir "$WORK/agent-0/storage" get "http://127.0.0.1:$NGINX_PORT/blob" --piece-length 4MiB \
  -O "$WORK/again" 2>"$WORK/again.log" && grep -q "cache hit" "$WORK/again.log" \
  && ok "agents kept what they hold through the operator failover" || bad "after failover: $(cat "$WORK/again.log")"
HEALTH=$HEALTH_B
OPERATOR_PID=$OPERATOR_B_PID

echo "== API server restart with the operator running"
apiserver_restart
kubectl patch dcl west --type merge -p '{"spec":{"scopes":{"cidrs":["127.0.1.2/32","127.0.1.3/32"]}}}' >/dev/null
kubectl patch dcl east --type merge -p '{"spec":{"isDefault":true,"scopes":{"hostnames":["^agent-[02]$"]}}}' >/dev/null
kubectl patch dcl west --type merge -p '{"spec":{"isDefault":false}}' >/dev/null
wait_for "the operator's watch resumed after the restart (agent-2 moved to east)" is_cluster 2 east
kill -0 "$OPERATOR_PID" && ok "operator still running" || bad "operator exited"
kubectl delete dcl west --wait=true --timeout=30s >/dev/null && ok "deleting a Cluster completes (finalizer released)" \
  || bad "Cluster deletion stuck: $(kubectl get dcl west -o yaml)"
wait_for "the deleted Cluster's agent-1 is re-placed in east" is_cluster 1 east
kubectl get events -n default | grep -c 'AgentsReplaced.*1 agent(s) moved' >/dev/null \
  && ok "an AgentsReplaced Event was recorded" || bad "events: $(kubectl get events -n default)"
kill -TERM ${AGENT_PIDS##* }
wait_for "a host that leaves loses its Peer" bash -c '! kubectl get peer 127.0.1.3-agent-2'

echo "e2e: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
