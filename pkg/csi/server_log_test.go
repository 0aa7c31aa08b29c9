package csi

import (
	"bytes"
	"context"
	"flag"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"k8s.io/klog/v2"
)

// secretValue is planted in every field that may carry a secret; it must
// never reach a log line.
const secretValue = "TOPSECRET-4f1c9a"

// maxPlantDepth bounds how deep plantSecrets follows nested messages.
const maxPlantDepth = 6

// csiRequests returns a new message of every request type of the CSI
// specification, by full name.
func csiRequests(t *testing.T) map[string]proto.Message {
	t.Helper()
	reqs := map[string]proto.Message{}
	msgs := csipb.File_csi_proto.Messages()
	for i := 0; i < msgs.Len(); i++ {
		md := msgs.Get(i)
		if !strings.HasSuffix(string(md.Name()), "Request") {
			continue
		}
		reqs[string(md.FullName())] = dynamicpb.NewMessage(md).New().Interface()
	}
	if len(reqs) < 30 {
		t.Fatalf("found only %d CSI request types", len(reqs))
	}
	return reqs
}

// plantSecrets sets secretValue in every csi_secret field of m and of the
// messages reachable from it, creating those messages, and returns the
// paths of the fields it set.
func plantSecrets(m protoreflect.Message, path string, depth int) []string {
	if depth > maxPlantDepth {
		return nil
	}
	var planted []string
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		p := path + "." + string(fd.Name())
		if isSecret(fd) {
			if setSecret(m, fd) {
				planted = append(planted, p)
			}
			continue
		}
		planted = append(planted, plantNested(m, fd, p, depth)...)
	}
	return planted
}

// setSecret puts secretValue into a secret field of any shape it can
// hold a string in.
func setSecret(m protoreflect.Message, fd protoreflect.FieldDescriptor) bool {
	switch {
	case fd.IsMap() && fd.MapValue().Kind() == protoreflect.StringKind:
		mv := m.Mutable(fd).Map()
		mv.Set(protoreflect.ValueOfString("password").MapKey(), protoreflect.ValueOfString(secretValue))
		mv.Set(protoreflect.ValueOfString(secretValue).MapKey(), protoreflect.ValueOfString(secretValue))
	case fd.IsList() && fd.Kind() == protoreflect.StringKind:
		m.Mutable(fd).List().Append(protoreflect.ValueOfString(secretValue))
	case !fd.IsList() && !fd.IsMap() && fd.Kind() == protoreflect.StringKind:
		m.Set(fd, protoreflect.ValueOfString(secretValue))
	case !fd.IsList() && !fd.IsMap() && fd.Kind() == protoreflect.BytesKind:
		m.Set(fd, protoreflect.ValueOfBytes([]byte(secretValue)))
	default:
		return false
	}
	return true
}

// plantNested creates the message a non-secret field holds (one element
// of a list or map of messages) and plants secrets in it.
func plantNested(m protoreflect.Message, fd protoreflect.FieldDescriptor, path string, depth int) []string {
	if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
		return nil
	}
	if fd.IsMap() {
		if fd.MapValue().Kind() != protoreflect.MessageKind {
			return nil
		}
		mv := m.Mutable(fd).Map()
		v := mv.NewValue()
		planted := plantSecrets(v.Message(), path+"[k]", depth+1)
		if len(planted) > 0 {
			mv.Set(protoreflect.ValueOfString("k").MapKey(), v)
		}
		return planted
	}
	if fd.IsList() {
		l := m.Mutable(fd).List()
		v := l.NewElement()
		planted := plantSecrets(v.Message(), path+"[0]", depth+1)
		if len(planted) > 0 {
			l.Append(v)
		}
		return planted
	}
	if od := fd.ContainingOneof(); od != nil && m.WhichOneof(od) != nil {
		return nil // another member of the oneof already carries one
	}
	v := m.NewField(fd)
	planted := plantSecrets(v.Message(), path, depth+1)
	if len(planted) > 0 {
		m.Set(fd, v)
	}
	return planted
}

