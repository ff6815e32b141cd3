package enroll_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeOTAStore keeps OTA sessions in memory; issued maps certificate
// hashes to the ID they were issued for.
type fakeOTAStore struct {
	mu       sync.Mutex
	sessions map[string]*enroll.OTASession // by ID
	byHash   map[string]string             // hex challenge hash → ID
	issued   map[string]string
	routes   map[string]string // UDID → username
}

func newFakeOTAStore() *fakeOTAStore {
	return &fakeOTAStore{sessions: map[string]*enroll.OTASession{}, byHash: map[string]string{},
		issued: map[string]string{}, routes: map[string]string{}}
}

func (f *fakeOTAStore) CreateOTASession(_ context.Context, s enroll.OTASession, hash []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.byHash[hex.EncodeToString(hash)]; ok {
		return storage.ErrConflict
	}
	f.sessions[s.ID] = &s
	f.byHash[hex.EncodeToString(hash)] = s.ID
	return nil
}

func (f *fakeOTAStore) StartOTASession(_ context.Context, hash []byte, dev enroll.OTAAttributes, now time.Time) (*enroll.OTASession, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[f.byHash[hex.EncodeToString(hash)]]
	if !ok || s.State != enroll.OTAStateIssued || !now.Before(s.ExpiresAt) {
		return nil, storage.ErrNotFound
	}
	s.State, s.Device, s.UpdatedAt = enroll.OTAStateAttributes, dev, now
	c := *s
	return &c, nil
}

func (f *fakeOTAStore) OTASession(_ context.Context, id string) (*enroll.OTASession, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[id]
	if !ok {
		return nil, storage.ErrNotFound
	}
	c := *s
	return &c, nil
}

func (f *fakeOTAStore) OTASessionByChallenge(ctx context.Context, hash []byte) (*enroll.OTASession, error) {
	f.mu.Lock()
	id, ok := f.byHash[hex.EncodeToString(hash)]
	f.mu.Unlock()
	if !ok {
		return nil, storage.ErrNotFound
	}
	return f.OTASession(ctx, id)
}

func (f *fakeOTAStore) FinishOTASession(_ context.Context, id string, now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[id]
	if !ok || s.State != enroll.OTAStateAttributes || !now.Before(s.ExpiresAt) {
		return storage.ErrNotFound
	}
	s.State = enroll.OTAStateEnrolled
	f.routes[s.Device.UDID] = s.Username
	return nil
}

func (f *fakeOTAStore) IssuedTo(_ context.Context, hash []byte) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.issued[hex.EncodeToString(hash)]
	if !ok {
		return "", storage.ErrNotFound
	}
	return id, nil
}

type otaUsers struct{}

func (otaUsers) Authenticate(_ context.Context, username, password string) (*enroll.User, error) {
	if username == "alice" && password == "correct horse battery" {
		return &enroll.User{Username: "alice"}, nil
	}
	return nil, enroll.ErrBadCredentials
}

type otaHarness struct {
	t      *testing.T
	ota    *enroll.OTA
	store  *fakeStore
	otas   *fakeOTAStore
	ca     *pki.CA
	signer *pki.Signer
	apple  *appletest.DeviceCA
}

func newOTAHarness(t *testing.T, opts ...enroll.OTAOption) *otaHarness {
	t.Helper()
	ca, signer := testPKI(t)
	apple, err := appletest.NewDeviceCA()
	if err != nil {
		t.Fatal(err)
	}
	anchors, err := pki.ParseCertificatesPEM(apple.RootCertificatePEM())
	if err != nil {
		t.Fatal(err)
	}
	h := &otaHarness{t: t, store: newFakeStore(), otas: newFakeOTAStore(), ca: ca, signer: signer, apple: apple}
	topic := func(context.Context) (string, error) { return testTopic, nil }
	svc := enroll.New(h.store, ca, signer, topic, defaultConfig())
	h.ota = svc.NewOTA(h.otas, otaUsers{}, pki.NewAppleDeviceVerifier(anchors, time.Now), opts...)
	return h
}

