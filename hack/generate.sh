#!/usr/bin/env bash
# Regenerates the Go code for the protobuf API in api/ into pkg/api/.
#
# Needs protoc (Debian: protobuf-compiler). The Go plugins are installed
# into .cache/bin at pinned versions: protoc-gen-go matches the protobuf
# runtime in go.mod.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

PROTOC_GEN_GO_GRPC_VERSION="${PROTOC_GEN_GO_GRPC_VERSION:-v1.5.1}"
protobuf_version="$(go list -m -f '{{.Version}}' google.golang.org/protobuf)"

export GOBIN="$root/.cache/bin"
export PATH="$GOBIN:$PATH"

if ! command -v protoc >/dev/null; then
	echo "protoc not found: install protobuf-compiler" >&2
	exit 1
fi

go install "google.golang.org/protobuf/cmd/protoc-gen-go@${protobuf_version}"
go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"

protoc \
	--proto_path=api \
	--go_out=. --go_opt=module=github.com/trireme-csi/trireme \
	--go-grpc_out=. --go-grpc_opt=module=github.com/trireme-csi/trireme \
	api/trireme/v1/node.proto
