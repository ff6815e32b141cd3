package push

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/pki"
)

func needOpenSSL(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
}

func openssl(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestNewPushCSR(t *testing.T) {
	needOpenSSL(t)
	keyPEM, csrPEM, err := NewPushCSR()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "csr.pem"), csrPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := openssl(t, dir, "req", "-in", "csr.pem", "-verify", "-noout"); err != nil {
		t.Fatalf("openssl req -verify: %v\n%s", err, out)
	}
	key, err := pki.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok || rk.N.BitLen() != 2048 {
		t.Fatalf("key is %T, want RSA 2048", key)
	}
	block, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !rk.PublicKey.Equal(csr.PublicKey) {
		t.Error("the request is not for the returned key")
	}
}

// vendorPKI is a stand-in for Apple's root, its WWDR intermediate and an
// MDM vendor's "MDM CSR" certificate.
type vendorPKI struct {
	root, wwdr, vendor *x509.Certificate
	vendorKey          *rsa.PrivateKey
}

func newVendorPKI(t *testing.T) vendorPKI {
	rootKey, wwdrKey, vendorKey := rsaKey(t), rsaKey(t), rsaKey(t)
	root := mintCA(t, "Apple Root CA", rootKey)
	now := time.Now()
	wwdr := mintCert(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "Apple Worldwide Developer Relations Certification Authority"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
	}, root, wwdrKey.Public(), rootKey)
	vendor := mintCert(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "MDM Vendor: bramley test"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}, wwdr, vendorKey.Public(), wwdrKey)
	return vendorPKI{root: root, wwdr: wwdr, vendor: vendor, vendorKey: vendorKey}
}

func TestVendorSign(t *testing.T) {
	needOpenSSL(t)
	v := newVendorPKI(t)
	unrelated := mintCA(t, "Someone Else's CA", rsaKey(t))
	_, csrPEM, err := NewPushCSR()
	if err != nil {
		t.Fatal(err)
	}
	// The chain comes root first and with a stray certificate: VendorSign
	// must still write vendor, intermediate, root.
	chainPEM := bytes.Join([][]byte{pki.EncodeCertificatePEM(v.root), pki.EncodeCertificatePEM(unrelated),
		pki.EncodeCertificatePEM(v.wwdr)}, nil)
	out, err := VendorSign(csrPEM, pki.EncodeCertificatePEM(v.vendor), keyPEM(t, v.vendorKey), chainPEM)
	if err != nil {
		t.Fatal(err)
	}

	doc, err := base64.StdEncoding.DecodeString(string(out))
	if err != nil {
		t.Fatalf("output is not base64: %v", err)
	}
	var keys map[string]any
	if err := plist.Unmarshal(doc, &keys); err != nil {
		t.Fatalf("output is not a base64 plist: %v", err)
	}
	if len(keys) != 3 {
		t.Errorf("plist has keys %v, want exactly PushCertRequestCSR, PushCertCertificateChain, PushCertSignature", keys)
	}
	var req pushCertRequest
	if err := plist.Unmarshal(doc, &req); err != nil {
		t.Fatal(err)
	}
	csrDER, err := base64.StdEncoding.DecodeString(req.PushCertRequestCSR)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(csrPEM)
	if !bytes.Equal(csrDER, block.Bytes) {
		t.Error("PushCertRequestCSR is not the request's DER")
	}
	sig, err := base64.StdEncoding.DecodeString(req.PushCertSignature)
	if err != nil {
		t.Fatal(err)
	}

	chain, err := pki.ParseCertificatesPEM([]byte(req.PushCertCertificateChain))
	if err != nil {
		t.Fatal(err)
	}
	want := []*x509.Certificate{v.vendor, v.wwdr, v.root}
	if len(chain) != len(want) {
		t.Fatalf("chain has %d certificates, want vendor, intermediate, root", len(chain))
	}
	for i := range want {
		if !chain[i].Equal(want[i]) {
			t.Errorf("chain[%d] = %s, want %s", i, chain[i].Subject.CommonName, want[i].Subject.CommonName)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(req.PushCertCertificateChain), "\n") {
		if len(line) > 64 {
			t.Errorf("PEM line of %d characters: Apple wants at most 64", len(line))
		}
	}

	// The check Apple's portal makes, done by openssl.
	dir := t.TempDir()
	pub, err := x509.MarshalPKIXPublicKey(v.vendor.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"vendor_pub.pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		"sig.bin":        sig,
		"csr.der":        csrDER,
		"tampered.der":   append(bytes.Clone(csrDER[:len(csrDER)-1]), csrDER[len(csrDER)-1]^1),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	outp, err := openssl(t, dir, "dgst", "-sha256", "-verify", "vendor_pub.pem", "-signature", "sig.bin", "csr.der")
	if err != nil || !strings.Contains(outp, "Verified OK") {
		t.Errorf("openssl did not verify the signature: %v\n%s", err, outp)
	}
	if outp, err := openssl(t, dir, "dgst", "-sha256", "-verify", "vendor_pub.pem", "-signature", "sig.bin", "tampered.der"); err == nil {
		t.Errorf("openssl verified the signature over a different request:\n%s", outp)
	}
}

func TestVendorSignRefuses(t *testing.T) {
	v := newVendorPKI(t)
	_, csrPEM, err := NewPushCSR()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(csrPEM)
	tampered := bytes.Clone(block.Bytes)
	tampered[len(tampered)-1] ^= 1 // breaks the request's self-signature
	vendorPEM, vendorKey := pki.EncodeCertificatePEM(v.vendor), keyPEM(t, v.vendorKey)
	full := append(pki.EncodeCertificatePEM(v.wwdr), pki.EncodeCertificatePEM(v.root)...)

	tests := []struct {
		name                  string
		csr, cert, key, chain []byte
		want                  string
	}{
		{"no request", []byte("nothing"), vendorPEM, vendorKey, full, "no PEM certificate request"},
		{"tampered request", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), vendorPEM, vendorKey, full, "signature"},
		{"key of someone else", csrPEM, vendorPEM, keyPEM(t, rsaKey(t)), full, "does not belong"},
		{"no root", csrPEM, vendorPEM, vendorKey, pki.EncodeCertificatePEM(v.wwdr), "Apple root"},
		{"no intermediate", csrPEM, vendorPEM, vendorKey, pki.EncodeCertificatePEM(v.root), "WWDR intermediate"},
		{"empty chain", csrPEM, vendorPEM, vendorKey, nil, "vendor chain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VendorSign(tt.csr, tt.cert, tt.key, tt.chain)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
