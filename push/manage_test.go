package push

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/pki"
)

// memCertStore is a hand-written CertStore following the documented
// semantics. err, when set, fails every call.
type memCertStore struct {
	mu    sync.Mutex
	certs map[string]StoredCertificate
	usage map[string]int
	puts  int
	err   error // fails every call
	// putErr fails PutPushCertificate only.
	putErr error
}

func newMemCertStore() *memCertStore {
	return &memCertStore{certs: make(map[string]StoredCertificate), usage: make(map[string]int)}
}

func (s *memCertStore) PushCertificates(context.Context) ([]StoredCertificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	var out []StoredCertificate
	for _, topic := range slices.Sorted(maps.Keys(s.certs)) {
		c := s.certs[topic]
		c.CertPEM, c.SealedKey = bytes.Clone(c.CertPEM), bytes.Clone(c.SealedKey)
		out = append(out, c)
	}
	return out, nil
}

func (s *memCertStore) PutPushCertificate(_ context.Context, c StoredCertificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if s.putErr != nil {
		return s.putErr
	}
	s.puts++
	s.certs[c.Topic] = c
	return nil
}

func (s *memCertStore) TopicUsage(context.Context) (map[string]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	return maps.Clone(s.usage), nil
}

func (s *memCertStore) get(topic string) (StoredCertificate, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.certs[topic]
	return c, ok
}

const otherTopic = "com.apple.mgmt.External.7f3c1d2e-9a8b-4c5d-8e7f-0a1b2c3d4e5f"

// managerEnv is a Manager over a memCertStore, a real Sealer, and
// providers pointed at a fake APNs.
type managerEnv struct {
	m         *Manager
	store     *memCertStore
	sealer    *pki.Sealer
	providers *Providers
	apns      *appletest.APNs
	clock     *clock
	logs      *bytes.Buffer
}

func newManagerEnv(t *testing.T) *managerEnv {
	t.Helper()
	key := make([]byte, pki.SecretKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	sealer, err := pki.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	e := &managerEnv{
		store:     newMemCertStore(),
		sealer:    sealer,
		providers: NewProviders(),
		apns:      appletest.NewAPNs(t),
		// The fake's certificates are valid from an hour ago for a year.
		clock: &clock{t: time.Now()},
		logs:  new(bytes.Buffer),
	}
	t.Cleanup(e.providers.Close)
	e.m = e.manager(e.providers)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", e.logs)
		}
	})
	return e
}

// manager returns another Manager on the same store, as another replica
// or a restarted server would have.
func (e *managerEnv) manager(providers *Providers) *Manager {
	return NewManager(e.store, e.sealer, providers,
		WithProviderOptions(WithURL(e.apns.URL()), WithRootCAs(e.apns.RootCAs())),
		WithManagerClock(e.clock.Now),
		WithManagerLogger(slog.New(slog.NewTextHandler(e.logs, nil))))
}

func (e *managerEnv) upload(t *testing.T, topic string) (*CertificateInfo, []byte) {
	t.Helper()
	certPEM, keyPEM := e.apns.PushCertificate(topic)
	info, err := e.m.Upload(t.Context(), Upload{CertPEM: certPEM, KeyPEM: keyPEM})
	if err != nil {
		t.Fatalf("Upload(%s): %v", topic, err)
	}
	return info, certPEM
}

// pushWith pushes one target through the provider for topic and fails
// unless the fake APNs accepted it.
func pushWith(t *testing.T, providers *Providers, topic string) {
	t.Helper()
	p, ok := providers.Provider(topic)
	if !ok {
		t.Fatalf("no provider for %s", topic)
	}
	r := p.Push(t.Context(), []Target{{EnrollmentID: "E", Token: token(1), PushMagic: "magic", Topic: topic}})
	if r[0].Err != nil {
		t.Fatalf("push on %s: %v", topic, r[0].Err)
	}
}

