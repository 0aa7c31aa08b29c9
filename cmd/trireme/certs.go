package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/trireme-csi/trireme/pkg/certs"
)

// listFlag is a flag that may be repeated or given a comma-separated
// list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// certsFlags are the flags of trireme certs.
type certsFlags struct {
	dir        string
	caDir      string
	ca         bool
	node       string
	frontend   string
	admin      string
	controller bool
	ips        listFlag
	dnsNames   listFlag
	validity   time.Duration
}

func runCerts(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("certs", stderr)
	var f certsFlags
	fs.StringVar(&f.dir, "dir", "", "certificate directory: the CA at its top, each component in a subdirectory (required)")
	fs.BoolVar(&f.ca, "ca", false, "create the cluster CA in --dir (refuses to replace one)")
	fs.StringVar(&f.caDir, "ca-dir", "", "read the CA from this directory instead of --dir, so that its key need not sit beside the certificates issued (a Kubernetes Secret mounted read-only)")
	fs.StringVar(&f.node, "node", "", "issue a node agent's certificate for this node id")
	fs.BoolVar(&f.controller, "controller", false, "issue the controller's certificate")
	fs.StringVar(&f.frontend, "frontend", "", "issue a frontend's (NBD client's) certificate for this node id")
	fs.StringVar(&f.admin, "admin", "", "issue an operator tool's certificate (NBD backups) under this name")
	fs.Var(&f.ips, "ip", "IP address the component serves on, for clients that check host names (repeatable)")
	fs.Var(&f.dnsNames, "dns", "DNS name the component serves on (repeatable)")
	fs.DurationVar(&f.validity, "validity", 0, "how long the certificate is valid (default: 10 years for the CA, 1 year otherwise)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: trireme certs --dir D (--ca | --node ID | --controller | --frontend ID | --admin NAME) [flags]

Creates the cluster CA, or issues a certificate from it. Each certificate
names its holder in a URI SAN (trireme://node/ID, trireme://controller,
trireme://frontend/ID, trireme://admin/NAME) and is written, with the CA
certificate, to its own subdirectory of D: ca-cert.pem, client-cert.pem
and client-key.pem, plus server-cert.pem and server-key.pem for the
controller and nodes. qemu (tls-creds-x509 dir=) and libnbd
(tls-certificates=) read such a directory as it is. Keys are mode 0600.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if f.dir == "" {
		fmt.Fprintln(stderr, "trireme certs: --dir is required")
		fs.Usage()
		return errUsage
	}
	req, err := f.request()
	if err != nil {
		fmt.Fprintln(stderr, "trireme certs:", err)
		fs.Usage()
		return errUsage
	}
	if f.ca {
		if f.caDir != "" {
			fmt.Fprintln(stderr, "trireme certs: --ca-dir is for issuing; --ca creates the CA in --dir")
			return errUsage
		}
		return createCA(f.dir, f.validity, stdout)
	}
	return issueCert(f.dir, cmp.Or(f.caDir, f.dir), req, stdout)
}

// request returns what to issue, checking that exactly one kind was asked.
func (f *certsFlags) request() (certs.Request, error) {
	var req certs.Request
	kinds := 0
	if f.ca {
		kinds++
	}
	for _, k := range []struct {
		set  bool
		role certs.Role
		name string
	}{
		{f.node != "", certs.RoleNode, f.node},
		{f.controller, certs.RoleController, ""},
		{f.frontend != "", certs.RoleFrontend, f.frontend},
		{f.admin != "", certs.RoleAdmin, f.admin},
	} {
		if k.set {
			kinds++
			req.Role, req.Name = k.role, k.name
		}
	}
	if kinds != 1 {
		return req, errors.New("give exactly one of --ca, --node, --controller, --frontend and --admin")
	}
	for _, s := range f.ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return req, fmt.Errorf("--ip %q is not an IP address", s)
		}
		req.IPs = append(req.IPs, ip)
	}
	req.DNSNames, req.Validity = f.dnsNames, f.validity
	return req, nil
}

func createCA(dir string, validity time.Duration, stdout io.Writer) error {
	ca, err := certs.NewCA("Trireme cluster CA", validity)
	if err != nil {
		return err
	}
	if err := certs.WriteCA(dir, ca); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created CA in %s (valid until %s)\n", dir, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func issueCert(dir, caDir string, req certs.Request, stdout io.Writer) error {
	ca, err := certs.LoadCA(caDir)
	if err != nil {
		return fmt.Errorf("load CA (create it with --ca): %w", err)
	}
	leaf, err := ca.Issue(req)
	if err != nil {
		return err
	}
	cdir, err := certs.WriteLeaf(dir, ca, leaf)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "issued %s in %s (valid until %s)\n", leaf.Cert.URIs[0], cdir,
		leaf.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
