package scep

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/pki"
)

// TestScepclient enrolls with a real SCEP client: micromdm's scepclient
// (Debian package scep). It sends single DES and SHA-1 whatever GetCACaps
// offers, signs PKCSReq with a transient self-signed certificate, and
// RenewalReq with the certificate it holds.
func TestScepclient(t *testing.T) {
	bin, err := exec.LookPath("scepclient")
	if err != nil {
		t.Skip("scepclient not installed (apt-get install scep)")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	ca, issued := testCA(t)
	challenges := &memChallenges{}
	challenges.add("one-time-1", Challenge{Subject: "device-1", Source: "test", ExpiresAt: time.Now().Add(time.Hour)})
	renewals := &memRenewals{}
	logs := &syncBuffer{}
	obs := &observations{}
	s := New(ca, challenges, WithRenewals(renewals), WithObserver(obs.observe),
		WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	mux := http.NewServeMux()
	mux.Handle("/scep", s.Handler())
	srv := httptest.NewServer(mux) // 127.0.0.1 only
	defer srv.Close()

	tmp := t.TempDir()
	caFile := filepath.Join(tmp, "ca.pem")
	interFile := filepath.Join(tmp, "intermediate.pem")
	writeFile(t, caFile, pki.EncodeCertificatePEM(ca.Root()))
	writeFile(t, interFile, pki.EncodeCertificatePEM(ca.Certificate()))
	run := func(dir string, args ...string) (string, error) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		args = append([]string{"-server-url", srv.URL + "/scep", "-private-key", filepath.Join(dir, "key.pem")}, args...)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		t.Logf("scepclient %s\n%s", strings.Join(args, " "), out)
		return string(out), err
	}
	verify := func(cert string) {
		t.Helper()
		out, err := exec.Command("openssl", "verify", "-purpose", "sslclient", "-CAfile", caFile, "-untrusted", interFile, cert).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Errorf("openssl verify %s: %v\n%s", cert, err, out)
		}
	}

	// Enroll with the one-time challenge.
	dirA := filepath.Join(tmp, "a")
	if _, err := run(dirA, "-challenge", "one-time-1", "-cn", "device-1"); err != nil {
		t.Fatalf("enrollment failed: %v", err)
	}
	certA := filepath.Join(dirA, "client.pem")
	verify(certA)
	if got := obs.last(); got != [2]string{"PKCSReq", "issued"} {
		t.Errorf("observed %v", got)
	}
	if !strings.Contains(logs.String(), "cipher=des-cbc") {
		t.Errorf("scepclient's cipher not logged as des-cbc:\n%s", logs)
	}
	if n := issued.count(); n != 1 {
		t.Fatalf("%d certificates issued, want 1", n)
	}

	// The same challenge again, and a wrong one: refused, no certificate.
	for _, tt := range []struct{ dir, challenge, outcome string }{
		{"b", "one-time-1", "challenge_invalid"},
		{"c", "not-a-challenge", "challenge_invalid"},
		{"d", "", "challenge_missing"},
	} {
		dir := filepath.Join(tmp, tt.dir)
		args := []string{"-cn", "device-1"}
		if tt.challenge != "" {
			args = append(args, "-challenge", tt.challenge)
		}
		out, err := run(dir, args...)
		if err == nil {
			t.Errorf("challenge %q: scepclient succeeded", tt.challenge)
		}
		if !strings.Contains(out, "failInfo: badRequest") {
			t.Errorf("challenge %q: scepclient did not report a badRequest CertRep", tt.challenge)
		}
		if _, err := os.Stat(filepath.Join(dir, "client.pem")); err == nil {
			t.Errorf("challenge %q: got a certificate", tt.challenge)
		}
		if got := obs.last(); got != [2]string{"PKCSReq", tt.outcome} {
			t.Errorf("challenge %q: observed %v, want %s", tt.challenge, got, tt.outcome)
		}
	}
	if n := issued.count(); n != 1 {
		t.Fatalf("%d certificates issued, want 1", n)
	}

	// Renew: with a certificate in hand scepclient sends a RenewalReq
	// signed by it (same key: it does not re-key).
	old, err := os.ReadFile(certA)
	if err != nil {
		t.Fatal(err)
	}
	oldCert, err := pki.ParseCertificatePEM(old)
	if err != nil {
		t.Fatal(err)
	}
	renewals.bind(oldCert, "UDID-A")
	if _, err := run(dirA, "-certificate", certA, "-cn", "device-1"); err != nil {
		t.Fatalf("renewal failed: %v", err)
	}
	renewed, err := os.ReadFile(certA)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(renewed, old) {
		t.Fatal("scepclient kept the old certificate")
	}
	verify(certA)
	newCert, err := pki.ParseCertificatePEM(renewed)
	if err != nil {
		t.Fatal(err)
	}
	if device, ok := renewals.issuedTo(newCert); !ok || device != "UDID-A" {
		t.Errorf("renewal recorded for %q (%v), want UDID-A", device, ok)
	}
	if got := obs.last(); got != [2]string{"RenewalReq", "renewed"} {
		t.Errorf("observed %v", got)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