func TestManagerUploadPEM(t *testing.T) {
	e := newManagerEnv(t)
	e.store.usage[testTopic] = 3
	certPEM, keyPEM := e.apns.PushCertificate(testTopic)
	leaf := mustParse(t, certPEM)
	e.clock.t = leaf.NotAfter.Add(-100*24*time.Hour - time.Minute)
	info, err := e.m.Upload(t.Context(), Upload{CertPEM: certPEM, KeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	want := CertificateInfo{Topic: testTopic, NotAfter: leaf.NotAfter, DaysLeft: 100, Enrollments: 3}
	if *info != want {
		t.Errorf("info = %+v, want %+v", *info, want)
	}

	sc, ok := e.store.get(testTopic)
	if !ok {
		t.Fatal("nothing stored")
	}
	if !sc.NotAfter.Equal(leaf.NotAfter) || !sc.UpdatedAt.Equal(e.clock.Now()) {
		t.Errorf("stored NotAfter %v UpdatedAt %v, want %v and %v", sc.NotAfter, sc.UpdatedAt, leaf.NotAfter, e.clock.Now())
	}
	if stored, err := ParseCertificate(sc.CertPEM); err != nil || !stored.Equal(leaf) {
		t.Errorf("stored certificate is not the upload's (err %v)", err)
	}
	// The key is stored sealed, as PKCS#8 DER.
	wantKey, err := pki.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(wantKey)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sc.SealedKey, der[len(der)-64:]) {
		t.Error("the stored key is not sealed")
	}
	opened, err := e.sealer.Open(sc.SealedKey)
	if err != nil {
		t.Fatalf("opening the stored key: %v", err)
	}
	if !bytes.Equal(opened, der) {
		t.Error("the sealed key is not the upload's key as PKCS#8 DER")
	}

	// Pushing starts at once, with the provider options the manager was given.
	pushWith(t, e.providers, testTopic)
	if got := e.apns.Received(); len(got) != 1 || got[0].CertTopic != testTopic {
		t.Errorf("APNs got %+v", got)
	}
}

func TestManagerUploadPKCS12(t *testing.T) {
	e := newManagerEnv(t)
	certPEM, keyPEM := e.apns.PushCertificate(testTopic)
	leaf := mustParse(t, certPEM)
	key, err := pki.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	p12, err := pkcs12.LegacyDES.Encode(key, leaf, nil, "secret")
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.m.Upload(t.Context(), Upload{PKCS12: p12, Password: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if info.Topic != testTopic {
		t.Errorf("topic = %q", info.Topic)
	}
	sc, _ := e.store.get(testTopic)
	if stored, err := ParseCertificate(sc.CertPEM); err != nil || !stored.Equal(leaf) {
		t.Errorf("a .p12 is stored as PEM: got %q (err %v)", sc.CertPEM, err)
	}
	pushWith(t, e.providers, testTopic)
}

func TestManagerUploadRefused(t *testing.T) {
	caKey, key, other := rsaKey(t), rsaKey(t), rsaKey(t)
	ca := mintCA(t, "test CA", caKey)
	now := time.Now()
	mint := func(subject string) []byte {
		tmpl := &x509.Certificate{Subject: subjectUID(subject), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
		return pki.EncodeCertificatePEM(mintCert(t, tmpl, ca, key.Public(), caKey))
	}
	good, appPush := mint(testTopic), mint("com.example.app.voip")
	p12, err := pkcs12.Modern2023.Encode(key, mustParse(t, good), nil, "secret")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		u    Upload
		want error
	}{
		{"expired Apple certificate", Upload{CertPEM: readAppleCert(t), KeyPEM: keyPEM(t, key)}, ErrExpired},
		{"no MDM topic", Upload{CertPEM: appPush, KeyPEM: keyPEM(t, key)}, ErrNoTopic},
		{"key of another certificate", Upload{CertPEM: good, KeyPEM: keyPEM(t, other)}, ErrKeyMismatch},
		{"not a certificate", Upload{CertPEM: []byte("hello"), KeyPEM: keyPEM(t, key)}, ErrUnreadable},
		{"not a key", Upload{CertPEM: good, KeyPEM: good}, ErrUnreadable},
		{"certificate without key", Upload{CertPEM: good}, ErrUnreadable},
		{"nothing", Upload{}, ErrUnreadable},
		{"PEM and .p12 at once", Upload{CertPEM: good, KeyPEM: keyPEM(t, key), PKCS12: p12, Password: "secret"}, ErrUnreadable},
		{".p12 with the wrong password", Upload{PKCS12: p12, Password: "guess"}, ErrUnreadable},
		{"garbage .p12", Upload{PKCS12: []byte("not a p12")}, ErrUnreadable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newManagerEnv(t)
			info, err := e.m.Upload(t.Context(), tt.u)
			var ce *CertificateError
			if !errors.As(err, &ce) || !errors.Is(err, tt.want) {
				t.Fatalf("Upload = %+v, %v; want a *CertificateError of %v", info, err, tt.want)
			}
			if e.store.puts != 0 || len(e.providers.Certificates()) != 0 {
				t.Error("a refused certificate was stored or loaded")
			}
		})
	}
}

func mustParse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestManagerTopicChange(t *testing.T) {
	t.Run("a new topic for an enrolled fleet is refused", func(t *testing.T) {
		e := newManagerEnv(t)
		e.upload(t, testTopic)
		e.store.usage[testTopic] = 120
		certPEM, keyPEM := e.apns.PushCertificate(otherTopic)
		_, err := e.m.Upload(t.Context(), Upload{CertPEM: certPEM, KeyPEM: keyPEM})
		var tc *TopicChangeError
		if !errors.As(err, &tc) || !errors.Is(err, ErrTopicChange) {
			t.Fatalf("Upload = %v, want a *TopicChangeError", err)
		}
		msg := err.Error()
		for _, want := range []string{otherTopic, testTopic, "120 enrollments", "re-enroll", "renew", "force"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message lacks %q: %s", want, msg)
			}
		}
		if _, ok := e.store.get(otherTopic); ok {
			t.Error("the refused certificate was stored")
		}
		if _, ok := e.providers.Provider(otherTopic); ok {
			t.Error("the refused certificate was loaded")
		}

		// Forced, it goes in beside the one in use, which keeps pushing.
		info, err := e.m.Upload(t.Context(), Upload{CertPEM: certPEM, KeyPEM: keyPEM, Force: true})
		if err != nil {
			t.Fatalf("forced upload: %v", err)
		}
		if info.Topic != otherTopic || info.Enrollments != 0 {
			t.Errorf("info = %+v", info)
		}
		pushWith(t, e.providers, otherTopic)
		pushWith(t, e.providers, testTopic)
		if !strings.Contains(e.logs.String(), "by force") {
			t.Errorf("the forced change is not logged:\n%s", e.logs)
		}
	})
	t.Run("a renewal keeps its topic and replaces the certificate", func(t *testing.T) {
		e := newManagerEnv(t)
		_, first := e.upload(t, testTopic)
		e.store.usage[testTopic] = 5
		e.clock.Advance(time.Hour)
		info, renewed := e.upload(t, testTopic)
		if info.Enrollments != 5 {
			t.Errorf("enrollments = %d, want 5", info.Enrollments)
		}
		sc, _ := e.store.get(testTopic)
		if !mustParse(t, sc.CertPEM).Equal(mustParse(t, renewed)) || mustParse(t, sc.CertPEM).Equal(mustParse(t, first)) {
			t.Error("the stored certificate is not the renewal")
		}
		p, _ := e.providers.Provider(testTopic)
		if !p.Certificate().TLS.Leaf.Equal(mustParse(t, renewed)) {
			t.Error("the provider does not push with the renewal")
		}
	})
	t.Run("a stored topic no device uses yet is a renewal too", func(t *testing.T) {
		e := newManagerEnv(t)
		e.upload(t, testTopic)
		e.store.usage[otherTopic] = 2
		e.upload(t, testTopic)
	})
	t.Run("without enrolled devices any topic goes", func(t *testing.T) {
		e := newManagerEnv(t)
		e.upload(t, testTopic)
		e.store.usage[testTopic] = 0 // reported, but none enabled
		e.upload(t, otherTopic)
	})
	t.Run("several topics name the busiest", func(t *testing.T) {
		err := &TopicChangeError{Topic: "com.apple.mgmt.new", InUse: map[string]int{
			"com.apple.mgmt.a": 1, "com.apple.mgmt.b": 40, "com.apple.mgmt.c": 2, "com.apple.mgmt.d": 3,
			"com.apple.mgmt.e": 4, "com.apple.mgmt.f": 5, "com.apple.mgmt.g": 6}}
		msg := err.Error()
		for _, want := range []string{"com.apple.mgmt.b (40 enrollments), com.apple.mgmt.g (6 enrollments)", "com.apple.mgmt.d (3 enrollments), 2 more"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message lacks %q: %s", want, msg)
			}
		}
		if strings.Contains(msg, "com.apple.mgmt.a (") || strings.Contains(msg, "com.apple.mgmt.c (") {
			t.Errorf("message names the least used topic beyond the cap: %s", msg)
		}
	})
}

