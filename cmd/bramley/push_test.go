package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/micromdm/plist"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/push"
	"github.com/bramley-mdm/bramley/storage/sqlite"
)

const testTopic = "com.apple.mgmt.External.2c2c5a1e-3b8f-4e0c-9a7e-1f1d3b5c7a90"

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// mint issues tmpl for pub, signed by parent's key (self-signed when parent
// is nil).
func mint(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour)
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keyPEM(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	b, err := pki.EncodePrivateKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// pushCert returns a push certificate shaped like Apple's (topic in the
// subject UID) and its key.
func pushCert(t *testing.T) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key := rsaKey(t)
	cert := mint(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "APSP:test", ExtraNames: []pkix.AttributeTypeAndValue{
			{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, Value: testTopic},
		}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, nil, key.Public(), key)
	return cert, key
}

// pushCertFiles writes a push certificate and key as PEM files.
func pushCertFiles(t *testing.T) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	cert, key := pushCert(t)
	dir := t.TempDir()
	return writeFile(t, dir, "cert.pem", pki.EncodeCertificatePEM(cert)), writeFile(t, dir, "push.key", keyPEM(t, key)), cert
}

func TestPushCSR(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "push")
	out, err := bramley(t, envOf(nil), "push", "csr", "--out", dir)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, csrFile := filepath.Join(dir, "push.key"), filepath.Join(dir, "push.csr")
	info, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("push.key has mode %#o, want 0600", info.Mode().Perm())
	}
	keyData, _ := os.ReadFile(keyFile)
	csrData, _ := os.ReadFile(csrFile)
	key, err := pki.ParsePrivateKeyPEM(keyData)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(csrData)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("push.csr is not a PEM certificate request:\n%s", csrData)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("request signature: %v", err)
	}
	if !key.Public().(*rsa.PublicKey).Equal(csr.PublicKey) {
		t.Error("push.csr is not a request for push.key")
	}
	if !strings.Contains(out, "push cert upload") {
		t.Errorf("output does not say what comes next:\n%s", out)
	}

	// A second run keeps the key that pairs with the first request.
	_, err = bramley(t, envOf(nil), "push", "csr", "--out", dir)
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second run: err = %v, want a refusal", err)
	}
	if again, _ := os.ReadFile(keyFile); !bytes.Equal(again, keyData) {
		t.Error("push.key was overwritten")
	}
}

func TestPushVendorSign(t *testing.T) {
	// Stand-ins for Apple's root, its WWDR intermediate and a vendor's
	// "MDM CSR" certificate.
	rootKey, wwdrKey, vendorKey := rsaKey(t), rsaKey(t), rsaKey(t)
	root := mint(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Apple Root CA"},
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}, nil, rootKey.Public(), rootKey)
	wwdr := mint(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Apple Worldwide Developer Relations Certification Authority"},
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}, root, wwdrKey.Public(), rootKey)
	vendor := mint(t, &x509.Certificate{Subject: pkix.Name{CommonName: "MDM Vendor: bramley test"},
		KeyUsage: x509.KeyUsageDigitalSignature}, wwdr, vendorKey.Public(), wwdrKey)

	dir := t.TempDir()
	if _, err := bramley(t, envOf(nil), "push", "csr", "--out", dir); err != nil {
		t.Fatal(err)
	}
	csrFile := filepath.Join(dir, "push.csr")
	vendorFile := writeFile(t, dir, "vendor.pem", pki.EncodeCertificatePEM(vendor))
	vendorKeyFile := writeFile(t, dir, "vendor.key", keyPEM(t, vendorKey))
	chainFile := writeFile(t, dir, "chain.pem", append(pki.EncodeCertificatePEM(root), pki.EncodeCertificatePEM(wwdr)...))
	outFile := filepath.Join(dir, "request.b64")

	out, err := bramley(t, envOf(nil), "push", "vendor-sign", "--csr", csrFile, "--vendor-cert", vendorFile,
		"--vendor-key", vendorKeyFile, "--vendor-chain", chainFile, "--out", outFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "identity.apple.com") {
		t.Errorf("output does not say where the request goes:\n%s", out)
	}
	written, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(written)))
	if err != nil {
		t.Fatalf("the request is not base64: %v", err)
	}
	var req struct {
		PushCertRequestCSR       string
		PushCertCertificateChain string
		PushCertSignature        string
	}
	if err := plist.Unmarshal(doc, &req); err != nil {
		t.Fatal(err)
	}
	csrDER, _ := base64.StdEncoding.DecodeString(req.PushCertRequestCSR)
	sig, _ := base64.StdEncoding.DecodeString(req.PushCertSignature)
	csrData, _ := os.ReadFile(csrFile)
	if block, _ := pem.Decode(csrData); !bytes.Equal(block.Bytes, csrDER) {
		t.Error("PushCertRequestCSR is not push.csr")
	}
	chain, err := pki.ParseCertificatesPEM([]byte(req.PushCertCertificateChain))
	if err != nil || len(chain) != 3 || !chain[0].Equal(vendor) || !chain[1].Equal(wwdr) || !chain[2].Equal(root) {
		t.Errorf("chain: %d certificates, %v; want vendor, WWDR, root", len(chain), err)
	}

	// The check Apple's portal makes, by openssl.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	pub, err := x509.MarshalPKIXPublicKey(vendor.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "vendor_pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	writeFile(t, dir, "sig.bin", sig)
	writeFile(t, dir, "csr.der", csrDER)
	cmd := exec.Command("openssl", "dgst", "-sha256", "-verify", "vendor_pub.pem", "-signature", "sig.bin", "csr.der")
	cmd.Dir = dir
	if outp, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(outp), "Verified OK") {
		t.Errorf("openssl did not verify the vendor signature: %v\n%s", err, outp)
	}

	// Without --vendor-chain and --out: the chain follows the vendor
	// certificate in its file, and the request goes to standard output.
	bundle := writeFile(t, dir, "vendor-bundle.pem", bytes.Join([][]byte{
		pki.EncodeCertificatePEM(vendor), pki.EncodeCertificatePEM(wwdr), pki.EncodeCertificatePEM(root)}, nil))
	out, err = bramley(t, envOf(nil), "push", "vendor-sign", "--csr", csrFile, "--vendor-cert", bundle, "--vendor-key", vendorKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out)); err != nil {
		t.Errorf("standard output is not the base64 request: %v", err)
	}

	// Another key than the vendor certificate's is refused.
	_, err = bramley(t, envOf(nil), "push", "vendor-sign", "--csr", csrFile, "--vendor-cert", bundle,
		"--vendor-key", writeFile(t, dir, "other.key", keyPEM(t, rsaKey(t))))
	if err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("mismatched vendor key: err = %v", err)
	}
}

