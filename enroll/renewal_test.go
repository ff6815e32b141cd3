package enroll

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage"
)

var renewalNow = time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)

const (
	renewalIdentifier = "com.example.bramley.enrollment"
	renewalTopic      = "com.apple.mgmt.External.renewal-test"
)

// renewalSettings is an in-memory pki.SettingStore.
type renewalSettings struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *renewalSettings) Setting(_ context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[name]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (s *renewalSettings) CreateSetting(_ context.Context, name string, value []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	if v, ok := s.m[name]; ok {
		return bytes.Clone(v), nil
	}
	s.m[name] = bytes.Clone(value)
	return bytes.Clone(value), nil
}

// challengeStore is an enroll.Store keeping the challenges profiles carry.
type challengeStore struct {
	mu         sync.Mutex
	challenges map[[32]byte]scep.Challenge
}

func (s *challengeStore) CreateEnrollmentToken(context.Context, Token) error {
	return errors.New("unused")
}

func (s *challengeStore) UseEnrollmentToken(context.Context, []byte, time.Time) (*Token, error) {
	return nil, errors.New("unused")
}

func (s *challengeStore) CreateChallenge(_ context.Context, hash []byte, c scep.Challenge, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.challenges == nil {
		s.challenges = map[[32]byte]scep.Challenge{}
	}
	s.challenges[[32]byte(hash)] = c
	return nil
}

func (s *challengeStore) lookup(secret string) (scep.Challenge, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.challenges[sha256.Sum256([]byte(secret))]
	return c, ok
}

// attempt is one RecordRenewalAttempt call.
type attempt struct {
	deviceID, commandUUID string
	cert                  []byte
	at                    time.Time
}

// renewalStore hands out its batches, one per claim, and records the rest.
type renewalStore struct {
	mu       sync.Mutex
	batches  [][]ExpiringIdentity
	claims   []RenewalClaim
	attempts []attempt
	statuses []RenewalStatus
	queries  []RenewalQuery
	err      error
	claimed  chan struct{} // closed at the first claim, when not nil
}

func (s *renewalStore) ExpiringIdentities(_ context.Context, c RenewalClaim) ([]ExpiringIdentity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claimed != nil && len(s.claims) == 0 {
		close(s.claimed)
	}
	s.claims = append(s.claims, c)
	if s.err != nil {
		return nil, s.err
	}
	if len(s.batches) == 0 {
		return nil, nil
	}
	b := s.batches[0]
	s.batches = s.batches[1:]
	return b, nil
}

func (s *renewalStore) RecordRenewalAttempt(_ context.Context, deviceID, commandUUID string, cert []byte, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts = append(s.attempts, attempt{deviceID, commandUUID, cert, now})
	return nil
}

func (s *renewalStore) RenewalStatuses(_ context.Context, q RenewalQuery) ([]RenewalStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = append(s.queries, q)
	if s.err != nil {
		return nil, s.err
	}
	var out []RenewalStatus
	for _, st := range s.statuses {
		if !q.FailedOnly || st.State == RenewalFailed {
			out = append(out, st)
		}
	}
	return out, nil
}

// enqueued is one command queued.
type enqueued struct {
	cmd  *mdm.Command
	ids  []string
	opts queue.EnqueueOptions
}

type fakeEnqueuer struct {
	mu   sync.Mutex
	cmds []enqueued
	fail map[string]error // by enrollment ID
}

func (e *fakeEnqueuer) Enqueue(_ context.Context, cmd *mdm.Command, ids []string, opts queue.EnqueueOptions) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		if err := e.fail[id]; err != nil {
			return err
		}
	}
	e.cmds = append(e.cmds, enqueued{cmd, slices.Clone(ids), opts})
	return nil
}

type renewalEnv struct {
	svc        *RenewalService
	store      *renewalStore
	enq        *fakeEnqueuer
	challenges *challengeStore
	signer     *pki.Signer
}