func TestManagerLoad(t *testing.T) {
	e := newManagerEnv(t)
	e.upload(t, testTopic)
	e.upload(t, otherTopic)
	// A certificate whose key was sealed with another secret key.
	const lostTopic = "com.apple.mgmt.External.00000000-1111-2222-3333-444444444444"
	certPEM, _ := e.apns.PushCertificate(lostTopic)
	e.store.certs[lostTopic] = StoredCertificate{Topic: lostTopic, CertPEM: certPEM,
		SealedKey: []byte("\x01sealed elsewhere, long enough to be opened and refused"), NotAfter: mustParse(t, certPEM).NotAfter}
	// The real Apple certificate, long expired.
	e.store.certs[appleTopic] = StoredCertificate{Topic: appleTopic, CertPEM: readAppleCert(t),
		SealedKey: e.storedKey(t, testTopic), NotAfter: mustParse(t, readAppleCert(t)).NotAfter}

	restarted := NewProviders()
	t.Cleanup(restarted.Close)
	m := e.manager(restarted)
	if err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, c := range restarted.Certificates() {
		topics = append(topics, c.Topic)
	}
	if want := []string{testTopic, otherTopic}; !slices.Equal(topics, want) {
		t.Errorf("loaded %v, want %v", topics, want)
	}
	pushWith(t, restarted, testTopic)
	pushWith(t, restarted, otherTopic)
	for _, topic := range []string{lostTopic, appleTopic} {
		if !strings.Contains(e.logs.String(), "topic="+topic) || !strings.Contains(e.logs.String(), "not loaded") {
			t.Errorf("no log line for the skipped %s:\n%s", topic, e.logs)
		}
	}

	// Loading again keeps providers, and their connections, when nothing
	// changed, and does not repeat the errors.
	before, _ := restarted.Provider(testTopic)
	logged := e.logs.Len()
	if err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if after, _ := restarted.Provider(testTopic); after != before {
		t.Error("an unchanged certificate got a new provider")
	}
	if again := e.logs.String()[logged:]; strings.Contains(again, "level=ERROR") {
		t.Errorf("the second Load logged again:\n%s", again)
	}
	// … and picks up a renewal uploaded through another replica.
	_, renewed := e.upload(t, testTopic)
	if err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if after, _ := restarted.Provider(testTopic); !after.Certificate().TLS.Leaf.Equal(mustParse(t, renewed)) {
		t.Error("Load did not pick up the renewal")
	}
}

