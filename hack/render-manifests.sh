#!/usr/bin/env bash
# Renders the plain manifests in deploy/ from charts/trireme, the one source
# of them, and copies the CRDs (written in deploy/crds) into the chart.
#
#   hack/render-manifests.sh          update deploy/trireme.yaml and charts/trireme/crds
#   hack/render-manifests.sh DIR      render DIR/trireme.yaml only (test/chart compares it)
#
# deploy/trireme.yaml is the chart with its default values, released as
# "trireme" in namespace trireme-system, preceded by that Namespace. Install:
#   kubectl apply -f deploy/crds/ && kubectl apply -f deploy/trireme.yaml
# Helm comes from hack/build-tools.sh (make tools), or $HELM.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/versions.env
source hack/tools/versions.env

release=trireme
namespace=trireme-system
helm=${HELM:-${TRIREME_TOOLS:-$PWD/.cache/tools}/helm-$HELM_VERSION/helm}
if [ ! -x "$helm" ]; then
	echo "render-manifests: $helm is not built; run make tools" >&2
	exit 1
fi

out=${1:-deploy}
if [ $# -eq 0 ]; then
	rm -f charts/trireme/crds/*.yaml
	cp deploy/crds/*.yaml charts/trireme/crds/
fi

mkdir -p "$out"
{
	echo "# Rendered from charts/trireme by hack/render-manifests.sh; do not edit."
	echo "# Apply deploy/crds/ first."
	echo "apiVersion: v1"
	echo "kind: Namespace"
	echo "metadata:"
	echo "  name: $namespace"
	"$helm" template "$release" charts/trireme --namespace "$namespace"
} >"$out/trireme.yaml.tmp"
mv "$out/trireme.yaml.tmp" "$out/trireme.yaml"
