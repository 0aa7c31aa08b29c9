package certs

import (
	"crypto/x509"
	"net/url"
	"testing"
)

// FuzzIdentity feeds Identity the URI SANs a peer's certificate may
// carry. Whatever it accepts must name a known role and a valid name,
// and must be exactly the identity URI of that role and name: no two
// spellings of one identity, and nothing around it.
func FuzzIdentity(f *testing.F) {
	for _, s := range []string{"trireme://node/n1", "trireme://controller", "trireme://frontend/a.b_c-d",
		"trireme://admin/x", "trireme://node/", "trireme://node/a/b", "trireme://Node/n1", "trireme://node/n%31",
		"trireme://node/n1#x", "trireme://u@node/n1", "trireme:node/n1", "TRIREME://node/n1"} {
		f.Add(s, "")
	}
	f.Add("trireme://node/n1", "trireme://node/n2")
	f.Fuzz(func(t *testing.T, first, second string) {
		cert := &x509.Certificate{}
		for _, s := range []string{first, second} {
			if u, err := url.Parse(s); err == nil && s != "" {
				cert.URIs = append(cert.URIs, u)
			}
		}
		role, name, err := Identity(cert)
		if err != nil {
			return
		}
		if checkName(role, name) != nil {
			t.Fatalf("accepted %q/%q from %q, %q", role, name, first, second)
		}
		want, err := URI(role, name)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, u := range cert.URIs {
			if u.Scheme != URIScheme {
				continue
			}
			found++
			if u.String() != want.String() {
				t.Fatalf("accepted %q as %s", u, want)
			}
		}
		if found != 1 {
			t.Fatalf("accepted a certificate with %d trireme URIs", found)
		}
	})
}
