// Package chart holds the tests of charts/trireme, the manifests rendered
// from it into deploy/, and the image build: rendered objects checked in
// Go, helm lint, install, upgrade and uninstall against a real
// kube-apiserver, and the static, reproducible binary of `make
// image-binary`.
package chart