// storedKey returns the sealed key stored for topic.
func (e *managerEnv) storedKey(t *testing.T, topic string) []byte {
	t.Helper()
	sc, ok := e.store.get(topic)
	if !ok {
		t.Fatalf("nothing stored for %s", topic)
	}
	return sc.SealedKey
}

func TestManagerList(t *testing.T) {
	e := newManagerEnv(t)
	if infos, err := e.m.List(t.Context()); err != nil || len(infos) != 0 {
		t.Fatalf("List of nothing = %v, %v", infos, err)
	}
	e.upload(t, testTopic)
	e.upload(t, otherTopic)
	e.store.usage[testTopic] = 7
	notAfter := e.store.certs[testTopic].NotAfter

	tests := []struct {
		name     string
		at       time.Time
		daysLeft int
		expiring bool
	}{
		{"a year to go", notAfter.Add(-200 * 24 * time.Hour), 200, false},
		{"31 days to go", notAfter.Add(-31 * 24 * time.Hour), 31, false},
		{"30 days to go", notAfter.Add(-30 * 24 * time.Hour), 30, true},
		{"an hour to go", notAfter.Add(-time.Hour), 0, true},
		{"expired a second ago", notAfter.Add(time.Second), -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.clock.t = tt.at
			infos, err := e.m.List(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(infos) != 2 || infos[0].Topic != testTopic || infos[1].Topic != otherTopic {
				t.Fatalf("List = %+v, want both topics in order", infos)
			}
			want := CertificateInfo{Topic: testTopic, NotAfter: notAfter, DaysLeft: tt.daysLeft,
				Enrollments: 7, Expiring: tt.expiring}
			if infos[0] != want {
				t.Errorf("info = %+v, want %+v", infos[0], want)
			}
		})
	}
}

