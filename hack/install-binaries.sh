#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules into a cache directory
# outside the work tree, so every clone on this machine reuses one build.
#
#   KUBELOCK_BIN_DIR   use binaries already there (etcd, kube-apiserver, ...); build nothing
#   KUBEBUILDER_ASSETS same, as set by setup-envtest (only etcd/kube-apiserver/kubectl are
#                      expected there; the rest is built if missing)
#   KUBELOCK_CACHE_DIR where to build (default: ${XDG_CACHE_HOME:-~/.cache}/kubelock)
#
# Prints the directory that holds the binaries on its last line.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.21.4}

want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kwok helm)

have_all() {
  local dir=$1 b
  for b in "${want[@]}"; do [[ -x "$dir/$b" ]] || return 1; done
  [[ -d "$dir/kwok-stages" ]] || return 1
}

if [[ -n "${KUBELOCK_BIN_DIR:-}" ]]; then
  have_all "$KUBELOCK_BIN_DIR" || { echo "KUBELOCK_BIN_DIR=$KUBELOCK_BIN_DIR lacks one of: ${want[*]} kwok-stages/" >&2; exit 1; }
  echo "$KUBELOCK_BIN_DIR"; exit 0
fi

cache=${KUBELOCK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelock}
bin="$cache/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
if have_all "$bin"; then echo "$bin"; exit 0; fi
mkdir -p "$bin"
log() { echo "[install-binaries] $*" >&2; }

# Every clone on the machine shares this cache, so one builds and the others wait for it: clones
# started together would otherwise each run the same 7-minute build on the same cores, into the
# same files. The lock is released when this script exits.
if command -v flock >/dev/null; then
  exec 9>"$cache/build.lock"
  if ! flock -n 9; then
    log "another build into $cache is running; waiting for it"
    flock 9
  fi
  if have_all "$bin"; then echo "$bin"; exit 0; fi
fi

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
work="$cache/build"
mkdir -p "$work"

# Binaries from setup-envtest: link what is there, build the rest.
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in etcd kube-apiserver kubectl; do
    [[ -x "$KUBEBUILDER_ASSETS/$b" && ! -e "$bin/$b" ]] && ln -s "$KUBEBUILDER_ASSETS/$b" "$bin/$b"
  done
fi

# A throw-away module that replaces every "=> ./staging" (or "=> ../") module of $1@$2
# with the published module of version $3, so that the commands of $1 can be built.
wrapper_module() {
  local dir=$1 mod=$2 ver=$3 staged_ver=$4 gomod
  mkdir -p "$dir"
  gomod=$(cd "$dir" && go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  {
    echo "module kubelock.dev/build/$(basename "$dir")"
    echo
    echo "go 1.26"
    echo
    echo "require $mod $ver"
    echo
    sed -n 's/^[[:space:]]*\([^[:space:]]*\) => \.\{1,2\}\/.*$/\1/p' "$gomod" | sort -u |
      while read -r m; do echo "replace $m => $m $staged_ver"; done
  } > "$dir/go.mod"
  log "$mod $ver: $(grep -c '^replace' "$dir/go.mod") replaced modules"
}

# One module, one build: the node's kubelet, kube-scheduler and kube-proxy share kube-apiserver's
# dependencies, so adding them costs little once the apiserver is built.
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
missing=()
for c in "${k8s_cmds[@]}"; do [[ -x "$bin/$c" ]] || missing+=("$c"); done
if (( ${#missing[@]} )); then
  log "building ${missing[*]} $K8S_VERSION"
  d="$work/kubernetes-$K8S_VERSION"
  wrapper_module "$d" k8s.io/kubernetes "$K8S_VERSION" "v0.${K8S_VERSION#v1.}"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  cmds=("${missing[@]/#/k8s.io/kubernetes/cmd/}")
  (cd "$d" && go get "${cmds[@]/%/@$K8S_VERSION}" >&2 &&
    go build -tags selinux,notest -ldflags "$ldflags" -o "$bin/" "${cmds[@]}")
fi

if [[ ! -x "$bin/etcd" ]]; then
  log "building etcd $ETCD_VERSION"
  d="$work/etcd-$ETCD_VERSION"
  wrapper_module "$d" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION"
  (cd "$d" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 &&
    go build -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
fi

if [[ ! -x "$bin/kwok" ]]; then
  log "building kwok $KWOK_VERSION"
  GOBIN="$bin" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
if [[ ! -d "$bin/kwok-stages" ]]; then
  src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  mkdir -p "$bin/kwok-stages"
  # Only the node and pod stages; *.input.yaml/*.output.yaml beside them are kwok's own test fixtures.
  find "$src" -path '*fast*' \( -name 'node-*.yaml' -o -name 'pod-*.yaml' \) \
    ! -name '*.input.yaml' ! -name '*.output.yaml' -exec cp {} "$bin/kwok-stages/" \;
  chmod u+w "$bin"/kwok-stages/*
fi

if [[ ! -x "$bin/helm" ]]; then
  log "building helm $HELM_VERSION"
  hv=helm.sh/helm/v3
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  GOBIN="$bin" go install -ldflags "-s -w -X $hv/internal/version.version=$HELM_VERSION -X $hv/pkg/chartutil.k8sVersionMajor=1 -X $hv/pkg/chartutil.k8sVersionMinor=$minor" \
    "$hv/cmd/helm@$HELM_VERSION"
fi

have_all "$bin" || { log "incomplete build in $bin"; exit 1; }
echo "$bin"
