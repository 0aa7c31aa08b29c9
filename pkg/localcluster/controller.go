package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/certs"
)

// Controller is a running `trireme controller` process: CSI Identity and
// Controller services on a unix socket, the internal API (node registry)
// on a loopback address, and an embedded store.
type Controller struct {
	// Socket is the path of the CSI unix socket.
	Socket string
	// APIAddress is host:port of the internal API node agents register
	// with.
	APIAddress string
	// DBPath is the embedded store's file.
	DBPath string
	// Conn is a client connection to the CSI services on Socket.
	Conn *grpc.ClientConn
	// TLS is the certificate directory the controller runs with, Dir/tls.
	TLS *TLS

	proc *process
}

// StartController launches a controller with its store, socket, log and
// certificates (dir/tls, see OpenTLS) under dir and its internal API on ip, and waits until its CSI Identity
// service answers a probe.
func StartController(ctx context.Context, binary, dir, ip string) (*Controller, error) {
	ports, err := freePorts(ip, 1)
	if err != nil {
		return nil, err
	}
	c := &Controller{
		Socket:     filepath.Join(dir, "csi", "controller.sock"),
		APIAddress: net.JoinHostPort(ip, strconv.Itoa(ports[0])),
		DBPath:     filepath.Join(dir, "controller", "controller.db"),
	}
	if err := os.MkdirAll(filepath.Dir(c.Socket), 0o700); err != nil {
		return nil, fmt.Errorf("start controller: %w", err)
	}
	if c.TLS, err = OpenTLS(tlsDir(dir)); err != nil {
		return nil, err
	}
	if err := c.TLS.Issue(ControllerPeer); err != nil {
		return nil, err
	}
	args := []string{"controller", "--endpoint", "unix://" + c.Socket, "--db", c.DBPath,
		"--listen-address", ip, "--api-port", strconv.Itoa(ports[0]), "--tls-dir", c.TLS.Dir}
	if c.proc, err = spawn("controller", binary, args, filepath.Join(dir, "controller.log")); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		c.Stop(time.Second)
		return nil, err
	}
	klog.V(2).InfoS("Started controller", "api", c.APIAddress, "socket", c.Socket, "pid", c.PID())
	return c, nil
}

// waitReady dials the CSI socket and probes until the controller answers.
func (c *Controller) waitReady(ctx context.Context) error {
	var err error
	if c.Conn, err = DialUnix(c.Socket); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	identity := csipb.NewIdentityClient(c.Conn)
	for {
		_, err := identity.Probe(ctx, &csipb.ProbeRequest{})
		if err == nil {
			return nil
		}
		select {
		case <-c.proc.done:
			return fmt.Errorf("controller failed to start: %w", c.proc.exitError())
		case <-ctx.Done():
			return fmt.Errorf("controller not ready: %w", errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PID returns the controller's process id.
func (c *Controller) PID() int { return c.proc.pid() }

// LogPath returns the file holding the controller's output.
func (c *Controller) LogPath() string { return c.proc.logPath }

// Stop closes the client connection and stops the controller with
// SIGTERM, killing it if it is not gone within grace.
func (c *Controller) Stop(grace time.Duration) error {
	if c.Conn != nil {
		c.Conn.Close()
	}
	return c.proc.terminate(grace)
}

// DialUnix returns a gRPC client connection to the unix socket at path,
// as the CSI sidecars and the kubelet make them. It connects lazily.
func DialUnix(path string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", path, err)
	}
	return conn, nil
}

// DialRegistry returns a client of the controller's Registry service
// that presents the harness's operator certificate (AdminPeer).
func (c *Controller) DialRegistry() (*api.RegistryClient, error) {
	creds, err := c.TLS.DialOption(AdminPeer, certs.RoleController)
	if err != nil {
		return nil, err
	}
	return api.DialRegistry(c.APIAddress, creds)
}
