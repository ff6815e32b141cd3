package scep

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
	"github.com/smallstep/scep"
	"github.com/smallstep/scep/x509util"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/storage"
)

// memSettings is an in-memory pki.SettingStore.
type memSettings struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memSettings) Setting(_ context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[name]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (s *memSettings) CreateSetting(_ context.Context, name string, value []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string][]byte)
	}
	if v, ok := s.m[name]; ok {
		return bytes.Clone(v), nil
	}
	s.m[name] = bytes.Clone(value)
	return bytes.Clone(value), nil
}

// memCerts records what a CA issues, so tests can say nothing was.
type memCerts struct {
	mu    sync.Mutex
	certs []storage.Certificate
}

func (s *memCerts) RecordCertificate(_ context.Context, c storage.Certificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certs = append(s.certs, c)
	return nil
}

func (s *memCerts) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.certs)
}

// memChallenges is a ChallengeStore keeping, like the real backends, only
// the SHA-256 of each challenge.
type memChallenges struct {
	mu  sync.Mutex
	m   map[[32]byte]*memChallenge
	err error
}

type memChallenge struct {
	Challenge
	used bool
}

func (s *memChallenges) add(secret string, c Challenge) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[[32]byte]*memChallenge)
	}
	s.m[sha256.Sum256([]byte(secret))] = &memChallenge{Challenge: c}
}

func (s *memChallenges) ConsumeChallenge(_ context.Context, challenge string, now time.Time) (Challenge, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return Challenge{}, s.err
	}
	c, ok := s.m[sha256.Sum256([]byte(challenge))]
	if !ok || c.used || !now.Before(c.ExpiresAt) {
		return Challenge{}, storage.ErrNotFound
	}
	c.used = true
	return c.Challenge, nil
}

// memRenewals is a RenewalStore: certificate bindings made at Authenticate,
// and the certificates recorded.
type memRenewals struct {
	mu      sync.Mutex
	bound   map[string]string // hex SHA-256 → device ID
	records []storage.Certificate
}

func (s *memRenewals) bind(cert *x509.Certificate, deviceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bound == nil {
		s.bound = make(map[string]string)
	}
	sum := sha256.Sum256(cert.Raw)
	s.bound[hex.EncodeToString(sum[:])] = deviceID
}

func (s *memRenewals) CertDevice(_ context.Context, hash []byte) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.bound[hex.EncodeToString(hash)]
	if !ok {
		return "", storage.ErrNotFound
	}
	return d, nil
}

func (s *memRenewals) RecordCertificate(_ context.Context, c storage.Certificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, c)
	return nil
}

// issuedTo returns the device a certificate was recorded with, as
// identity.Store.IssuedTo would.
func (s *memRenewals) issuedTo(cert *x509.Certificate) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := sha256.Sum256(cert.Raw)
	for _, r := range s.records {
		if bytes.Equal(r.SHA256, sum[:]) {
			return r.DeviceID, true
		}
	}
	return "", false
}

// observations records what the observer was told.
type observations struct {
	mu   sync.Mutex
	list [][2]string
}

func (o *observations) observe(op, outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.list = append(o.list, [2]string{op, outcome})
}

func (o *observations) last() [2]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.list) == 0 {
		return [2]string{}
	}
	return o.list[len(o.list)-1]
}

// syncBuffer is a log sink safe for server goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// testCA returns a real bramley CA, as LoadOrCreateCA makes it, recording
// what it issues.
func testCA(t testing.TB) (*pki.CA, *memCerts) {
	t.Helper()
	key := make([]byte, pki.SecretKeySize)
	rand.Read(key)
	sealer, err := pki.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	issued := &memCerts{}
	ca, err := pki.LoadOrCreateCA(context.Background(), &memSettings{}, sealer, time.Now, pki.WithCertificateStore(issued))
	if err != nil {
		t.Fatal(err)
	}
	return ca, issued
}

