package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/trireme-csi/trireme/internal/atomicfile"
)

// Files in a certificate directory. The CA's pair sits at the top; each
// component has a subdirectory laid out as GnuTLS clients expect it
// (qemu's tls-creds-x509 dir, libnbd's tls-certificates), so an
// operator's tools can use a component directory as it is.
const (
	CACertFile     = "ca-cert.pem"
	CAKeyFile      = "ca-key.pem"
	ServerCertFile = "server-cert.pem"
	ServerKeyFile  = "server-key.pem"
	ClientCertFile = "client-cert.pem"
	ClientKeyFile  = "client-key.pem"
)

// File and directory modes. Keys are readable by their owner only.
const (
	keyMode  fs.FileMode = 0o600
	certMode fs.FileMode = 0o644
	dirMode  fs.FileMode = 0o700
)

// ComponentDir is the subdirectory of a certificate directory that holds
// one identity's files: controller, node-<id>, frontend-<id>, admin-<name>.
func ComponentDir(dir string, p Peer) string {
	if p.Name == "" {
		return filepath.Join(dir, string(p.Role))
	}
	return filepath.Join(dir, string(p.Role)+"-"+p.Name)
}

// WriteCA writes a new CA's certificate and key into dir, creating it.
// It refuses to replace an existing CA key: every certificate issued
// from it would stop being trusted.
func WriteCA(dir string, ca *CA) error {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return fmt.Errorf("%s: %w", dir, ErrCAExists)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	if err := writeFile(dir, CAKeyFile, key, keyMode); err != nil {
		return err
	}
	return writeFile(dir, CACertFile, ca.CertPEM(), certMode)
}

// LoadCA reads the CA's certificate and key from dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CACertFile, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CAKeyFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", CACertFile)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// WriteLeaf writes an issued certificate into its component directory
// under dir, with the CA certificate beside it, and returns that
// directory. Serving roles get the server pair as well as the client
// pair. Existing files are replaced, so that renewing is issuing again.
func WriteLeaf(dir string, ca *CA, leaf *Leaf) (string, error) {
	p, err := PeerOf(leaf.Cert)
	if err != nil {
		return "", err
	}
	key, err := leaf.KeyPEM()
	if err != nil {
		return "", err
	}
	cdir := ComponentDir(dir, p)
	if err := os.MkdirAll(cdir, dirMode); err != nil {
		return "", err
	}
	files := []pemFile{
		{CACertFile, ca.CertPEM(), certMode},
		{ClientKeyFile, key, keyMode},
		{ClientCertFile, leaf.CertPEM(), certMode},
	}
	if Serves(p.Role) {
		files = append(files, pemFile{ServerKeyFile, key, keyMode},
			pemFile{ServerCertFile, leaf.CertPEM(), certMode})
	}
	for _, f := range files {
		if err := writeFile(cdir, f.name, f.data, f.mode); err != nil {
			return "", err
		}
	}
	return cdir, nil
}

// pemFile is one file of a component directory.
type pemFile struct {
	name string
	data []byte
	mode fs.FileMode
}

// Load reads a component directory: the CA certificate and the
// component's pair, the server pair where there is one.
func Load(cdir string) (*Bundle, error) {
	caPEM, err := os.ReadFile(filepath.Join(cdir, CACertFile))
	if err != nil {
		return nil, err
	}
	ca, err := parseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CACertFile, err)
	}
	pair, err := loadPair(cdir)
	if err != nil {
		return nil, err
	}
	self, err := PeerOf(pair.Leaf)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &Bundle{Roots: roots, Cert: pair, Self: self}, nil
}

// loadPair reads the server pair of a component directory, or else its
// client pair.
func loadPair(cdir string) (tls.Certificate, error) {
	for _, names := range [][2]string{{ServerCertFile, ServerKeyFile}, {ClientCertFile, ClientKeyFile}} {
		pair, err := tls.LoadX509KeyPair(filepath.Join(cdir, names[0]), filepath.Join(cdir, names[1]))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("%s: %w", cdir, err)
		}
		return pair, nil
	}
	return tls.Certificate{}, fmt.Errorf("%s: %w", cdir, ErrMissingComponent)
}

// writeFile replaces dir/name atomically with data, with the given mode
// whatever the umask.
func writeFile(dir, name string, data []byte, mode fs.FileMode) error {
	return atomicfile.Write(filepath.Join(dir, name), data, mode)
}
