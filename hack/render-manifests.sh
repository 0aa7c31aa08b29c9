#!/usr/bin/env bash
# Renders the plain manifests in deploy/ from charts/trireme, the one source
# of them, and copies the CRDs (written in deploy/crds) into the chart.
#
#   hack/render-manifests.sh          update deploy/trireme.yaml and charts/trireme/crds
#   hack/render-manifests.sh DIR      render DIR/trireme.yaml only (test/chart compares it)
#
# deploy/trireme.yaml is the chart with its default values, released as
# "trireme" in namespace trireme-system, preceded by that Namespace, except
# that the cluster CA comes from a Secret named trireme-ca that the operator
# creates (a CA written into the repository would be no secret). Install:
#   kubectl apply -f deploy/crds/ && kubectl apply -f deploy/trireme.yaml
#   trireme certs --dir ca --ca
#   kubectl -n trireme-system create secret generic trireme-ca \
#     --from-file=ca/ca-cert.pem --from-file=ca/ca-key.pem
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
	echo "# Apply deploy/crds/ first. Then create the cluster CA's Secret:"
	echo "#   trireme certs --dir ca --ca"
	echo "#   kubectl -n $namespace create secret generic trireme-ca --from-file=ca/ca-cert.pem --from-file=ca/ca-key.pem"
	echo "apiVersion: v1"
	echo "kind: Namespace"
	echo "metadata:"
	echo "  name: $namespace"
	"$helm" template "$release" charts/trireme --namespace "$namespace" --set tls.caSecret=trireme-ca
} >"$out/trireme.yaml.tmp"
mv "$out/trireme.yaml.tmp" "$out/trireme.yaml"
