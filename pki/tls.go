package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

const (
	serverCertLifetime = 365 * 24 * time.Hour
	// serverCertRenewBefore renews a generated server certificate this long
	// before it expires, so a server restarted now and then never serves an
	// expired one.
	serverCertRenewBefore = 30 * 24 * time.Hour
)

// LoadOrCreateServerCert returns the HTTPS certificate bramley generates for
// itself when the operator gives none: <dataDir>/tls/server.pem and
// server.key, issued by the CA's intermediate and served with it (devices
// trust the root through the enrollment profile). The files are reused while
// they parse, chain to this CA's root,
// cover hosts and do not expire within 30 days; otherwise a new ECDSA P-256
// certificate is issued for hosts plus localhost and 127.0.0.1.
//
// A certificate chaining to one of the previous roots (rotated out) is kept
// while it lasts: enrolled devices trust only the root their profile
// carried, and would stop reaching bramley the moment its certificate came
// from a root they have not been given yet.
func LoadOrCreateServerCert(dataDir string, hosts []string, ca *CA, now func() time.Time, previous ...*x509.Certificate) (tls.Certificate, error) {
	dir := filepath.Join(dataDir, "tls")
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	hosts = serverHosts(hosts)
	if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && serverCertUsable(c, hosts, append([]*x509.Certificate{ca.Root()}, previous...), ca.Certificate(), now()) {
		return c, nil
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating server key: %w", err)
	}
	t := now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		NotBefore:   t.Add(-backdate),
		NotAfter:    t.Add(serverCertLifetime),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, err := ca.issue(tmpl, key.Public())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issuing server certificate: %w", err)
	}
	keyPEM, err := EncodePrivateKeyPEM(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	// The chain served: the leaf and, below the root, the intermediate.
	var certPEM []byte
	for _, c := range append([]*x509.Certificate{cert}, ca.Chain()...) {
		if !c.Equal(ca.Root()) {
			certPEM = append(certPEM, EncodeCertificatePEM(c)...)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("creating TLS directory: %w", err)
	}
	// The key goes first: a crash in between leaves a new key with an old
	// certificate, which fails to load and is replaced next start.
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileAtomic(certFile, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// serverHosts returns hosts without duplicates or ports, with localhost and
// 127.0.0.1 added so local tools and health checks always verify.
func serverHosts(hosts []string) []string {
	var out []string
	for _, h := range append(slices.Clone(hosts), "localhost", "127.0.0.1") {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// serverCertUsable reports whether c chains to one of roots, through the
// intermediates its file holds or intermediate (a certificate from before
// bramley had an intermediate was issued by the root itself), for hosts,
// with 30 days or more left.
func serverCertUsable(c tls.Certificate, hosts []string, roots []*x509.Certificate, intermediate *x509.Certificate, now time.Time) bool {
	leaf := c.Leaf
	if leaf == nil {
		return false
	}
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	opts.Intermediates.AddCert(intermediate)
	for _, der := range c.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			return false
		}
		opts.Intermediates.AddCert(ic)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return false
	}
	if now.Before(leaf.NotBefore) || now.Add(serverCertRenewBefore).After(leaf.NotAfter) {
		return false
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// writeFileAtomic replaces path with data, so a reader never sees half a file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	err = errors.Join(err, tmp.Chmod(perm), tmp.Sync(), tmp.Close())
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// LoadKeyPair loads the operator's TLS certificate and key (--tls-cert,
// --tls-key), with an error naming both files.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loading TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return c, nil
}
