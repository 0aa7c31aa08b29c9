#!/usr/bin/env bash
# Builds the control plane, CSI sidecars and Helm that the end-to-end tests
# start, each from its Go module at the version hack/tools/versions.env
# pins, into $TRIREME_TOOLS/<name>-<version>/<name> (default .cache/tools).
# A tool already built is skipped; each build prints how long it took.
#
# Modules whose go.mod has replace lines pointing into their own repository
# (kubernetes, etcd) are built through a small generated module that
# requires them; the others are built inside their downloaded module
# directory, with the dependency versions their go.mod and go.sum pin.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/versions.env
source hack/tools/versions.env

out=${TRIREME_TOOLS:-$PWD/.cache/tools}
work=$out/src
mkdir -p "$work"
export CGO_ENABLED=0
strip="-s -w"

log() { echo "build-tools: $*" >&2; }

have() { # have NAME VERSION
	[ -x "$out/$1-$2/$1" ]
}

# install NAME VERSION FILE moves a built binary into place; the rename keeps
# a half-written binary from ever looking built.
install_tool() {
	mkdir -p "$out/$1-$2"
	mv -f "$3" "$out/$1-$2/$1.tmp"
	mv -f "$out/$1-$2/$1.tmp" "$out/$1-$2/$1"
}

# module_dir MODULE@VERSION prints the directory go mod download put it in.
module_dir() {
	go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

module_gomod() {
	go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p'
}

# generated_module DIR MODULE VERSION writes a module in DIR that requires
# MODULE at VERSION.
generated_module() {
	mkdir -p "$1"
	cat >"$1/go.mod" <<MOD
module trireme.tools/build

go 1.26.0

require $2 $3
MOD
	rm -f "$1/go.sum"
}

build_kubernetes() {
	local v=$KUBERNETES_VERSION staging=v0.${KUBERNETES_VERSION#v1.}
	if have kube-apiserver "$v" && have kube-controller-manager "$v"; then
		return
	fi
	local start=$SECONDS dir=$work/kubernetes-$v gomod
	generated_module "$dir" k8s.io/kubernetes "$v"
	gomod=$(module_gomod "k8s.io/kubernetes@$v")
	# Every staging module kubernetes replaces with ./staging/src/k8s.io/X
	# is published as k8s.io/X at the matching v0 version.
	local m
	for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9.-]*\) => ./staging/.*#\1#p' "$gomod"); do
		go mod edit -modfile "$dir/go.mod" -replace "$m=$m@$staging"
	done
	local x="" pkg
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		x+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1"
		x+=" -X $pkg.gitMinor=$(echo "$v" | cut -d. -f2) -X $pkg.gitTreeState=clean"
	done
	(cd "$dir" && go build -mod=mod -trimpath -buildvcs=false -ldflags "$strip$x" -o "$dir/bin/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
	install_tool kube-apiserver "$v" "$dir/bin/kube-apiserver"
	install_tool kube-controller-manager "$v" "$dir/bin/kube-controller-manager"
	log "kube-apiserver and kube-controller-manager $v built in $((SECONDS - start))s"
}

build_etcd() {
	local v=$ETCD_VERSION
	have etcd "$v" && return
	local start=$SECONDS dir=$work/etcd-$v
	generated_module "$dir" go.etcd.io/etcd/server/v3 "$v"
	(cd "$dir" && go build -mod=mod -trimpath -buildvcs=false -ldflags "$strip" -o "$dir/etcd" go.etcd.io/etcd/server/v3)
	install_tool etcd "$v" "$dir/etcd"
	log "etcd $v built in $((SECONDS - start))s"
}

# build_in_module NAME MODULE VERSION PACKAGE LDFLAGS builds PACKAGE inside
# MODULE's downloaded directory.
build_in_module() {
	local name=$1 mod=$2 v=$3 pkg=$4 x=$5
	have "$name" "$v" && return
	local start=$SECONDS dir
	dir=$(module_dir "$mod@$v")
	(cd "$dir" && go build -mod=readonly -trimpath -buildvcs=false -ldflags "$strip $x" -o "$work/$name-$v" "$pkg")
	install_tool "$name" "$v" "$work/$name-$v"
	log "$name $v built in $((SECONDS - start))s"
}

total=$SECONDS
build_etcd
build_kubernetes
build_in_module csi-provisioner github.com/kubernetes-csi/external-provisioner/v6 \
	"$CSI_PROVISIONER_VERSION" ./cmd/csi-provisioner "-X main.version=$CSI_PROVISIONER_VERSION"
build_in_module csi-attacher github.com/kubernetes-csi/external-attacher/v4 \
	"$CSI_ATTACHER_VERSION" ./cmd/csi-attacher "-X main.version=$CSI_ATTACHER_VERSION"
build_in_module csi-resizer github.com/kubernetes-csi/external-resizer/v2 \
	"$CSI_RESIZER_VERSION" ./cmd/csi-resizer "-X main.version=$CSI_RESIZER_VERSION"
build_in_module helm helm.sh/helm/v4 "$HELM_VERSION" ./cmd/helm \
	"-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
log "all tools ready in $out ($((SECONDS - total))s)"