func newRenewalEnv(t *testing.T, cfg RenewalConfig) *renewalEnv {
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
	settings := &renewalSettings{}
	ca, err := pki.LoadOrCreateCA(ctx, settings, sealer, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := pki.LoadOrCreateSigner(ctx, settings, sealer, ca)
	if err != nil {
		t.Fatal(err)
	}
	e := &renewalEnv{store: &renewalStore{}, enq: &fakeEnqueuer{}, challenges: &challengeStore{}, signer: signer}
	enrollment := New(e.challenges, ca, signer, func(context.Context) (string, error) { return renewalTopic, nil },
		Config{PublicURL: "https://mdm.example.com", Identifier: renewalIdentifier},
		WithClock(func() time.Time { return renewalNow }))
	e.svc = NewRenewalService(enrollment, e.store, e.enq, cfg)
	return e
}

// sentProfile is what a device finds in a renewal's InstallProfile.
type sentProfile struct {
	identifier, topic, challenge, cn string
}

// readInstallProfile decodes the command and the signed profile in it,
// checking the signature is the enrollment signer's.
func readInstallProfile(t *testing.T, cmd *mdm.Command, signer *pki.Signer) sentProfile {
	t.Helper()
	var c struct {
		Command struct {
			RequestType string
			Payload     []byte
		}
	}
	if err := plist.Unmarshal(cmd.Raw, &c); err != nil {
		t.Fatal(err)
	}
	if c.Command.RequestType != "InstallProfile" || cmd.RequestType != "InstallProfile" {
		t.Fatalf("RequestType %q", c.Command.RequestType)
	}
	p7, err := pkcs7.Parse(c.Command.Payload)
	if err != nil {
		t.Fatalf("payload is not CMS: %v", err)
	}
	if err := p7.Verify(); err != nil {
		t.Fatalf("profile signature: %v", err)
	}
	if s := p7.GetOnlySigner(); s == nil || !s.Equal(signer.Cert) {
		t.Error("profile not signed by the enrollment signer")
	}
	var p struct {
		PayloadIdentifier string
		PayloadContent    []map[string]any
	}
	if err := plist.Unmarshal(p7.Content, &p); err != nil {
		t.Fatal(err)
	}
	out := sentProfile{identifier: p.PayloadIdentifier}
	for _, pl := range p.PayloadContent {
		switch pl["PayloadType"] {
		case "com.apple.mdm":
			out.topic, _ = pl["Topic"].(string)
		case "com.apple.security.scep":
			sc := pl["PayloadContent"].(map[string]any)
			out.challenge, _ = sc["Challenge"].(string)
			out.cn = sc["Subject"].([]any)[0].([]any)[0].([]any)[1].(string)
		}
	}
	return out
}

func TestRenewalSweep(t *testing.T) {
	cfg := RenewalConfig{Window: 20 * 24 * time.Hour, RetryAfter: 12 * time.Hour, BatchSize: 2}
	e := newRenewalEnv(t, cfg)
	a := ExpiringIdentity{DeviceID: "UDID-A", CertSHA256: []byte("cert-a"), Subject: `CN=sim\, device,O=bramley`,
		NotAfter: renewalNow.Add(48 * time.Hour), Topic: renewalTopic + ".a", Attempts: 2}
	b := ExpiringIdentity{DeviceID: "UDID-B", CertSHA256: []byte("cert-b"), Subject: "CN=b", Topic: renewalTopic}
	c := ExpiringIdentity{DeviceID: "UDID-C", CertSHA256: []byte("cert-c"), Subject: "O=no common name"}
	e.store.batches = [][]ExpiringIdentity{{a, b}, {c}}
	e.enq.fail = map[string]error{"UDID-B": errors.New("queue on fire")}

	sent, err := e.svc.Sweep(context.Background())
	if sent != 2 {
		t.Errorf("sent %d, want 2", sent)
	}
	// B's failure is reported, and did not stop C.
	if err == nil || !strings.Contains(err.Error(), "1 identity renewals not sent") || !strings.Contains(err.Error(), "queue on fire") {
		t.Errorf("error = %v, want B's failure counted", err)
	}
	wantClaim := RenewalClaim{Now: renewalNow, ExpiresBefore: renewalNow.Add(20 * 24 * time.Hour),
		RetryBefore: renewalNow.Add(-12 * time.Hour), LeaseUntil: renewalNow.Add(renewalLease), Limit: 2}
	// A full batch asks for another; the short second one ends the sweep.
	if len(e.store.claims) != 2 || e.store.claims[0] != wantClaim || e.store.claims[1] != wantClaim {
		t.Errorf("claims = %+v, want two of %+v", e.store.claims, wantClaim)
	}

	if len(e.enq.cmds) != 2 {
		t.Fatalf("queued %d commands, want 2", len(e.enq.cmds))
	}
	tests := []struct {
		id        ExpiringIdentity
		wantTopic string
		wantCN    string // "" for a fresh "bramley …" name
	}{
		{id: a, wantTopic: renewalTopic + ".a", wantCN: "sim, device"},
		{id: c, wantTopic: renewalTopic},
	}
	for i, tt := range tests {
		q := e.enq.cmds[i]
		if !slices.Equal(q.ids, []string{tt.id.DeviceID}) || q.opts != (queue.EnqueueOptions{TTL: 12 * time.Hour}) {
			t.Errorf("%s: queued for %v with %+v", tt.id.DeviceID, q.ids, q.opts)
		}
		p := readInstallProfile(t, q.cmd, e.signer)
		if p.identifier != renewalIdentifier {
			t.Errorf("%s: PayloadIdentifier %q: a renewal must replace the installed profile", tt.id.DeviceID, p.identifier)
		}
		if p.topic != tt.wantTopic {
			t.Errorf("%s: Topic %q, want %q", tt.id.DeviceID, p.topic, tt.wantTopic)
		}
		ch, ok := e.challenges.lookup(p.challenge)
		if !ok {
			t.Fatalf("%s: the profile's challenge was not stored", tt.id.DeviceID)
		}
		want := scep.Challenge{Subject: p.cn, EnrollmentID: tt.id.DeviceID, Source: "identity renewal",
			ExpiresAt: renewalNow.Add(12*time.Hour + challengeMargin)}
		if ch != want {
			t.Errorf("%s: challenge %+v, want %+v", tt.id.DeviceID, ch, want)
		}
		if tt.wantCN != "" && p.cn != tt.wantCN {
			t.Errorf("%s: subject CN %q, want the current %q", tt.id.DeviceID, p.cn, tt.wantCN)
		}
		if tt.wantCN == "" && !strings.HasPrefix(p.cn, "bramley ") {
			t.Errorf("%s: subject CN %q, want a fresh one", tt.id.DeviceID, p.cn)
		}
	}
	wantAttempts := []attempt{
		{"UDID-A", e.enq.cmds[0].cmd.CommandUUID, []byte("cert-a"), renewalNow},
		{"UDID-C", e.enq.cmds[1].cmd.CommandUUID, []byte("cert-c"), renewalNow},
	}
	if !slices.EqualFunc(e.store.attempts, wantAttempts, func(x, y attempt) bool {
		return x.deviceID == y.deviceID && x.commandUUID == y.commandUUID && bytes.Equal(x.cert, y.cert) && x.at.Equal(y.at)
	}) {
		t.Errorf("attempts = %+v, want %+v", e.store.attempts, wantAttempts)
	}
}

func TestRenewalSweepClaimError(t *testing.T) {
	e := newRenewalEnv(t, RenewalConfig{})
	e.store.err = errors.New("database gone")
	if _, err := e.svc.Sweep(context.Background()); err == nil || !strings.Contains(err.Error(), "database gone") {
		t.Errorf("error = %v", err)
	}
	if len(e.enq.cmds) != 0 {
		t.Error("queued without a claim")
	}
}

func TestRenewalDefaults(t *testing.T) {
	e := newRenewalEnv(t, RenewalConfig{})
	want := RenewalConfig{Window: 30 * 24 * time.Hour, Interval: time.Hour, RetryAfter: 24 * time.Hour,
		StartDelay: time.Minute, BatchSize: 100}
	if e.svc.cfg != want {
		t.Errorf("config = %+v, want %+v", e.svc.cfg, want)
	}
}

func TestRenewalRun(t *testing.T) {
	e := newRenewalEnv(t, RenewalConfig{StartDelay: time.Millisecond, Interval: time.Hour})
	e.store.claimed = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.svc.Run(ctx) }()
	select {
	case <-e.store.claimed:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not sweep after its start delay")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestRenewals(t *testing.T) {
	e := newRenewalEnv(t, RenewalConfig{})
	e.store.statuses = []RenewalStatus{
		{DeviceID: "A", State: RenewalPending},
		{DeviceID: "B", State: RenewalFailed, Reason: ReasonCommandFailed},
		{DeviceID: "C", State: RenewalRenewed},
		{DeviceID: "D", State: RenewalFailed, Reason: ReasonExpiring},
	}
	tests := []struct {
		state string
		want  []string
	}{
		{"", []string{"A", "B", "C", "D"}},
		{RenewalFailed, []string{"B", "D"}},
		{RenewalPending, []string{"A"}},
		{RenewalRenewed, []string{"C"}},
		{RenewalUnenrolled, nil},
	}
	for _, tt := range tests {
		got, err := e.svc.Renewals(context.Background(), tt.state)
		if err != nil {
			t.Fatalf("state %q: %v", tt.state, err)
		}
		var ids []string
		for _, st := range got {
			ids = append(ids, st.DeviceID)
		}
		if !slices.Equal(ids, tt.want) {
			t.Errorf("state %q: %v, want %v", tt.state, ids, tt.want)
		}
	}
	// The store computes states at now, failing identities within 7 days.
	q := e.store.queries[1]
	if q != (RenewalQuery{Now: renewalNow, FailBefore: renewalNow.Add(7 * 24 * time.Hour), FailedOnly: true}) {
		t.Errorf("failed query = %+v", q)
	}
	if n, err := e.svc.FailedCount(context.Background()); err != nil || n != 2 {
		t.Errorf("FailedCount = %d, %v; want 2", n, err)
	}

	_, err := e.svc.Renewals(context.Background(), "broken")
	var he *handler.Error
	if !errors.As(err, &he) || he.Status != http.StatusBadRequest {
		t.Errorf("unknown state: %v, want a 400", err)
	}
	e.store.err = errors.New("database gone")
	if _, err := e.svc.FailedCount(context.Background()); err == nil {
		t.Error("FailedCount hid a store failure")
	}
}

func TestCommonName(t *testing.T) {
	tests := []struct{ subject, want string }{
		{"CN=bramley 1234", "bramley 1234"},
		{"CN=dev,O=bramley", "dev"},
		{"O=bramley,CN=dev", "dev"},
		{`CN=a\,b\+c\\d,O=x`, `a,b+c\d`},
		{`CN=\ padded\ `, " padded "},
		{"SERIALNUMBER=1+CN=multi,O=x", "multi"},
		{"O=CN=not a common name", ""},
		{"O=bramley", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := commonName(tt.subject); got != tt.want {
			t.Errorf("commonName(%q) = %q, want %q", tt.subject, got, tt.want)
		}
	}
	// What pkix.Name writes, commonName reads back.
	for _, cn := range []string{"bramley 5F1C", `a,b+c"d\e<f>g;h`, " #lead", "trail ", "ünïcode"} {
		name := pkix.Name{CommonName: cn, Organization: []string{"bramley, inc"}, Country: []string{"US"}}
		if got := commonName(name.String()); got != cn {
			t.Errorf("commonName(%q) = %q, want %q", name.String(), got, cn)
		}
	}
}
