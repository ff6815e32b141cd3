package scep

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
	"github.com/smallstep/scep"

	"github.com/bramley-mdm/bramley/pki"
)

func get(h http.Handler, target string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
	return w
}

func TestGetCACaps(t *testing.T) {
	ca, _ := testCA(t)
	tests := []struct {
		name string
		opts []Option
		want string
	}{
		{"with renewals", []Option{WithRenewals(&memRenewals{})}, "POSTPKIOperation\nSHA-256\nAES\nRenewal\nSCEPStandard"},
		// Renewal is only offered when it can be done.
		{"without renewals", nil, "POSTPKIOperation\nSHA-256\nAES\nSCEPStandard"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &observations{}
			s := New(ca, nil, append(tt.opts, WithObserver(obs.observe))...)
			w := get(s.Handler(), "/scep?operation=GetCACaps")
			if w.Code != http.StatusOK || w.Body.String() != tt.want {
				t.Errorf("%d %q, want %q", w.Code, w.Body, tt.want)
			}
			if ct := w.Header().Get("Content-Type"); ct != "text/plain" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := obs.last(); got != [2]string{"GetCACaps", "ok"} {
				t.Errorf("observed %v", got)
			}
		})
	}
}

func TestGetCACert(t *testing.T) {
	// bramley's CA: the intermediate, which requests are encrypted to,
	// then the root, as a certs-only SignedData (RFC 8894 §4.2.1.2).
	ca, _ := testCA(t)
	s := New(ca, nil)
	// Apple devices send the payload's Name as message; it selects nothing.
	for _, target := range []string{"/scep?operation=GetCACert", "/scep?operation=GetCACert&message=bramley"} {
		w := get(s.Handler(), target)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d", target, w.Code)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/x-x509-ca-ra-cert" {
			t.Errorf("Content-Type %q", ct)
		}
		p7, err := pkcs7.Parse(w.Body.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if len(p7.Certificates) != 2 || !p7.Certificates[0].Equal(ca.Certificate()) || !p7.Certificates[1].Equal(ca.Root()) {
			t.Errorf("%s: %d certificates, want the intermediate and the root", target, len(p7.Certificates))
		}
	}

	// A CA that is its own root (an operator's, in tests) answers with its
	// DER certificate alone (§4.2.1.1).
	one, _ := fixtureCA(t, time.Now())
	w := get(New(one, nil).Handler(), "/scep?operation=GetCACert")
	if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), one.Certificate().Raw) {
		t.Errorf("%d, body is not the CA's DER certificate", w.Code)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/x-x509-ca-cert" {
		t.Errorf("Content-Type %q", ct)
	}
}

// TestBadRequests: what cannot be answered with a CertRep gets an HTTP
// error with a reason — never a 500 — and issues nothing.
func TestBadRequests(t *testing.T) {
	ca, issued := testCA(t)
	// A signed CMS message that is not a SCEP request.
	sd, _ := pkcs7.NewSignedData([]byte("hello"))
	dev := newDevice(t, rsaKey(t, 2048, 0))
	if err := sd.AddSigner(dev.cert, dev.key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	notSCEP, _ := sd.Finish()

	tests := []struct {
		name    string
		method  string
		target  string
		body    io.Reader
		status  int
		reason  string
		outcome string
	}{
		{"unknown operation", "GET", "/scep?operation=GetNextCACert", nil, 400, `unknown SCEP operation "GetNextCACert"`, "bad_request"},
		{"no operation", "GET", "/scep", nil, 400, "missing operation", "bad_request"},
		{"PUT", "PUT", "/scep?operation=GetCACaps", nil, 405, "GET and POST", "method_not_allowed"},
		{"POST GetCACaps", "POST", "/scep?operation=GetCACaps", nil, 405, "GetCACaps takes GET", "method_not_allowed"},
		{"garbage", "POST", "/scep?operation=PKIOperation", strings.NewReader("garbage"), 400, "not a CMS SignedData", "bad_request"},
		{"empty body", "POST", "/scep?operation=PKIOperation", strings.NewReader(""), 400, "not a CMS SignedData", "bad_request"},
		{"signed, not SCEP", "POST", "/scep?operation=PKIOperation", bytes.NewReader(notSCEP), 400, "no transactionID", "bad_request"},
		{"oversized body", "POST", "/scep?operation=PKIOperation", bytes.NewReader(make([]byte, 8192)), 413, "larger than 4096 bytes", "too_large"},
		{"GET without message", "GET", "/scep?operation=PKIOperation", nil, 400, "needs a message", "bad_request"},
		{"GET not base64", "GET", "/scep?operation=PKIOperation&message=%21%21", nil, 400, "not base64", "bad_request"},
		{"GET oversized", "GET", "/scep?operation=PKIOperation&message=" + strings.Repeat("A", 8192), nil, 413, "larger than 4096 bytes", "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &observations{}
			s := New(ca, nil, WithoutChallenge(), WithMaxBody(4096), WithObserver(obs.observe), WithLogger(discardLogger()))
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, httptest.NewRequest(tt.method, tt.target, tt.body))
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.reason) {
				t.Errorf("%d %q, want %d with %q", w.Code, w.Body, tt.status, tt.reason)
			}
			if got := obs.last(); got[1] != tt.outcome {
				t.Errorf("observed %v, want outcome %s", got, tt.outcome)
			}
			if issued.count() != 0 {
				t.Error("issued")
			}
		})
	}
}

