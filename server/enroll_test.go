package server_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

const testTopic = "com.apple.mgmt.External.bramley-test"

// enrollmentProfile is the part of a downloaded profile the test reads.
type enrollmentProfile struct {
	PayloadIdentifier string
	PayloadContent    []map[string]any
}

func (p enrollmentProfile) payload(t *testing.T, payloadType string) map[string]any {
	t.Helper()
	for _, pl := range p.PayloadContent {
		if pl["PayloadType"] == payloadType {
			return pl
		}
	}
	t.Fatalf("profile has no %s payload", payloadType)
	return nil
}

// TestDirectEnrollment is the enrollment-profiles acceptance test, as a
// new user would run it: mint a token, download the profile, verify it with
// openssl, enroll with Debian's scepclient using the profile's challenge,
// and check in with the issued certificate; the challenge and the token
// cannot be used again.
func TestDirectEnrollment(t *testing.T) {
	if _, err := exec.LookPath("scepclient"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("scepclient (Debian package scep) is not installed")
		}
		t.Skip("scepclient not installed")
	}
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := start(t, db(t), func(c *server.Config) { c.PushTopic = testTopic })
			dir := t.TempDir()
			caFile := filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(caFile, pki.EncodeCertificatePEM(e.srv.CA().Root()), 0o600); err != nil {
				t.Fatal(err)
			}

			var tok struct{ Token, URL string }
			if code := e.api("POST", "/api/v1/enrollment-tokens", map[string]any{"max_uses": 1, "expires_in": "1h"}, &tok); code != http.StatusCreated {
				t.Fatalf("mint token: %d", code)
			}
			resp, err := e.http.Get(tok.URL)
			if err != nil {
				t.Fatal(err)
			}
			signed, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-apple-aspen-config" {
				t.Fatalf("profile download: %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), signed)
			}

			// openssl verifies the signature against bramley's root.
			profileFile := filepath.Join(dir, "enroll.mobileconfig")
			if err := os.WriteFile(profileFile, signed, 0o600); err != nil {
				t.Fatal(err)
			}
			verify := func(file string) ([]byte, error) {
				return exec.Command("openssl", "cms", "-verify", "-inform", "DER", "-in", file,
					"-CAfile", caFile, "-purpose", "any").Output()
			}
			content, err := verify(profileFile)
			if err != nil {
				t.Fatalf("openssl cms -verify: %v", err)
			}
			tampered := []byte(string(signed))
			i := strings.Index(string(tampered), "com.apple.mdm")
			tampered[i] ^= 0x01
			if err := os.WriteFile(profileFile+".bad", tampered, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := verify(profileFile + ".bad"); err == nil {
				t.Fatal("openssl verified a profile with a changed byte")
			}

			var p enrollmentProfile
			if err := plist.Unmarshal(content, &p); err != nil {
				t.Fatal(err)
			}
			mdmPayload := p.payload(t, "com.apple.mdm")
			if mdmPayload["Topic"] != testTopic || mdmPayload["ServerURL"] != e.url+"/mdm/connect" || mdmPayload["CheckInURL"] != e.url+"/mdm/checkin" {
				t.Fatalf("MDM payload = %v", mdmPayload)
			}
			scepPayload := p.payload(t, "com.apple.security.scep")
			if mdmPayload["IdentityCertificateUUID"] != scepPayload["PayloadUUID"] {
				t.Fatal("MDM payload does not point at the SCEP payload")
			}
			sc := scepPayload["PayloadContent"].(map[string]any)
			challenge, _ := sc["Challenge"].(string)
			cn := sc["Subject"].([]any)[0].([]any)[0].([]any)[1].(string)
			if sc["URL"] != e.url+"/scep" || challenge == "" || cn == "" {
				t.Fatalf("SCEP payload = %v", sc)
			}

			// Debian's scepclient, trusting bramley's root for TLS.
			// scepclient writes the issued certificate to client.pem in
			// its working directory.
			issued := filepath.Join(dir, "client.pem")
			scepclient := func(keyName, challenge string) ([]byte, error) {
				_ = os.Remove(issued)
				cmd := exec.Command("scepclient", "-server-url", e.url+"/scep", "-private-key", filepath.Join(dir, keyName),
					"-challenge", challenge, "-cn", cn, "-keySize", "2048")
				cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+caFile)
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				if err == nil {
					_, err = os.Stat(issued)
				}
				return out, err
			}
			if out, err := scepclient("device.key", challenge); err != nil {
				t.Fatalf("scepclient: %v\n%s", err, out)
			}
			cert, key := readIdentity(t, issued, filepath.Join(dir, "device.key"))
			if cert.Subject.CommonName != cn {
				t.Fatalf("issued certificate subject %q, want %q", cert.Subject.CommonName, cn)
			}
			dev := sim.New(e.url, cert, key, sim.WithRootCAs(e.roots), sim.WithTopic(testTopic))
			if err := dev.Enroll(context.Background()); err != nil {
				t.Fatalf("check-in with the SCEP identity: %v", err)
			}

			// The challenge is spent, and so is the token.
			if _, err := scepclient("again.key", challenge); err == nil {
				t.Fatal("the same challenge issued a second certificate")
			}
			resp, err = e.http.Get(tok.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusGone {
				t.Fatalf("used-up token: %d, want 410", resp.StatusCode)
			}
		})
	}
}

// TestEnrollWithoutTopic: with no push topic bramley explains what is
// missing and spends no use of the token.
func TestEnrollWithoutTopic(t *testing.T) {
	e := start(t, "", nil)
	var tok struct{ URL string }
	if code := e.api("POST", "/api/v1/enrollment-tokens", map[string]any{"max_uses": 1}, &tok); code != http.StatusCreated {
		t.Fatalf("mint token: %d", code)
	}
	for range 2 {
		resp, err := e.http.Get(tok.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "push certificate") {
			t.Fatalf("without a topic: %d %s", resp.StatusCode, body)
		}
	}
	resp, err := e.http.Get(strings.Replace(tok.URL, "token=", "token=x", 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("unknown token without a topic: %d", resp.StatusCode)
	}
}

func readIdentity(t *testing.T, certFile, keyFile string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCertificatePEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		block, _ := pem.Decode(keyPEM)
		t.Fatalf("key %s: %v", block.Type, err)
	}
	return cert, key
}
