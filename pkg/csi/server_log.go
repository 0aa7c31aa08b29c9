package csi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/klog/v2"
)

// strippedValue replaces every secret in logged requests.
const strippedValue = "***stripped***"

// requestIDs numbers the RPCs of this process; the prefix tells processes
// apart in merged logs.
type requestIDs struct {
	prefix string
	next   atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [4]byte
	rand.Read(b[:]) // never fails: see crypto/rand.Read
	return &requestIDs{prefix: hex.EncodeToString(b[:])}
}

func (r *requestIDs) newID() string {
	return fmt.Sprintf("%s-%d", r.prefix, r.next.Add(1))
}

// logInterceptor logs every RPC with a request id, the volume it concerns
// and its outcome; the request itself, secrets stripped, at V(4). Probes
// and capability queries are logged at V(4) only.
func logInterceptor() grpc.UnaryServerInterceptor {
	ids := newRequestIDs()
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		id, start := ids.newID(), time.Now()
		level := logLevel(info.FullMethod)
		keys := []any{"requestID", id, "method", info.FullMethod, "volume", volumeOf(req)}
		klog.V(level).InfoS("CSI request", keys...)
		klog.V(4).InfoS("CSI request body", "requestID", id, "request", sanitize(req))
		resp, err := handler(ctx, req)
		keys = append(keys, "code", status.Code(err), "duration", time.Since(start))
		if err != nil {
			klog.V(level).InfoS("CSI request failed", append(keys, "err", status.Convert(err).Message())...)
			return resp, err
		}
		klog.V(level).InfoS("CSI request done", keys...)
		return resp, nil
	}
}

func logLevel(method string) klog.Level {
	if strings.HasSuffix(method, "/Probe") || strings.Contains(method, "Capabilities") ||
		strings.HasSuffix(method, "/GetPluginInfo") {
		return 4
	}
	return 0
}

// volumeOf is the volume id a request names, or its name for CreateVolume.
func volumeOf(req any) string {
	if r, ok := req.(interface{ GetVolumeId() string }); ok {
		return r.GetVolumeId()
	}
	if r, ok := req.(*csipb.CreateVolumeRequest); ok {
		return "name:" + r.GetName()
	}
	return ""
}

// sanitize renders a request as JSON with every field the CSI spec marks
// csi_secret replaced by strippedValue.
func sanitize(req any) string {
	m, ok := req.(proto.Message)
	if !ok {
		return fmt.Sprint(req)
	}
	m = proto.Clone(m)
	stripSecrets(m.ProtoReflect())
	b, err := protojson.Marshal(m)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// stripSecrets replaces secret fields of m, and of the messages in it.
func stripSecrets(m protoreflect.Message) {
	var secrets []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if isSecret(fd) {
			secrets = append(secrets, fd)
			return true
		}
		stripNested(fd, v)
		return true
	})
	for _, fd := range secrets {
		stripField(m, fd)
	}
}

func stripNested(fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch {
	case fd.IsMap():
		if fd.MapValue().Kind() == protoreflect.MessageKind {
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				stripSecrets(mv.Message())
				return true
			})
		}
	case fd.IsList():
		if fd.Kind() == protoreflect.MessageKind {
			for i := 0; i < v.List().Len(); i++ {
				stripSecrets(v.List().Get(i).Message())
			}
		}
	case fd.Kind() == protoreflect.MessageKind:
		stripSecrets(v.Message())
	}
}

// stripField replaces a secret: a non-empty string map becomes a single
// stripped entry (its keys are part of the secret: a key can be a token),
// a string is stripped, anything else is cleared.
func stripField(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
	switch {
	case fd.IsMap() && fd.MapKey().Kind() == protoreflect.StringKind &&
		fd.MapValue().Kind() == protoreflect.StringKind:
		if m.Get(fd).Map().Len() == 0 {
			return
		}
		m.Clear(fd)
		m.Mutable(fd).Map().Set(protoreflect.ValueOfString(strippedValue).MapKey(),
			protoreflect.ValueOfString(strippedValue))
	case !fd.IsList() && !fd.IsMap() && fd.Kind() == protoreflect.StringKind:
		m.Set(fd, protoreflect.ValueOfString(strippedValue))
	default:
		m.Clear(fd)
	}
}

func isSecret(fd protoreflect.FieldDescriptor) bool {
	opts := fd.Options()
	if opts == nil {
		return false
	}
	secret, _ := proto.GetExtension(opts, csipb.E_CsiSecret).(bool)
	return secret
}