// TestPKIOperationGET enrolls through the legacy GET form, with the base64
// escaped properly and with '+' left unescaped as some clients do.
func TestPKIOperationGET(t *testing.T) {
	ca, _ := testCA(t)
	s := New(ca, nil, WithoutChallenge())
	dev := newDevice(t, rsaKey(t, 2048, 0))
	encodings := map[string]func(string) string{
		"escaped":       url.QueryEscape,
		"plus as space": func(b string) string { return strings.ReplaceAll(url.QueryEscape(b), "%2B", "+") },
		"double escape": func(b string) string { return url.QueryEscape(url.QueryEscape(b)) },
		"line wrapped":  func(b string) string { return url.QueryEscape(b[:64] + "\n" + b[64:]) },
	}
	for name, encode := range encodings {
		t.Run(name, func(t *testing.T) {
			var req builtRequest
			var b64 string
			for { // until the base64 has a '+', so the quirk is exercised
				req = buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "").Raw, recipient: ca.Certificate(), signer: dev})
				if b64 = base64.StdEncoding.EncodeToString(req.der); strings.Contains(b64, "+") {
					break
				}
			}
			w := get(s.Handler(), "/scep?operation=PKIOperation&message="+encode(b64))
			r := parseReply(t, w, ca.Certificate(), dev)
			if r.msg.PKIStatus != scep.SUCCESS {
				t.Fatalf("pkiStatus %q: %s", r.msg.PKIStatus, r.failInfoText)
			}
			checkEcho(t, r, req)
		})
	}
}

// TestCALifetimeCap: an identity never outlives its CA.
func TestCALifetimeCap(t *testing.T) {
	ca, _ := testCA(t)
	s := New(ca, nil, WithoutChallenge(), WithLifetime(100*365*24*time.Hour))
	dev := newDevice(t, rsaKey(t, 2048, 0))
	req := buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "").Raw, recipient: ca.Certificate(), signer: dev})
	r := parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), dev)
	if r.msg.Certificate.NotAfter.After(ca.Certificate().NotAfter) {
		t.Error("identity outlives the CA")
	}
}

// TestNonRSACA: a CA that devices cannot encrypt to is reported when the
// service is made, and PKIOperation fails as bramley's fault, not the
// device's.
func TestNonRSACA(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "EC CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	ca, err := pki.NewCAFromKeyPair(cert, key, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	s := New(ca, nil, WithoutChallenge(), WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("no error logged:\n%s", logs)
	}
	dev := newDevice(t, rsaKey(t, 2048, 0))
	req := buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "").Raw, recipient: dev.cert, signer: dev})
	if w := post(t, s.Handler(), req.der); w.Code != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", w.Code)
	}
}
