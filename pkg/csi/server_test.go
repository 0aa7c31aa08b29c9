package csi

import (
	"context"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
)

func TestSanitizeStripsSecrets(t *testing.T) {
	req := &csipb.CreateVolumeRequest{
		Name:       "pvc-1",
		Secrets:    map[string]string{"password": "hunter2"},
		Parameters: map[string]string{"replicas": "3"},
	}
	got := sanitize(req)
	if strings.Contains(got, "hunter2") || strings.Contains(got, "password") ||
		!strings.Contains(got, `"secrets":{"***stripped***":"***stripped***"}`) ||
		!strings.Contains(got, `"replicas":"3"`) {
		t.Errorf("sanitize = %s", got)
	}
	if req.Secrets["password"] != "hunter2" {
		t.Error("sanitize changed the request")
	}
	nested := &csipb.NodeStageVolumeRequest{VolumeId: "v", Secrets: map[string]string{"key": "s3cret"}}
	if got := sanitize(nested); strings.Contains(got, "s3cret") {
		t.Errorf("sanitize = %s", got)
	}
}

func TestListenReplacesStaleSocketWithPrivateOne(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "csi.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // leaves the socket file behind, as a killed process would

	l, err := Listen("unix://" + path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}

	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, nil, 0o600)
	if _, err := Listen("unix://" + regular); err == nil {
		t.Error("Listen replaced a regular file")
	}
}

func TestServeStopsGracefully(t *testing.T) {
	path := filepath.Join(t.TempDir(), "csi.sock")
	l, err := Listen("unix://" + path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewGRPCServer()
	csipb.RegisterIdentityServer(s, &IdentityServer{Version: "test", Controller: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, s, l) }()

	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id := csipb.NewIdentityClient(conn)
	info, err := id.GetPluginInfo(context.Background(), &csipb.GetPluginInfoRequest{})
	if err != nil || info.GetName() != DriverName || info.GetVendorVersion() != "test" {
		t.Fatalf("GetPluginInfo = %v, %v", info, err)
	}
	caps, err := id.GetPluginCapabilities(context.Background(), &csipb.GetPluginCapabilitiesRequest{})
	if err != nil || len(caps.GetCapabilities()) != 3 ||
		caps.GetCapabilities()[2].GetVolumeExpansion().GetType() != csipb.PluginCapability_VolumeExpansion_ONLINE {
		t.Fatalf("GetPluginCapabilities = %v, %v; want the controller service, topology and online expansion", caps, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop")
	}
}

func TestEveryRPCIsLoggedWithRequestAndVolume(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	klog.LogToStderr(false)
	klog.SetOutput(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}))
	defer func() {
		klog.SetOutput(os.Stderr)
		klog.LogToStderr(true)
	}()
	var v klog.Level
	v.Set("4")
	defer v.Set("0")

	interceptor := logInterceptor()
	req := &csipb.DeleteVolumeRequest{VolumeId: "vol-1", Secrets: map[string]string{"token": "s3cret"}}
	info := &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Controller/DeleteVolume"}
	interceptor(context.Background(), req, info, func(context.Context, any) (any, error) {
		return &csipb.DeleteVolumeResponse{}, nil
	})
	klog.Flush()

	mu.Lock()
	out := buf.String()
	mu.Unlock()
	for _, want := range []string{`"CSI request" requestID=`, `volume="vol-1"`, `"CSI request done"`, `code="OK"`, strippedValue} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("log shows the secret:\n%s", out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