// fixtureCA returns micromdm's test CA, to which the fixture PKCSReq is
// encrypted, with a clock inside its validity (it expired 2026-05-29).
func fixtureCA(t testing.TB, now time.Time) (*pki.CA, *memCerts) {
	t.Helper()
	certPEM, err := os.ReadFile("testdata/scep-testca-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCertificatePEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile("testdata/scep-testca-ca.key")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		t.Fatal("no PEM block in the fixture key")
	}
	// Legacy PEM encryption with an empty passphrase; the key is public.
	der, err := x509.DecryptPEMBlock(block, []byte{}) //nolint:staticcheck // the fixture's format
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS1PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	issued := &memCerts{}
	ca, err := pki.NewCAFromKeyPair(cert, key, func() time.Time { return now }, pki.WithCertificateStore(issued))
	if err != nil {
		t.Fatal(err)
	}
	return ca, issued
}

// device is a SCEP client: a key and the certificate it signs with.
type device struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

var (
	keysMu sync.Mutex
	keys   = map[int][]*rsa.PrivateKey{}
)

// rsaKey returns an RSA key of bits; the i-th key of each size is shared by
// the tests, since generating them is most of their time.
func rsaKey(t testing.TB, bits, i int) *rsa.PrivateKey {
	t.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	for len(keys[bits]) <= i {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		keys[bits] = append(keys[bits], k)
	}
	return keys[bits][i]
}

// newDevice returns a client signing with a transient self-signed
// certificate, as an Apple device does for a PKCSReq.
func newDevice(t testing.TB, key *rsa.PrivateKey) *device {
	t.Helper()
	return &device{key: key, cert: selfSigned(t, key, "MDM SCEP SIGNER")}
}

