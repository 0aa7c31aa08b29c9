module github.com/trireme-csi/trireme

go 1.26.8

require (
	github.com/go-logr/logr v1.4.4
	golang.org/x/sys v0.50.0
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
	k8s.io/klog/v2 v2.140.0
)

require (
	github.com/container-storage-interface/spec v1.14.0 // indirect
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
)
