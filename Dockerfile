# Trireme's image: the trireme binary, built static, on Debian slim with the
# tools the node plugin runs (mkfs and fsck for ext4 and xfs, mount, losetup,
# blkid). Image names carry no registry host: the builder resolves them.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t trireme/trireme .

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
# The same step as `make image-binary`, which the tests check is static and
# reproducible.
RUN make image-binary VERSION=$VERSION IMAGE_BINARY=/out/trireme

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends e2fsprogs xfsprogs mount util-linux \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/trireme /usr/bin/trireme
ENTRYPOINT ["/usr/bin/trireme"]