// start downloads a Profile Service payload and returns its challenge.
func (h *otaHarness) start() string {
	h.t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/ota/profile-service", nil)
	req.SetBasicAuth("alice", "correct horse battery")
	rec := httptest.NewRecorder()
	h.ota.ProfileServiceHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		h.t.Fatalf("profile service: %d %s", rec.Code, rec.Body)
	}
	p := h.verify(rec.Body.Bytes())
	if p.PayloadType != profile.TypeProfileService || p.Service.URL != publicURL+"/ota/enroll" ||
		len(p.Service.DeviceAttributes) != 9 || p.Service.Challenge == "" {
		h.t.Fatalf("profile service payload: %+v %+v", p, p.Service)
	}
	return p.Service.Challenge
}

func (h *otaHarness) verify(signed []byte) *profile.Profile {
	h.t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(h.ca.Certificate())
	content, _, err := profile.Verify(signed, roots)
	if err != nil {
		h.t.Fatalf("verifying answer: %v", err)
	}
	p, err := profile.Parse(content)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

type identity struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain []*x509.Certificate
}

func (h *otaHarness) appleIdentity(udid string) identity {
	h.t.Helper()
	cert, key, chain, err := h.apple.Issue(udid)
	if err != nil {
		h.t.Fatal(err)
	}
	return identity{cert, key, chain}
}