func selfSigned(t testing.TB, key crypto.Signer, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn, Country: []string{"US"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// makeCSR returns a CSR for key with a common name and challenge password.
func makeCSR(t testing.TB, key crypto.Signer, cn, challenge string) *x509.CertificateRequest {
	t.Helper()
	der, err := x509util.CreateCertificateRequest(rand.Reader, &x509util.CertificateRequest{
		CertificateRequest: x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: []string{"bramley test"}}},
		ChallengePassword:  challenge,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// reqSpec describes a request built by buildRequest.
type reqSpec struct {
	messageType scep.MessageType
	content     []byte // the envelope's plaintext: a CSR's DER
	recipient   *x509.Certificate
	cipher      *contentCipher
	digest      asn1.ObjectIdentifier
	signer      *device
}

// builtRequest is a request and what its reply must echo.
type builtRequest struct {
	der           []byte
	transactionID string
	senderNonce   []byte
}

// buildRequest builds a pkiMessage the way a device does, with the cipher
// and digest given: smallstep/scep's client builder can only produce the
// library's defaults (single DES, SHA-1), so DES3 like the fixture device
// and AES/SHA-256 like a current one are built here.
func buildRequest(t testing.TB, spec reqSpec) builtRequest {
	t.Helper()
	if spec.messageType == "" {
		spec.messageType = scep.PKCSReq
	}
	if spec.cipher == nil {
		spec.cipher = cipherAES128CBC
	}
	if spec.digest == nil {
		spec.digest = pkcs7.OIDDigestAlgorithmSHA256
	}
	env, err := encryptEnvelope(spec.content, spec.recipient, spec.cipher)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	txID := hex.EncodeToString(nonce[:8])
	sd, err := pkcs7.NewSignedData(env)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(spec.digest)
	err = sd.AddSigner(spec.signer.cert, spec.signer.key, pkcs7.SignerInfoConfig{ExtraSignedAttributes: []pkcs7.Attribute{
		{Type: oidTransactionID, Value: txID},
		{Type: oidMessageType, Value: spec.messageType},
		{Type: oidSenderNonce, Value: nonce},
	}})
	if err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return builtRequest{der: der, transactionID: txID, senderNonce: nonce}
}

// libraryRequest builds a request with smallstep/scep's client builder,
// which sends what micromdm's scepclient does: single DES, SHA-1.
func libraryRequest(t testing.TB, msgType scep.MessageType, csr *x509.CertificateRequest, signer *device, ca *x509.Certificate) builtRequest {
	t.Helper()
	msg, err := scep.NewCSRRequest(csr, &scep.PKIMessage{
		MessageType: msgType,
		Recipients:  []*x509.Certificate{ca},
		SignerKey:   signer.key,
		SignerCert:  signer.cert,
	})
	if err != nil {
		t.Fatal(err)
	}
	return builtRequest{der: msg.Raw, transactionID: string(msg.TransactionID), senderNonce: msg.SenderNonce}
}

// post sends a PKIOperation by POST through the handler.
func post(t testing.TB, h http.Handler, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/scep?operation=PKIOperation", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/x-pki-message")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// reply is a parsed CertRep.
type reply struct {
	msg          *scep.PKIMessage
	senderNonce  []byte
	failInfoText string
	digest       asn1.ObjectIdentifier
	certs        int // certificates in the outer SignedData
	raw          []byte
}

// parseReply parses and verifies a CertRep with the CA certificate, as
// scepclient does, and decrypts it with the requester's key on SUCCESS.
// The CA certificate's dates are ignored so that the fixture's expired CA
// can be checked too.
func parseReply(t testing.TB, w *httptest.ResponseRecorder, ca *x509.Certificate, requester *device) *reply {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/x-pki-message" {
		t.Errorf("Content-Type = %q", ct)
	}
	return parseReplyDER(t, w.Body.Bytes(), ca, requester)
}

func parseReplyDER(t testing.TB, der []byte, ca *x509.Certificate, requester *device) *reply {
	t.Helper()
	p7, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatalf("reply is not CMS: %v", err)
	}
	msg, err := scep.ParsePKIMessage(der, scep.WithCACerts([]*x509.Certificate{undated(ca)}))
	if err != nil {
		t.Fatalf("reply does not verify with the CA certificate: %v", err)
	}
	if msg.MessageType != scep.CertRep {
		t.Fatalf("reply messageType = %q", msg.MessageType)
	}
	r := &reply{msg: msg, raw: der, digest: p7.Signers[0].DigestAlgorithm.Algorithm, certs: len(p7.Certificates)}
	if err := p7.UnmarshalSignedAttribute(oidSenderNonce, &r.senderNonce); err != nil {
		t.Errorf("reply has no senderNonce: %v", err)
	}
	var text asn1.RawValue
	if err := p7.UnmarshalSignedAttribute(oidFailInfoText, &text); err == nil {
		if text.Tag != asn1.TagUTF8String {
			t.Errorf("failInfoText is tag %d, want UTF8String", text.Tag)
		}
		r.failInfoText = string(text.Bytes)
	}
	if msg.PKIStatus == scep.SUCCESS && requester != nil {
		if err := msg.DecryptPKIEnvelope(requester.cert, requester.key); err != nil {
			t.Fatalf("decrypting the reply with the requester's key: %v", err)
		}
	}
	return r
}

// checkEcho checks that a reply answers req: transactionID echoed,
// recipientNonce the request's senderNonce, a fresh senderNonce.
func checkEcho(t testing.TB, r *reply, req builtRequest) {
	t.Helper()
	if got := string(r.msg.TransactionID); got != req.transactionID {
		t.Errorf("transactionID = %q, want %q", got, req.transactionID)
	}
	if !bytes.Equal(r.msg.RecipientNonce, req.senderNonce) {
		t.Errorf("recipientNonce = %x, want the request's senderNonce %x", r.msg.RecipientNonce, req.senderNonce)
	}
	if len(r.senderNonce) != 16 || bytes.Equal(r.senderNonce, req.senderNonce) {
		t.Errorf("reply senderNonce = %x: want 16 fresh bytes", r.senderNonce)
	}
}

// checkFailure checks a CertRep FAILURE with failInfo and outcome.
func checkFailure(t testing.TB, r *reply, info scep.FailInfo) {
	t.Helper()
	if r.msg.PKIStatus != scep.FAILURE {
		t.Fatalf("pkiStatus = %q, want FAILURE", r.msg.PKIStatus)
	}
	if r.msg.FailInfo != info {
		t.Errorf("failInfo = %s (%q), want %s", failInfoNames[r.msg.FailInfo], r.failInfoText, failInfoNames[info])
	}
	if r.failInfoText == "" {
		t.Error("no failInfoText")
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