// captureKlog sends klog's text output into a buffer at verbosity v
// until the test ends.
func captureKlog(t *testing.T, v int) *lockedBuffer {
	t.Helper()
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	old := fs.Lookup("v").Value.String()
	buf := &lockedBuffer{}
	for name, value := range map[string]string{"v": strconv.Itoa(v), "logtostderr": "false",
		"alsologtostderr": "false", "stderrthreshold": "FATAL"} {
		if err := fs.Set(name, value); err != nil {
			t.Fatal(err)
		}
	}
	klog.SetOutput(buf)
	t.Cleanup(func() {
		klog.Flush()
		fs.Set("v", old)
		fs.Set("logtostderr", "true")
		klog.SetOutput(nil)
	})
	return buf
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// wantSecretFields are request types that must have had secrets planted:
// if the walk found none in them, it is broken.
var wantSecretFields = []string{
	"csi.v1.CreateVolumeRequest", "csi.v1.DeleteVolumeRequest",
	"csi.v1.ControllerPublishVolumeRequest", "csi.v1.ControllerUnpublishVolumeRequest",
	"csi.v1.ValidateVolumeCapabilitiesRequest", "csi.v1.CreateSnapshotRequest",
	"csi.v1.DeleteSnapshotRequest", "csi.v1.ListSnapshotsRequest",
	"csi.v1.ControllerExpandVolumeRequest", "csi.v1.NodeStageVolumeRequest",
	"csi.v1.NodePublishVolumeRequest", "csi.v1.NodeExpandVolumeRequest",
	"csi.v1.ControllerModifyVolumeRequest",
}

// TestNoSecretReachesTheLog plants a secret in every field of every CSI
// request type that the specification marks csi_secret, and in each
// such field of the messages they contain, runs each request through the
// controller's and the node's logging interceptors with logging at
// V(10), with a handler that succeeds and one that fails, and checks
// that the secret never appears.
func TestNoSecretReachesTheLog(t *testing.T) {
	reqs := csiRequests(t)
	names := make([]string, 0, len(reqs))
	planted := map[string][]string{}
	for name, req := range reqs {
		names = append(names, name)
		planted[name] = plantSecrets(req.ProtoReflect(), name, 0)
	}
	sort.Strings(names)
	for _, name := range wantSecretFields {
		if _, ok := reqs[name]; ok && len(planted[name]) == 0 {
			t.Errorf("no secret field found in %s", name)
		}
	}

	buf := captureKlog(t, 10)
	var nodeLines lockedBuffer
	nodeLogger := funcr.New(func(prefix, args string) { nodeLines.Write([]byte(args + "\n")) },
		funcr.Options{Verbosity: 10})
	ctx := klog.NewContext(context.Background(), nodeLogger)
	handlers := []grpc.UnaryHandler{
		func(context.Context, any) (any, error) { return nil, nil },
		func(context.Context, any) (any, error) { return nil, status.Error(codes.Internal, "failed") },
	}
	total := 0
	for _, name := range names {
		info := &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Test/" + strings.TrimSuffix(name, "Request")}
		for _, h := range handlers {
			logInterceptor()(context.Background(), reqs[name], info, h)
			nodeLogInterceptor()(ctx, reqs[name], info, h)
		}
		total += len(planted[name])
	}
	klog.Flush()
	logged := buf.String() + nodeLines.String()
	if strings.Contains(logged, secretValue) {
		for _, line := range strings.Split(logged, "\n") {
			if strings.Contains(line, secretValue) {
				t.Errorf("secret logged: %s", line)
			}
		}
	}
	if n := strings.Count(logged, "CSI request body"); n != 2*2*len(names) {
		t.Errorf("%d request bodies logged, want %d: the test did not log at V(4) and above", n, 4*len(names))
	}
	if !strings.Contains(logged, strippedValue) {
		t.Error("no stripped value in the log: the secrets were not logged as stripped")
	}
	t.Logf("%d request types, %d secret fields planted, %d bytes of log checked", len(names), total, len(logged))
}

// TestSecretFieldsOfTheSpec lists the csi_secret fields this version of
// the specification has, so that a new one shows in the test output and
// in wantSecretFields' review.
func TestSecretFieldsOfTheSpec(t *testing.T) {
	var fields []string
	msgs := csipb.File_csi_proto.Messages()
	for i := 0; i < msgs.Len(); i++ {
		fs := msgs.Get(i).Fields()
		for j := 0; j < fs.Len(); j++ {
			if isSecret(fs.Get(j)) {
				fields = append(fields, string(fs.Get(j).FullName()))
			}
		}
	}
	if len(fields) < len(wantSecretFields) {
		t.Errorf("%d csi_secret fields, want at least %d: %v", len(fields), len(wantSecretFields), fields)
	}
	for _, f := range fields {
		if !strings.HasSuffix(f, "Request.secrets") {
			t.Errorf("csi_secret field %s is not a request's secrets map: check that sanitize covers it", f)
		}
	}
	t.Logf("csi_secret fields: %s", strings.Join(fields, ", "))
}
