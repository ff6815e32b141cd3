package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/pki"
)

// operatorPKI is a corporate CA whose device certificates come from an
// intermediate, as the operator's own PKI often does.
type operatorPKI struct {
	root, intermediate *x509.Certificate
	leaf               device
}

func newOperatorPKI(t *testing.T) operatorPKI {
	t.Helper()
	now := time.Now()
	serial := int64(0)
	mk := func(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	rootKey, interKey, leafKey := key(), key(), key()
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
	}
	root := mk(caTmpl("Corp Root"), nil, rootKey.Public(), rootKey)
	inter := mk(caTmpl("Corp MDM CA"), root, interKey.Public(), rootKey)
	leaf := mk(&x509.Certificate{Subject: pkix.Name{CommonName: "device"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, inter, leafKey.Public(), interKey)
	return operatorPKI{root: root, intermediate: inter, leaf: device{cert: leaf, key: leafKey}}
}

// Devices may send their issuing intermediate along with the certificate,
// in the TLS handshake or in the Mdm-Signature; an operator trusting only
// the root must still accept them.
func TestIdentifyIntermediates(t *testing.T) {
	op := newOperatorPKI(t)
	_, body := realSignature(t)
	sig, err := pki.SignDetached(body, op.leaf.cert, op.leaf.key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		peer    []*x509.Certificate
		sig     string
		anchors []*x509.Certificate
		wantErr bool
	}{
		{name: "TLS chain with intermediate", peer: []*x509.Certificate{op.leaf.cert, op.intermediate}, anchors: []*x509.Certificate{op.root}},
		{name: "TLS leaf alone", peer: []*x509.Certificate{op.leaf.cert}, anchors: []*x509.Certificate{op.root}, wantErr: true},
		{name: "TLS leaf alone, intermediate trusted", peer: []*x509.Certificate{op.leaf.cert}, anchors: []*x509.Certificate{op.intermediate}},
		{name: "Mdm-Signature without intermediate", sig: sig, anchors: []*x509.Certificate{op.root}, wantErr: true},
		{name: "Mdm-Signature, intermediate trusted", sig: sig, anchors: []*x509.Certificate{op.intermediate}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewVerifier(tt.anchors)
			r := httptest.NewRequest(http.MethodPut, "/mdm/connect", nil)
			if tt.peer != nil {
				r.TLS = &tls.ConnectionState{PeerCertificates: tt.peer}
			}
			if tt.sig != "" {
				r.Header.Set("Mdm-Signature", tt.sig)
			}
			id, err := v.Identify(r, body)
			if tt.wantErr {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !id.Cert.Equal(op.leaf.cert) {
				t.Error("identified another certificate")
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// A body that cannot be read is the client's problem (400), not a body too
// large (413) and not ours (500).
func TestMiddlewareBrokenBody(t *testing.T) {
	d := issue(t, newCA(t, time.Now), time.Hour)
	v := NewVerifier(nil)
	h := v.Middleware(1024)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("next handler called")
	}))
	r := httptest.NewRequest(http.MethodPut, "/mdm/checkin", failingReader{})
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{d.cert}}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Errorf("status %d, want 400", w.Code)
	}
}
