package enroll_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/storage"
)

const (
	publicURL  = "https://mdm.example.com"
	identifier = "com.example.bramley.enrollment"
	testTopic  = "com.apple.mgmt.External.5b4f2a8e-8c1f-4b7e-9d2a-0f6c3e1d7a90"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testPKI returns a real CA and profile-signing identity kept in memory.
func testPKI(t *testing.T) (*pki.CA, *pki.Signer) {
	t.Helper()
	key := make([]byte, pki.SecretKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	sealer, err := pki.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	settings := &memSettings{}
	ca, err := pki.LoadOrCreateCA(ctx, settings, sealer, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := pki.LoadOrCreateSigner(ctx, settings, sealer, ca)
	if err != nil {
		t.Fatal(err)
	}
	return ca, signer
}

type harness struct {
	svc      *enroll.Service
	store    *fakeStore
	ca       *pki.CA
	signer   *pki.Signer
	topicErr error // what the topic source fails with, when set
}

func newHarness(ca *pki.CA, signer *pki.Signer, cfg enroll.Config) *harness {
	h := &harness{store: newFakeStore(), ca: ca, signer: signer}
	topic := func(context.Context) (string, error) {
		if h.topicErr != nil {
			return "", h.topicErr
		}
		return testTopic, nil
	}
	h.svc = enroll.New(h.store, ca, signer, topic, cfg, enroll.WithClock(func() time.Time { return testNow }))
	return h
}

func defaultConfig() enroll.Config {
	return enroll.Config{
		PublicURL: publicURL, Identifier: identifier, Organization: "Example Org",
		ChallengeTTL: 30 * time.Minute,
	}
}

// addToken stores a token for secret as CreateToken would have.
func (h *harness) addToken(t *testing.T, secret string, maxUses, uses int, expiresAt time.Time) []byte {
	t.Helper()
	sum := sha256.Sum256([]byte(secret))
	if err := h.store.CreateEnrollmentToken(context.Background(), enroll.Token{
		ID: "id-" + secret, Hash: sum[:], MaxUses: maxUses, Uses: uses, ExpiresAt: expiresAt, CreatedAt: testNow.Add(-time.Hour),
	}); err != nil {
		t.Fatal(err)
	}
	return sum[:]
}

func (h *harness) get(target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func TestCreateToken(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		name        string
		req         enroll.TokenRequest
		wantStatus  int // 0 for success
		wantMaxUses int
		wantExpires time.Time
	}{
		{name: "defaults: 7 days, 1 use", req: enroll.TokenRequest{}, wantMaxUses: 1, wantExpires: testNow.Add(7 * day)},
		{
			name:        "as asked",
			req:         enroll.TokenRequest{Label: "sales iPads", ExpiresIn: 24 * time.Hour, MaxUses: 10},
			wantMaxUses: 10, wantExpires: testNow.Add(24 * time.Hour),
		},
		{name: "shortest lifetime", req: enroll.TokenRequest{ExpiresIn: time.Minute}, wantMaxUses: 1, wantExpires: testNow.Add(time.Minute)},
		{name: "longest lifetime", req: enroll.TokenRequest{ExpiresIn: 366 * day}, wantMaxUses: 1, wantExpires: testNow.Add(366 * day)},
		{name: "most uses", req: enroll.TokenRequest{MaxUses: 1_000_000}, wantMaxUses: 1_000_000, wantExpires: testNow.Add(7 * day)},
		{name: "longest label", req: enroll.TokenRequest{Label: strings.Repeat("l", 200)}, wantMaxUses: 1, wantExpires: testNow.Add(7 * day)},
		{name: "lifetime too short", req: enroll.TokenRequest{ExpiresIn: 59 * time.Second}, wantStatus: http.StatusBadRequest},
		{name: "lifetime negative", req: enroll.TokenRequest{ExpiresIn: -time.Hour}, wantStatus: http.StatusBadRequest},
		{name: "lifetime too long", req: enroll.TokenRequest{ExpiresIn: 366*day + time.Second}, wantStatus: http.StatusBadRequest},
		{name: "uses negative", req: enroll.TokenRequest{MaxUses: -1}, wantStatus: http.StatusBadRequest},
		{name: "too many uses", req: enroll.TokenRequest{MaxUses: 1_000_001}, wantStatus: http.StatusBadRequest},
		{name: "label too long", req: enroll.TokenRequest{Label: strings.Repeat("l", 201)}, wantStatus: http.StatusBadRequest},
	}
	ca, signer := testPKI(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(ca, signer, defaultConfig())
			nt, err := h.svc.CreateToken(context.Background(), tt.req)
			if tt.wantStatus != 0 {
				if status, _ := handler.Status(err); status != tt.wantStatus {
					t.Fatalf("err = %v (status %d), want status %d", err, status, tt.wantStatus)
				}
				if got := h.store.allTokens(); len(got) != 0 {
					t.Fatalf("a refused token was stored: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			stored := h.store.allTokens()
			if len(stored) != 1 {
				t.Fatalf("%d tokens stored", len(stored))
			}
			st := stored[0]
			if st.MaxUses != tt.wantMaxUses || !st.ExpiresAt.Equal(tt.wantExpires) || !st.CreatedAt.Equal(testNow) ||
				st.Label != tt.req.Label || st.Uses != 0 {
				t.Fatalf("stored %+v, want MaxUses %d, expiring %v", st, tt.wantMaxUses, tt.wantExpires)
			}
			// Only the secret's SHA-256 is stored.
			sum := sha256.Sum256([]byte(nt.Secret))
			if !bytes.Equal(st.Hash, sum[:]) {
				t.Fatal("stored hash is not the SHA-256 of the secret")
			}
			if len(nt.Secret) < 32 {
				t.Fatalf("secret %q is guessable", nt.Secret)
			}
			if dump := fmt.Sprintf("%+v", st); strings.Contains(dump, nt.Secret) || strings.Contains(st.ID, nt.Secret) {
				t.Fatal("the secret is stored")
			}
			if js, _ := json.Marshal(st); bytes.Contains(js, []byte(nt.Secret)) || bytes.Contains(js, []byte(`"Hash"`)) {
				t.Fatalf("a token's JSON shows its secret or hash: %s", js)
			}
			if nt.ID != st.ID || nt.ID == "" || !bytes.Equal(nt.Hash, st.Hash) {
				t.Fatalf("returned token %+v is not the stored %+v", nt.Token, st)
			}
			// The URL carries the secret as the token parameter.
			if nt.URL != publicURL+"/enroll?token="+nt.Secret {
				t.Fatalf("URL = %q", nt.URL)
			}
			u, err := url.Parse(nt.URL)
			if err != nil || u.Query().Get("token") != nt.Secret {
				t.Fatalf("URL %q does not carry the secret: %v", nt.URL, err)
			}
		})
	}
}

func TestCreateTokenUnique(t *testing.T) {
	ca, signer := testPKI(t)
	h := newHarness(ca, signer, defaultConfig())
	a, err := h.svc.CreateToken(context.Background(), enroll.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.svc.CreateToken(context.Background(), enroll.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Secret == b.Secret || a.ID == b.ID || a.ID == a.Secret {
		t.Fatalf("tokens share a secret or ID: %q %q / %q %q", a.ID, a.Secret, b.ID, b.Secret)
	}
}

func TestCreateTokenStoreError(t *testing.T) {
	ca, signer := testPKI(t)
	h := newHarness(ca, signer, defaultConfig())
	h.store.err = storage.ErrConflict
	nt, err := h.svc.CreateToken(context.Background(), enroll.TokenRequest{})
	if !errors.Is(err, storage.ErrConflict) || nt != nil {
		t.Fatalf("CreateToken = %v, %v; want the store's error", nt, err)
	}
}

// TestEnrollRefused: every way GET /enroll can fail answers a readable
// page, with security headers, and spends no use and no challenge.
func TestEnrollRefused(t *testing.T) {
	ca, signer := testPKI(t)
	tests := []struct {
		name       string
		target     string
		setup      func(t *testing.T, h *harness) []byte // returns the token's hash, if any
		wantStatus int
		wantText   string
		wantUses   int // of the token setup stored
	}{
		{
			name: "no token", target: "/enroll",
			wantStatus: http.StatusBadRequest, wantText: "no valid token",
		},
		{
			name: "empty token", target: "/enroll?token=",
			wantStatus: http.StatusBadRequest, wantText: "no valid token",
		},
		{
			name: "oversized token", target: "/enroll?token=" + strings.Repeat("a", 257),
			wantStatus: http.StatusBadRequest, wantText: "no valid token",
		},
		{
			name: "unknown token", target: "/enroll?token=unknown-secret",
			setup: func(t *testing.T, h *harness) []byte {
				return h.addToken(t, "known-secret", 1, 0, testNow.Add(time.Hour))
			},
			wantStatus: http.StatusForbidden, wantText: "not valid",
		},
		{
			name: "expired token", target: "/enroll?token=old-secret",
			setup: func(t *testing.T, h *harness) []byte {
				return h.addToken(t, "old-secret", 5, 1, testNow.Add(-time.Second))
			},
			wantStatus: http.StatusGone, wantText: "expired", wantUses: 1,
		},
		{
			name: "used-up token", target: "/enroll?token=spent-secret",
			setup: func(t *testing.T, h *harness) []byte {
				return h.addToken(t, "spent-secret", 2, 2, testNow.Add(time.Hour))
			},
			wantStatus: http.StatusGone, wantText: "already been used", wantUses: 2,
		},
		{
			name: "no push topic", target: "/enroll?token=good-secret",
			setup: func(t *testing.T, h *harness) []byte {
				h.topicErr = fmt.Errorf("reading topic: %w", enroll.ErrNoTopic)
				return h.addToken(t, "good-secret", 1, 0, testNow.Add(time.Hour))
			},
			wantStatus: http.StatusServiceUnavailable, wantText: "push certificate",
		},
		{
			name: "topic source fails", target: "/enroll?token=good-secret",
			setup: func(t *testing.T, h *harness) []byte {
				h.topicErr = errors.New("database is down")
				return h.addToken(t, "good-secret", 1, 0, testNow.Add(time.Hour))
			},
			wantStatus: http.StatusInternalServerError, wantText: "internal error",
		},
		{
			name: "store fails", target: "/enroll?token=good-secret",
			setup: func(t *testing.T, h *harness) []byte {
				hash := h.addToken(t, "good-secret", 1, 0, testNow.Add(time.Hour))
				h.store.err = errors.New("database is down")
				return hash
			},
			wantStatus: http.StatusInternalServerError, wantText: "internal error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(ca, signer, defaultConfig())
			var hash []byte
			if tt.setup != nil {
				hash = tt.setup(t, h)
			}
			rec := h.get(tt.target)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; %s", rec.Code, tt.wantStatus, rec.Body)
			}
			for name, want := range map[string]string{
				"Content-Type":            "text/html; charset=utf-8",
				"X-Content-Type-Options":  "nosniff",
				"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
				"Cache-Control":           "no-store",
			} {
				if got := rec.Header().Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			body := rec.Body.String()
			if !strings.HasPrefix(body, "<!doctype html>") || !strings.Contains(body, "<title>") || !strings.Contains(body, tt.wantText) {
				t.Fatalf("page does not say %q:\n%s", tt.wantText, body)
			}
			if strings.Contains(body, "database") {
				t.Fatalf("internal error shown to the person:\n%s", body)
			}
			if hash != nil {
				if tok, _ := h.store.token(hash); tok.Uses != tt.wantUses {
					t.Fatalf("token uses = %d, want %d", tok.Uses, tt.wantUses)
				}
			}
			if n := h.store.challengeCount(); n != 0 {
				t.Fatalf("%d SCEP challenges created for a refused download", n)
			}
		})
	}
}

// TestEnrollWithoutTopicSpendsNothing: the token is not even looked at
// while there is no topic, so its use is not spent.
func TestEnrollWithoutTopicSpendsNothing(t *testing.T) {
	ca, signer := testPKI(t)
	h := newHarness(ca, signer, defaultConfig())
	h.topicErr = enroll.ErrNoTopic
	hash := h.addToken(t, "good-secret", 1, 0, testNow.Add(time.Hour))
	for range 3 {
		if rec := h.get("/enroll?token=good-secret"); rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("status = %d", rec.Code)
		}
	}
	if tok, _ := h.store.token(hash); tok.Uses != 0 || h.store.uses() != 0 {
		t.Fatalf("uses = %d after %d UseEnrollmentToken calls, want none", tok.Uses, h.store.uses())
	}
	h.topicErr = nil
	if rec := h.get("/enroll?token=good-secret"); rec.Code != http.StatusOK {
		t.Fatalf("with a topic: %d %s", rec.Code, rec.Body)
	}
}

// enrollmentProfile is what a test reads of a downloaded profile.
type enrollmentProfile struct {
	PayloadIdentifier string
	PayloadType       string
	PayloadContent    []map[string]any
}

func (p enrollmentProfile) payload(t *testing.T, payloadType string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, pl := range p.PayloadContent {
		if pl["PayloadType"] == payloadType {
			if found != nil {
				t.Fatalf("two %s payloads", payloadType)
			}
			found = pl
		}
	}
	if found == nil {
		t.Fatalf("profile has no %s payload", payloadType)
	}
	return found
}

// download fetches, verifies and decodes an enrollment profile, and
// returns it with its SCEP challenge and subject common name.
func download(t *testing.T, h *harness, secret string) (p enrollmentProfile, challenge, cn string) {
	t.Helper()
	rec := h.get("/enroll?token=" + url.QueryEscape(secret))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	for name, want := range map[string]string{
		"Content-Type":        "application/x-apple-aspen-config",
		"Content-Disposition": `attachment; filename="bramley-enrollment.mobileconfig"`,
		"Cache-Control":       "no-store",
	} {
		if got := rec.Header().Get(name); got != want {
			t.Fatalf("%s = %q, want %q", name, got, want)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(h.ca.Certificate())
	content, signedBy, err := profile.Verify(rec.Body.Bytes(), roots)
	if err != nil {
		t.Fatalf("profile does not verify with the CA root: %v", err)
	}
	if !signedBy.Equal(h.signer.Cert) {
		t.Fatalf("profile signed by %s, not the signing identity", signedBy.Subject)
	}
	if err := plist.Unmarshal(content, &p); err != nil {
		t.Fatal(err)
	}
	sc, _ := p.payload(t, "com.apple.security.scep")["PayloadContent"].(map[string]any)
	challenge, _ = sc["Challenge"].(string)
	if sc["URL"] != publicURL+"/scep" || challenge == "" {
		t.Fatalf("SCEP payload = %v", sc)
	}
	// Subject is [[["CN", name]]].
	subject, _ := sc["Subject"].([]any)
	if len(subject) != 1 {
		t.Fatalf("SCEP Subject = %v", sc["Subject"])
	}
	rdn, _ := subject[0].([]any)
	if len(rdn) != 1 {
		t.Fatalf("SCEP Subject = %v", sc["Subject"])
	}
	atv, _ := rdn[0].([]any)
	if len(atv) != 2 || atv[0] != "CN" {
		t.Fatalf("SCEP Subject = %v", sc["Subject"])
	}
	cn, _ = atv[1].(string)
	return p, challenge, cn
}

func TestEnrollProfile(t *testing.T) {
	ca, signer := testPKI(t)
	h := newHarness(ca, signer, defaultConfig())
	hash := h.addToken(t, "good-secret", 2, 0, testNow.Add(time.Hour))

	seen := make(map[string]bool)
	for i := range 2 {
		p, challenge, cn := download(t, h, "good-secret")
		if p.PayloadIdentifier != identifier || p.PayloadType != "Configuration" {
			t.Fatalf("download %d: PayloadIdentifier %q, type %q", i, p.PayloadIdentifier, p.PayloadType)
		}
		if seen[challenge] || seen[cn] {
			t.Fatalf("download %d repeats a challenge or subject", i)
		}
		seen[challenge], seen[cn] = true, true

		// The store holds the challenge's SHA-256, bound to the profile's
		// subject and expiring after ChallengeTTL; never the challenge.
		sum := sha256.Sum256([]byte(challenge))
		c, ok := h.store.challenge(sum[:])
		if !ok {
			t.Fatalf("download %d: the profile's challenge is not stored by its SHA-256", i)
		}
		if c.challenge.Subject != cn || cn == "" {
			t.Fatalf("challenge bound to %q, profile asks for %q", c.challenge.Subject, cn)
		}
		if !c.challenge.ExpiresAt.Equal(testNow.Add(30*time.Minute)) || !c.createdAt.Equal(testNow) {
			t.Fatalf("challenge expires %v (created %v), want %v", c.challenge.ExpiresAt, c.createdAt, testNow.Add(30*time.Minute))
		}
		tok, _ := h.store.token(hash)
		if c.challenge.Source != "token "+tok.ID {
			t.Fatalf("challenge source = %q", c.challenge.Source)
		}
		if c.challenge.EnrollmentID != "" {
			// Only renewals name a device; a new enrollment's identity
			// must not be taken for one.
			t.Fatalf("a new enrollment's challenge names device %q", c.challenge.EnrollmentID)
		}
		if tok.Uses != i+1 {
			t.Fatalf("after download %d the token has %d uses", i+1, tok.Uses)
		}

		m := p.payload(t, "com.apple.mdm")
		if m["Topic"] != testTopic || m["ServerURL"] != publicURL+"/mdm/connect" || m["CheckInURL"] != publicURL+"/mdm/checkin" {
			t.Fatalf("MDM payload = %v", m)
		}
		if m["IdentityCertificateUUID"] != p.payload(t, "com.apple.security.scep")["PayloadUUID"] {
			t.Fatal("the MDM payload's identity is not the SCEP payload")
		}
		// The root, then the intermediate that issues identities and the
		// server's certificate: what a device needs to trust bramley.
		var roots [][]byte
		for _, pl := range p.PayloadContent {
			if pl["PayloadType"] == "com.apple.security.root" {
				c, _ := pl["PayloadContent"].([]byte)
				roots = append(roots, c)
			}
		}
		if len(roots) != 2 || !bytes.Equal(roots[0], ca.Root().Raw) || !bytes.Equal(roots[1], ca.Certificate().Raw) {
			t.Fatalf("%d root payloads, want the root CA then its intermediate", len(roots))
		}
	}
	if n := h.store.challengeCount(); n != 2 {
		t.Fatalf("%d challenges stored after two downloads", n)
	}
	if rec := h.get("/enroll?token=good-secret"); rec.Code != http.StatusGone {
		t.Fatalf("third download of a two-use token: %d", rec.Code)
	}
	if n := h.store.challengeCount(); n != 2 {
		t.Fatalf("a refused download stored a challenge (%d)", n)
	}
}

func TestEnrollDefaultChallengeTTL(t *testing.T) {
	ca, signer := testPKI(t)
	cfg := defaultConfig()
	cfg.ChallengeTTL = 0
	h := newHarness(ca, signer, cfg)
	h.addToken(t, "good-secret", 1, 0, testNow.Add(time.Hour))
	_, challenge, _ := download(t, h, "good-secret")
	sum := sha256.Sum256([]byte(challenge))
	if c, _ := h.store.challenge(sum[:]); !c.challenge.ExpiresAt.Equal(testNow.Add(time.Hour)) {
		t.Fatalf("challenge expires %v, want an hour after %v", c.challenge.ExpiresAt, testNow)
	}
}

// TestEnrollTokenFromCreateToken: a token CreateToken minted enrolls
// through the URL it returned.
func TestEnrollTokenFromCreateToken(t *testing.T) {
	ca, signer := testPKI(t)
	h := newHarness(ca, signer, defaultConfig())
	nt, err := h.svc.CreateToken(context.Background(), enroll.TokenRequest{Label: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	target := strings.TrimPrefix(nt.URL, publicURL)
	if rec := h.get(target); rec.Code != http.StatusOK {
		t.Fatalf("first use: %d %s", rec.Code, rec.Body)
	}
	if rec := h.get(target); rec.Code != http.StatusGone {
		t.Fatalf("second use of a one-use token: %d", rec.Code)
	}
}
