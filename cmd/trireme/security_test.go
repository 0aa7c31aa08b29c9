package main

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// TestServersRefuseToStartWithoutASecurityMode runs the server commands
// with neither, both or a wrong mix of the security and listen flags:
// each refuses before it opens anything.
func TestServersRefuseToStartWithoutASecurityMode(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"controller neither", []string{"controller", "--db", dir + "/c.db"}, "pass --tls-dir DIR"},
		{"controller both", []string{"controller", "--insecure", "--tls-dir", dir}, "exclude each other"},
		{"controller every interface", []string{"controller", "--insecure", "--listen-address", "0.0.0.0"}, "every interface"},
		{"controller missing certificate", []string{"controller", "--tls-dir", dir, "--db", dir + "/c.db"}, "trireme certs --dir"},
		{"node neither", []string{"node", "--node-id", "n1", "--data-dir", dir}, "pass --tls-dir DIR"},
		{"node both", []string{"node", "--node-id", "n1", "--data-dir", dir, "--insecure", "--tls-dir", dir}, "exclude each other"},
		{"node every interface", []string{"node", "--node-id", "n1", "--data-dir", dir, "--insecure", "--listen-address", "::"}, "every interface"},
		{"node missing certificate", []string{"node", "--node-id", "n1", "--data-dir", dir, "--tls-dir", dir}, "trireme certs --dir"},
		{"controller CSI over TCP", []string{"controller", "--tls-dir", dir, "--db", dir + "/c.db", "--endpoint", "tcp://127.0.0.1:7799"}, "no authentication"},
		{"node CSI over TCP", []string{"node", "--node-id", "n1", "--data-dir", dir, "--tls-dir", dir, "--csi-endpoint", "tcp://127.0.0.1:7799"}, "no authentication"},
		{"volumes neither", []string{"volumes"}, "pass --tls-dir DIR"},
		{"volumes both", []string{"volumes", "--insecure", "--tls-dir", dir}, "exclude each other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(tc.args, io.Discard, io.Discard)
			if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run %q: %v, want an error saying %q", tc.args, err, tc.want)
			}
		})
	}
}

func TestAllowAllInterfacesAdmitsTheUnspecifiedAddress(t *testing.T) {
	for _, addr := range []string{"0.0.0.0", "::"} {
		if err := (&listenFlags{allowAll: true}).check(addr); err != nil {
			t.Errorf("%s with --allow-all-interfaces: %v", addr, err)
		}
	}
	if err := (&listenFlags{}).check("127.0.0.5"); err != nil {
		t.Errorf("127.0.0.5: %v", err)
	}
}
