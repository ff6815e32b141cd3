package pki

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreateServerCert(t *testing.T) {
	ca := testCA(t)
	dir := t.TempDir()
	cert, err := LoadOrCreateServerCert(dir, []string{"mdm.example.com", "192.0.2.10", "mdm.example.com:8443"}, ca, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("server key is %T, want ECDSA", leaf.PublicKey)
	}
	for _, h := range []string{"mdm.example.com", "192.0.2.10", "localhost", "127.0.0.1"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("certificate does not cover %s: %v", h, err)
		}
	}
	if len(leaf.DNSNames) != 2 || len(leaf.IPAddresses) != 2 {
		t.Errorf("SANs: DNS %v, IP %v; want no duplicates and IPs as IP SANs", leaf.DNSNames, leaf.IPAddresses)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("lifetime %v, want a year", d)
	}
	info, err := os.Stat(filepath.Join(dir, "tls", "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("server.key mode %#o, want 0600", perm)
	}

	// A real TLS server, and a client trusting only the CA.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	for _, host := range []string{"127.0.0.1", "localhost"} {
		resp, err := client.Get("https://" + net.JoinHostPort(host, port) + "/")
		if err != nil {
			t.Fatalf("GET via %s: %v", host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok" {
			t.Errorf("body %q", body)
		}
	}
	untrusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}}
	if _, err := untrusting.Get(srv.URL); err == nil {
		t.Error("a client not trusting the CA connected")
	}
}

func TestLoadOrCreateServerCertReuse(t *testing.T) {
	ca := testCA(t)
	now := time.Now()
	clock := func() time.Time { return now }
	hosts := []string{"mdm.example.com"}

	tests := []struct {
		name   string
		hosts  []string
		later  time.Duration
		ca     *CA
		reused bool
	}{
		{"same hosts", hosts, 0, ca, true},
		{"subset of hosts", []string{"localhost"}, 0, ca, true},
		{"a new host", []string{"mdm.example.com", "other.example.com"}, 0, ca, false},
		{"in ten months", hosts, 300 * 24 * time.Hour, ca, true},
		{"within 30 days of expiry", hosts, 340 * 24 * time.Hour, ca, false},
		{"another CA", hosts, 0, testCA(t), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			first, err := LoadOrCreateServerCert(dir, hosts, ca, clock)
			if err != nil {
				t.Fatal(err)
			}
			later := func() time.Time { return now.Add(tt.later) }
			second, err := LoadOrCreateServerCert(dir, tt.hosts, tt.ca, later)
			if err != nil {
				t.Fatal(err)
			}
			if reused := first.Leaf.Equal(second.Leaf); reused != tt.reused {
				t.Errorf("reused = %v, want %v", reused, tt.reused)
			}
			third, err := LoadOrCreateServerCert(dir, tt.hosts, tt.ca, later)
			if err != nil {
				t.Fatal(err)
			}
			if !third.Leaf.Equal(second.Leaf) {
				t.Error("the certificate written was not reused")
			}
		})
	}

	t.Run("corrupt files", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := LoadOrCreateServerCert(dir, hosts, ca, clock); err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, "tls", "server.pem"), []byte("garbage"))
		c, err := LoadOrCreateServerCert(dir, hosts, ca, clock)
		if err != nil || c.Leaf == nil {
			t.Fatalf("LoadOrCreateServerCert = %v", err)
		}
	})
}

func TestLoadKeyPair(t *testing.T) {
	ca := testCA(t)
	dir := t.TempDir()
	if _, err := LoadOrCreateServerCert(dir, nil, ca, time.Now); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls", "server.pem"), filepath.Join(dir, "tls", "server.key")
	if _, err := LoadKeyPair(certFile, keyFile); err != nil {
		t.Errorf("LoadKeyPair: %v", err)
	}
	_, err := LoadKeyPair(certFile, filepath.Join(dir, "missing.key"))
	if err == nil {
		t.Fatal("loaded a missing key")
	}
	if want := "missing.key"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
}

// TestServerCertKeptAcrossRotation: after a CA rotation the certificate the
// old CA issued keeps being served, since enrolled devices trust that root.
func TestServerCertKeptAcrossRotation(t *testing.T) {
	oldCA, newCA := testCA(t), testCA(t)
	dir := t.TempDir()
	first, err := LoadOrCreateServerCert(dir, nil, oldCA, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := LoadOrCreateServerCert(dir, nil, newCA, time.Now, oldCA.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	if !kept.Leaf.Equal(first.Leaf) {
		t.Fatal("the old CA's server certificate was replaced while the old CA is still trusted")
	}
	replaced, err := LoadOrCreateServerCert(dir, nil, newCA, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if replaced.Leaf.CheckSignatureFrom(newCA.Certificate()) != nil {
		t.Fatal("without the old CA, the certificate should come from the new one")
	}
}
