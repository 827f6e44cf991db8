#!/usr/bin/env bash
# Builds the e2e control plane from published Go modules: kube-apiserver and
# kubectl from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3 (the
# version Kubernetes itself requires), and helm (helm.sh/helm/v4, its own
# module: it pins newer k8s.io libraries) to lint and render the chart. Pinned to the Kubernetes release that
# matches the k8s-openapi feature of the operator (v1_34), and cached outside
# the clone: a second run only checks that the binaries exist.
#
#   e2e/build.sh            -> prints the directory holding the four binaries
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-1.34.4}
STAGING_VERSION="v0.${K8S_VERSION#1.}"
CACHE=${DARTER_E2E_CACHE:-$HOME/.cache/darter/e2e}
BIN="$CACHE/bin-$K8S_VERSION"
export GOPATH="$CACHE/gopath" GOCACHE="$CACHE/gocache" GOFLAGS=-mod=mod GOTOOLCHAIN=local
# Stamped like release builds: the API server derives its emulation version
# (and so its feature set) from this, and kubectl refuses a missing one.
STAMP=$K8S_VERSION-ldflags-1
HELM_VERSION=${HELM_VERSION:-v4.3.2}
mkdir -p "$BIN"

build_helm() {
  [ -x "$BIN/helm" ] && [ "$(cat "$BIN/.helm-stamp" 2>/dev/null)" = "$HELM_VERSION" ] && return 0
  command -v go >/dev/null || { echo "e2e/build.sh: Go is needed to build helm" >&2; exit 1; }
  local mod="$CACHE/helm-$HELM_VERSION"
  mkdir -p "$mod"
  [ -f "$mod/go.mod" ] || printf 'module darter.dev/e2e-helm\n\ngo 1.25.0\n\nrequire helm.sh/helm/v4 %s\n' \
    "$HELM_VERSION" >"$mod/go.mod"
  echo "e2e/build.sh: building helm $HELM_VERSION (first time: a few minutes)" >&2
  (cd "$mod" && go build -trimpath -ldflags "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    -o "$BIN/helm" helm.sh/helm/v4/cmd/helm)
  echo "$HELM_VERSION" >"$BIN/.helm-stamp"
}

if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/etcd" ] && [ -x "$BIN/kubectl" ] \
  && [ "$(cat "$BIN/.stamp" 2>/dev/null)" = "$STAMP" ]; then
  build_helm
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { echo "e2e/build.sh: Go is needed to build the test control plane" >&2; exit 1; }
MOD="$CACHE/mod-$K8S_VERSION"
mkdir -p "$MOD" "$BIN"
cd "$MOD"
if [ ! -f go.mod ]; then
  # k8s.io/kubernetes points its k8s.io/* staging modules at ./staging; a
  # consumer must pin them to the matching published v0.x.y instead.
  staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
    cloud-provider cluster-bootstrap code-generator component-base component-helpers
    controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
    endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
    kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
    sample-apiserver sample-cli-plugin sample-controller)
  {
    echo "module darter.dev/e2e-tools"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do echo "	k8s.io/$m => k8s.io/$m $STAGING_VERSION"; done
    echo ")"
  } > go.mod
fi
echo "e2e/build.sh: building kube-apiserver, kubectl and etcd for Kubernetes $K8S_VERSION (first time: several minutes)" >&2
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=${K8S_VERSION%%.*}"
  ldflags+=" -X $pkg.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $pkg.gitTreeState=clean"
done
go build -trimpath -ldflags "$ldflags" -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -trimpath -ldflags "$ldflags" -o "$BIN/kubectl" k8s.io/kubernetes/cmd/kubectl
ETCD_VERSION=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
go build -trimpath -o "$BIN/etcd" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>/dev/null \
  || go build -trimpath -o "$BIN/etcd" go.etcd.io/etcd/server/v3
echo "$STAMP" > "$BIN/.stamp"
build_helm
echo "$BIN"