func TestManagerTopic(t *testing.T) {
	e := newManagerEnv(t)
	if _, err := e.m.Topic(t.Context()); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("Topic with none stored = %v, want ErrNoCertificate", err)
	}
	e.upload(t, testTopic)
	e.clock.Advance(time.Minute)
	e.upload(t, otherTopic)
	if got, err := e.m.Topic(t.Context()); err != nil || got != otherTopic {
		t.Errorf("Topic = %q, %v; want the latest upload's %s", got, err, otherTopic)
	}
	// The latest has expired: the next most recent that has not.
	sc := e.store.certs[otherTopic]
	sc.NotAfter = e.clock.Now()
	e.store.certs[otherTopic] = sc
	if got, err := e.m.Topic(t.Context()); err != nil || got != testTopic {
		t.Errorf("Topic = %q, %v; want %s", got, err, testTopic)
	}
	e.clock.Advance(400 * 24 * time.Hour)
	if _, err := e.m.Topic(t.Context()); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("Topic with every certificate expired = %v, want ErrNoCertificate", err)
	}
}

func TestManagerExpiryWarnings(t *testing.T) {
	e := newManagerEnv(t)
	e.upload(t, testTopic)
	if strings.Contains(e.logs.String(), "expires soon") {
		t.Fatalf("warned about a certificate with a year left:\n%s", e.logs)
	}
	notAfter := e.store.certs[testTopic].NotAfter
	e.clock.t = notAfter.Add(-10*24*time.Hour - time.Minute)
	e.upload(t, otherTopic) // NotAfter a year from the real now: 10 days from the clock's
	if !strings.Contains(e.logs.String(), "expires soon") || !strings.Contains(e.logs.String(), "days_left=10") {
		t.Errorf("Upload did not warn:\n%s", e.logs)
	}
	e.logs.Reset()
	restarted := NewProviders()
	t.Cleanup(restarted.Close)
	if err := e.manager(restarted).Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if strings.Count(e.logs.String(), "expires soon") != 2 {
		t.Errorf("Load did not warn about both:\n%s", e.logs)
	}
}

func TestManagerStoreErrors(t *testing.T) {
	e := newManagerEnv(t)
	e.upload(t, testTopic)
	boom := errors.New("database gone")
	certPEM, keyPEM := e.apns.PushCertificate(otherTopic)
	e.store.putErr = boom
	if _, err := e.m.Upload(t.Context(), Upload{CertPEM: certPEM, KeyPEM: keyPEM}); !errors.Is(err, boom) {
		t.Errorf("Upload = %v", err)
	}
	if _, ok := e.providers.Provider(otherTopic); ok {
		t.Error("a certificate that was not stored was loaded")
	}
	e.store.err = boom
	if _, err := e.m.Upload(t.Context(), Upload{CertPEM: certPEM, KeyPEM: keyPEM}); !errors.Is(err, boom) {
		t.Errorf("Upload = %v", err)
	}
	if _, err := e.m.List(t.Context()); !errors.Is(err, boom) {
		t.Errorf("List = %v", err)
	}
	if _, err := e.m.Topic(t.Context()); !errors.Is(err, boom) {
		t.Errorf("Topic = %v", err)
	}
	if err := e.m.Load(t.Context()); !errors.Is(err, boom) {
		t.Errorf("Load = %v", err)
	}
}
