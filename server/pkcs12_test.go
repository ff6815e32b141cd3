package server_test

import (
	"context"
	"crypto"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/micromdm/plist"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestPKCS12Enrollment: with --identity pkcs12 the profile carries the
// identity itself, protected by a one-time password in the same profile;
// openssl opens it with that password, and the identity checks in.
func TestPKCS12Enrollment(t *testing.T) {
	e := start(t, "", func(c *server.Config) { c.PushTopic = testTopic; c.Identity = "pkcs12" })
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pki.EncodeCertificatePEM(e.srv.CA().Root()), 0o600); err != nil {
		t.Fatal(err)
	}
	var tok struct{ URL string }
	if code := e.api("POST", "/api/v1/enrollment-tokens", map[string]any{"max_uses": 2}, &tok); code != http.StatusCreated {
		t.Fatalf("mint token: %d", code)
	}
	download := func() (p12 []byte, password string, mdmPayload map[string]any) {
		resp, err := e.http.Get(tok.URL)
		if err != nil {
			t.Fatal(err)
		}
		signed, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		file := filepath.Join(dir, "enroll.mobileconfig")
		if err := os.WriteFile(file, signed, 0o600); err != nil {
			t.Fatal(err)
		}
		content, err := exec.Command("openssl", "cms", "-verify", "-inform", "DER", "-in", file, "-CAfile", caFile, "-purpose", "any").Output()
		if err != nil {
			t.Fatalf("openssl cms -verify: %v", err)
		}
		var p enrollmentProfile
		if err := plist.Unmarshal(content, &p); err != nil {
			t.Fatal(err)
		}
		for _, pl := range p.PayloadContent {
			if pl["PayloadType"] == "com.apple.security.scep" {
				t.Fatal("a PKCS#12 profile carries a SCEP payload")
			}
		}
		id := p.payload(t, "com.apple.security.pkcs12")
		mdmPayload = p.payload(t, "com.apple.mdm")
		if mdmPayload["IdentityCertificateUUID"] != id["PayloadUUID"] {
			t.Fatal("MDM payload does not point at the PKCS#12 payload")
		}
		password, _ = id["Password"].(string)
		p12, _ = id["PayloadContent"].([]byte)
		if password == "" || len(p12) == 0 {
			t.Fatalf("PKCS#12 payload = %v", id)
		}
		return p12, password, mdmPayload
	}
	p12, password, _ := download()
	p12File := filepath.Join(dir, "identity.p12")
	if err := os.WriteFile(p12File, p12, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("openssl", "pkcs12", "-in", p12File, "-passin", "pass:"+password, "-noout").CombinedOutput(); err != nil {
		t.Fatalf("openssl cannot open the PKCS#12 with the profile's password: %v\n%s", err, out)
	}
	if err := exec.Command("openssl", "pkcs12", "-in", p12File, "-passin", "pass:wrong-"+password, "-noout").Run(); err == nil {
		t.Fatal("openssl opened the PKCS#12 with a wrong password")
	}
	key, cert, _, err := pkcs12.DecodeChain(p12, password)
	if err != nil {
		t.Fatal(err)
	}
	dev := sim.New(e.url, cert, key.(crypto.Signer), sim.WithRootCAs(e.roots), sim.WithTopic(testTopic))
	if err := dev.Enroll(context.Background()); err != nil {
		t.Fatalf("check-in with the PKCS#12 identity: %v", err)
	}
	// Each download carries its own identity and password.
	p12b, passwordB, _ := download()
	if passwordB == password || base64.StdEncoding.EncodeToString(p12b) == base64.StdEncoding.EncodeToString(p12) {
		t.Fatal("two downloads carried the same identity or password")
	}
}
