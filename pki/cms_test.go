package pki

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/smallstep/pkcs7"
)

func TestSignDetached(t *testing.T) {
	ca := testCA(t)
	cert, key := testClient(t, ca)
	body := []byte("<?xml version=\"1.0\"?>\n<plist><dict><key>Status</key><string>Idle</string></dict></plist>\n")

	sig, err := SignDetached(body, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	der, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		t.Fatalf("not base64: %v", err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(p7.Content) != 0 {
		t.Error("signature is not detached: it carries the content")
	}
	if signer := p7.GetOnlySigner(); signer == nil || !signer.Equal(cert) {
		t.Error("signer certificate not included")
	}

	dir := t.TempDir()
	caFile, sigFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "sig.der")
	// The identity's issuer is the intermediate, which needs its root.
	writePEM(t, caFile, append(EncodeCertificatePEM(ca.Root()), EncodeCertificatePEM(ca.Certificate())...))
	writePEM(t, sigFile, der)
	verify := func(content []byte) ([]byte, error) {
		contentFile := filepath.Join(dir, "body")
		if err := os.WriteFile(contentFile, content, 0o600); err != nil {
			t.Fatal(err)
		}
		return exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER",
			"-in", sigFile, "-content", contentFile, "-CAfile", caFile, "-purpose", "any",
			"-out", os.DevNull).CombinedOutput()
	}
	if out, err := verify(body); err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", err, out)
	}
	altered := []byte(string(body))
	altered[len(altered)/2] ^= 0x01
	if out, err := verify(altered); err == nil {
		t.Errorf("openssl verified the signature over an altered body:\n%s", out)
	}
}