// pushCertServer is a fake of PUT and GET /api/v1/push-certificates.
type pushCertServer struct {
	mu       sync.Mutex
	requests int
	query    string
	body     map[string]string
	status   int // answer to PUT; 200 when 0
}

func (s *pushCertServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path != "/api/v1/push-certificates":
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":"no such route"}`)
	case r.Method == http.MethodGet:
		io.WriteString(w, `{"push_certificates":[]}`)
	case r.Method == http.MethodPut:
		s.query = r.URL.RawQuery
		s.body = nil
		if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&s.body) != nil {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"send JSON"}`)
			return
		}
		if s.status != 0 {
			w.WriteHeader(s.status)
			io.WriteString(w, `{"error":"a push certificate for another topic is in use"}`)
			return
		}
		io.WriteString(w, `{"topic":"`+testTopic+`","not_after":"2030-01-02T00:00:00Z","days_left":1000}`)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		io.WriteString(w, `{"error":"method not allowed"}`)
	}
}

// last returns what the latest PUT sent, and how many requests came.
func (s *pushCertServer) last() (query string, body map[string]string, requests int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.query, s.body, s.requests
}

func (s *pushCertServer) answerPut(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
}

func TestPushCertUpload(t *testing.T) {
	certFile, keyFile, cert := pushCertFiles(t)
	fake := &pushCertServer{}
	env := fakeAPI(t, fake)

	out, err := bramley(t, envOf(env), "push", "cert", "upload", "--cert", certFile, "--key", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{testTopic, "2030-01-02", "1000 days left"} { // as the server said
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	keyData, _ := os.ReadFile(keyFile)
	query, body, _ := fake.last()
	if got, err := pki.ParseCertificatePEM([]byte(body["certificate"])); err != nil || !got.Equal(cert) {
		t.Errorf("certificate sent: %v", err)
	}
	if body["private_key"] != string(keyData) || query != "" {
		t.Errorf("sent key %t, query %q", body["private_key"] == string(keyData), query)
	}

	// --force asks the server to replace another topic's certificate.
	if _, err := bramley(t, envOf(env), "push", "cert", "upload", "--cert", certFile, "--key", keyFile, "--force"); err != nil {
		t.Fatal(err)
	}
	if query, _, _ := fake.last(); query != "force=true" {
		t.Errorf("--force sent query %q", query)
	}

	// A conflict says how to resolve it.
	fake.answerPut(http.StatusConflict)
	_, err = bramley(t, envOf(env), "push", "cert", "upload", "--cert", certFile, "--key", keyFile)
	if err == nil || !strings.Contains(err.Error(), "(HTTP 409)") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("conflict: err = %v", err)
	}
}

func TestPushCertUploadPKCS12(t *testing.T) {
	cert, key := pushCert(t)
	p12, err := pkcs12.Modern.Encode(key, cert, nil, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	p12File := writeFile(t, t.TempDir(), "push.p12", p12)
	fake := &pushCertServer{}
	env := fakeAPI(t, fake)
	env["P12_PASSWORD"] = "s3cret"

	if _, err := bramley(t, envOf(env), "push", "cert", "upload", "--p12", p12File, "--password-env", "P12_PASSWORD"); err != nil {
		t.Fatal(err)
	}
	if _, body, _ := fake.last(); body["pkcs12"] != base64.StdEncoding.EncodeToString(p12) || body["password"] != "s3cret" {
		t.Errorf("sent %v", body)
	}
}

func TestPushCertUploadRefusedLocally(t *testing.T) {
	certFile, _, _ := pushCertFiles(t)
	_, otherKey, _ := pushCertFiles(t)
	cert, key := pushCert(t)
	p12, err := pkcs12.Modern.Encode(key, cert, nil, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	p12File := writeFile(t, t.TempDir(), "push.p12", p12)
	fake := &pushCertServer{}
	env := fakeAPI(t, fake)
	env["WRONG"] = "guess"

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"key of another certificate", []string{"--cert", certFile, "--key", otherKey}, "private key does not belong"},
		{"wrong .p12 password", []string{"--p12", p12File, "--password-env", "WRONG"}, "wrong password"},
		{"password variable unset", []string{"--p12", p12File, "--password-env", "UNSET"}, "UNSET is not set"},
		{"both forms", []string{"--p12", p12File, "--cert", certFile}, "either --p12"},
		{"no key", []string{"--cert", certFile}, "--cert and --key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bramley(t, envOf(env), append([]string{"push", "cert", "upload"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if _, _, n := fake.last(); n != 0 {
		t.Errorf("%d refused uploads reached the server", n)
	}
}

// realPushAPI runs the real admin API over SQLite, with the real push
// certificate manager.
func realPushAPI(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "bramley.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if err := store.CreateAPIKey(ctx, api.HashKey(testAPIKey), "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	sealer, err := pki.NewSealer(make([]byte, pki.SecretKeySize))
	if err != nil {
		t.Fatal(err)
	}
	providers := push.NewProviders()
	t.Cleanup(providers.Close)
	a := api.New(store, store, store, nil, api.WithPush(push.NewManager(store, sealer, providers), nil))
	return fakeAPI(t, a.Handler())
}

func TestPushCertUploadAndListRealAPI(t *testing.T) {
	env := realPushAPI(t)
	out, err := bramley(t, envOf(env), "push", "cert", "list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "No push certificate yet") {
		t.Errorf("empty list printed:\n%s", out)
	}

	certFile, keyFile, cert := pushCertFiles(t)
	out, err = bramley(t, envOf(env), "push", "cert", "upload", "--cert", certFile, "--key", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	notAfter := cert.NotAfter.UTC().Format(time.DateOnly)
	for _, want := range []string{testTopic, notAfter, "days left"} {
		if !strings.Contains(out, want) {
			t.Errorf("upload output lacks %q:\n%s", want, out)
		}
	}

	// The .p12 form, with the same topic: a renewal, which replaces it.
	renewed, key := pushCert(t)
	p12, err := pkcs12.Modern.Encode(key, renewed, nil, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	env["P12_PASSWORD"] = "s3cret"
	p12File := writeFile(t, t.TempDir(), "push.p12", p12)
	if _, err := bramley(t, envOf(env), "push", "cert", "upload", "--p12", p12File, "--password-env", "P12_PASSWORD"); err != nil {
		t.Fatal(err)
	}

	out, err = bramley(t, envOf(env), "push", "cert", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TOPIC", "ENROLLMENTS", testTopic, renewed.NotAfter.UTC().Format(time.DateOnly)} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, testTopic) != 1 {
		t.Errorf("a renewal listed twice:\n%s", out)
	}
	out, err = bramley(t, envOf(env), "push", "cert", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		PushCertificates []map[string]any `json:"push_certificates"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.PushCertificates) != 1 || list.PushCertificates[0]["topic"] != testTopic {
		t.Errorf("--json printed %s (%v)", out, err)
	}

	// The server's own refusal comes back as its message and status.
	expired := mint(t, &x509.Certificate{
		Subject: pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
			{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, Value: testTopic}}},
		NotBefore: time.Now().AddDate(-2, 0, 0), NotAfter: time.Now().AddDate(-1, 0, 0),
	}, nil, key.Public(), key)
	p12, err = pkcs12.Modern.Encode(key, expired, nil, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	p12File = writeFile(t, t.TempDir(), "expired.p12", p12)
	_, err = bramley(t, envOf(env), "push", "cert", "upload", "--p12", p12File, "--password-env", "P12_PASSWORD")
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired certificate: err = %v", err)
	}
}