func signAttrs(t testing.TB, attrs map[string]string, id identity) []byte {
	t.Helper()
	body, err := plist.Marshal(attrs)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := pkcs7.NewSignedData(body)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(id.cert, id.key, id.chain, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (h *otaHarness) post(body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/ota/enroll", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/pkcs7-signature")
	rec := httptest.NewRecorder()
	h.ota.EnrollHandler().ServeHTTP(rec, req)
	return rec
}

// phase2 posts attrs signed by a fresh Apple identity and returns the SCEP
// payload of the answer.
func (h *otaHarness) phase2(attrs map[string]string) profile.SCEPContent {
	h.t.Helper()
	rec := h.post(signAttrs(h.t, attrs, h.appleIdentity(attrs["UDID"])))
	if rec.Code != http.StatusOK {
		h.t.Fatalf("first POST: %d %s", rec.Code, rec.Body)
	}
	p := h.verify(rec.Body.Bytes())
	if len(p.PayloadContent) != 1 {
		h.t.Fatalf("identity profile: %d payloads", len(p.PayloadContent))
	}
	sc, ok := p.PayloadContent[0].(*profile.SCEP)
	if !ok || sc.PayloadContent.Challenge == "" {
		h.t.Fatalf("identity profile payload: %#v", p.PayloadContent[0])
	}
	return sc.PayloadContent
}

// scep does what the SCEP service does with the phase-2 challenge: an
// identity recorded for what the challenge was issued for.
func (h *otaHarness) scep(sc profile.SCEPContent) identity {
	h.t.Helper()
	sum := sha256.Sum256([]byte(sc.Challenge))
	ch, ok := h.store.challenge(sum[:])
	if !ok || !strings.HasPrefix(ch.challenge.EnrollmentID, "ota:") || !strings.HasPrefix(ch.challenge.Subject, "bramley OTA ") {
		h.t.Fatalf("phase-2 challenge: %+v", ch)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		h.t.Fatal(err)
	}
	cert, err := h.ca.IssueClient(context.Background(), &key.PublicKey, pkix.Name{CommonName: ch.challenge.Subject}, time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	certSum := sha256.Sum256(cert.Raw)
	h.otas.mu.Lock()
	h.otas.issued[hex.EncodeToString(certSum[:])] = ch.challenge.EnrollmentID
	h.otas.mu.Unlock()
	return identity{cert: cert, key: key}
}

func deviceAttrs(challenge, udid, serial string) map[string]string {
	return map[string]string{"UDID": udid, "SERIAL": serial, "PRODUCT": "iPhone14,5", "VERSION": "21F90",
		"DEVICE_NAME": "Test iPhone", "CHALLENGE": challenge}
}

func TestOTAThreePhases(t *testing.T) {
	h := newOTAHarness(t)
	challenge := h.start()
	attrs := deviceAttrs(challenge, "UDID-1", "SERIAL1")
	sc := h.phase2(attrs)
	if sc.URL != publicURL+"/scep" || sc.Keysize != 2048 {
		t.Fatalf("SCEP payload: %+v", sc)
	}
	ota := h.scep(sc)

	rec := h.post(signAttrs(t, attrs, ota))
	if rec.Code != http.StatusOK {
		t.Fatalf("second POST: %d %s", rec.Code, rec.Body)
	}
	p := h.verify(rec.Body.Bytes())
	if !p.IsEncrypted || len(p.PayloadContent) != 0 || len(p.EncryptedPayloadContent) == 0 {
		t.Fatalf("final profile is not encrypted: %+v", p)
	}
	if err := profile.DecryptPayloads(p, ota.cert, ota.key.(crypto.Decrypter)); err != nil {
		t.Fatal(err)
	}
	var hasSCEP, hasMDM bool
	for _, pl := range p.PayloadContent {
		switch pl := pl.(type) {
		case *profile.SCEP:
			hasSCEP = pl.PayloadContent.Challenge != "" && pl.PayloadContent.Challenge != sc.Challenge
		case *profile.MDM:
			hasMDM = pl.Topic == testTopic
		}
	}
	if !hasSCEP || !hasMDM {
		t.Fatalf("final profile payloads: %+v", p.PayloadContent)
	}
	if h.otas.routes["UDID-1"] != "alice" {
		t.Fatalf("route not recorded: %v", h.otas.routes)
	}
	// The session is spent: a replay of the second POST gets nothing.
	if rec := h.post(signAttrs(t, attrs, ota)); rec.Code != http.StatusConflict {
		t.Fatalf("second POST replayed: %d", rec.Code)
	}
}

func TestOTARefusals(t *testing.T) {
	foreignKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	foreignTmpl := &x509.Certificate{
		SerialNumber: bigOne(), Subject: pkix.Name{CommonName: "not Apple"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	foreignDER, _ := x509.CreateCertificate(rand.Reader, foreignTmpl, foreignTmpl, &foreignKey.PublicKey, foreignKey)
	foreignCert, _ := x509.ParseCertificate(foreignDER)
	foreign := identity{cert: foreignCert, key: foreignKey}

	tests := []struct {
		name string
		opts []enroll.OTAOption
		run  func(t *testing.T, h *otaHarness) *httptest.ResponseRecorder
		want int
		// sessions in state enrolled afterwards
		enrolled int
	}{
		{name: "unsigned", want: http.StatusBadRequest, run: func(t *testing.T, h *otaHarness) *httptest.ResponseRecorder {
			b, _ := plist.Marshal(deviceAttrs(h.start(), "U", "S"))
			return h.post(b)
		}},
		{name: "tampered", want: http.StatusBadRequest, run: func(t *testing.T, h *otaHarness) *httptest.ResponseRecorder {
			body := signAttrs(t, deviceAttrs(h.start(), "UDID-A", "S"), h.appleIdentity("UDID-A"))
			i := bytes.Index(body, []byte("UDID-A"))
			body[i+5] = 'B'
			return h.post(body)
		}},
		{name: "unknown CA", want: http.StatusForbidden, run: func(t *testing.T, h *otaHarness) *httptest.ResponseRecorder {
			return h.post(signAttrs(t, deviceAttrs(h.start(), "U", "S"), foreign))
		}},
		{name: "foreign challenge", want: http.StatusForbidden, run: func(t *testing.T, h *otaHarness) *httptest.ResponseRecorder {
			h.start()
			return h.post(signAttrs(t, deviceAttrs("made-up", "U", "S"), h.appleIdentity("U")))
		}},
		{name: "reused challenge", want: http.StatusForbidden, run: func(t *testing.T, h *otaHarness) *httptest.ResponseRecorder {
			c := h.start()
			h.phase2(deviceAttrs(c, "U1", "S1"))
			return h.post(signAttrs(t, deviceAttrs(c, "U2", "S2"), h.appleIdentity("U2")))
		}},
		{name: "policy", opts: []enroll.OTAOption{enroll.WithOTAPolicy(enroll.DenyList([]string{"serial-x"}))},
			want: http.StatusForbidden, run: func(t *testing.T, h *otaHarness) *httptest.ResponseRecorder {
				c := h.start()
				rec := h.post(signAttrs(t, deviceAttrs(c, "U", "SERIAL-X"), h.appleIdentity("U")))
				if s, _ := h.otas.OTASessionByChallenge(context.Background(), hashOf(c)); s.State != enroll.OTAStateIssued {
					t.Errorf("refused device moved the session to %s", s.State)
				}
				return rec
			}},
		{name: "other device's identity", want: http.StatusForbidden, run: func(t *testing.T, h *otaHarness) *httptest.ResponseRecorder {
			a := deviceAttrs(h.start(), "UA", "SA")
			b := deviceAttrs(h.start(), "UB", "SB")
			h.phase2(a)
			idB := h.scep(h.phase2(b))
			return h.post(signAttrs(t, a, idB))
		}},
		{name: "attributes differ", want: http.StatusForbidden, run: func(t *testing.T, h *otaHarness) *httptest.ResponseRecorder {
			a := deviceAttrs(h.start(), "UA", "SA")
			id := h.scep(h.phase2(a))
			a["SERIAL"] = "OTHER"
			return h.post(signAttrs(t, a, id))
		}},
		{name: "identity not issued for OTA", want: http.StatusForbidden, run: func(t *testing.T, h *otaHarness) *httptest.ResponseRecorder {
			a := deviceAttrs(h.start(), "UA", "SA")
			h.phase2(a)
			key, _ := rsa.GenerateKey(rand.Reader, 2048)
			cert, err := h.ca.IssueClient(context.Background(), &key.PublicKey, pkix.Name{CommonName: "x"}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return h.post(signAttrs(t, a, identity{cert: cert, key: key}))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newOTAHarness(t, tt.opts...)
			rec := tt.run(t, h)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if rec.Header().Get("Content-Type") == profile.ContentType || strings.TrimSpace(rec.Body.String()) == "" {
				t.Fatalf("refusal without a reason, or with a profile: %q", rec.Body)
			}
			if len(h.otas.routes) != 0 {
				t.Fatalf("enrollment recorded: %v", h.otas.routes)
			}
		})
	}
}

func TestOTASignIn(t *testing.T) {
	h := newOTAHarness(t)
	for _, tt := range []struct{ user, pass string }{{"", ""}, {"alice", "wrong"}} {
		req := httptest.NewRequest(http.MethodGet, "/ota/profile-service", nil)
		if tt.user != "" {
			req.SetBasicAuth(tt.user, tt.pass)
		}
		rec := httptest.NewRecorder()
		h.ota.ProfileServiceHandler().ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") == "" {
			t.Fatalf("%q: %d", tt.user, rec.Code)
		}
	}
	if len(h.otas.sessions) != 0 {
		t.Fatalf("sessions without sign-in: %d", len(h.otas.sessions))
	}
}

// FuzzOTAAttributes feeds the signed attribute parser outside bytes.
func FuzzOTAAttributes(f *testing.F) {
	apple, err := appletest.NewDeviceCA()
	if err != nil {
		f.Fatal(err)
	}
	cert, key, chain, err := apple.Issue("UDID")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signAttrs(f, deviceAttrs("c", "UDID", "S"), identity{cert, key, chain}))
	b, _ := plist.Marshal(deviceAttrs("c", "UDID", "S"))
	f.Add(b)
	f.Add([]byte{0x30, 0x80, 0x06, 0x09})
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := enroll.ParseSignedAttributes(data)
		if err == nil && (msg.Signer == nil) {
			t.Fatal("parsed without a signer")
		}
	})
}

func hashOf(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

func bigOne() *big.Int { return big.NewInt(1) }
