package push

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// StoredCertificate is a push certificate as kept in the database.
type StoredCertificate struct {
	Topic string
	// CertPEM is the certificate, then its chain, as PEM.
	CertPEM   []byte
	SealedKey []byte // PKCS#8 DER sealed with the server's secret key
	NotAfter  time.Time
	UpdatedAt time.Time
}

// CertStore keeps push certificates.
type CertStore interface {
	// PushCertificates lists stored certificates ordered by topic; none: nil, nil.
	PushCertificates(ctx context.Context) ([]StoredCertificate, error)
	// PutPushCertificate stores c, replacing the one with the same topic. Idempotent.
	PutPushCertificate(ctx context.Context, c StoredCertificate) error
	// TopicUsage counts enabled enrollments per topic (topics with none are absent).
	TopicUsage(ctx context.Context) (map[string]int, error)
}

// Sealer encrypts secrets at rest; *pki.Sealer implements it.
type Sealer interface {
	Seal(plaintext []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
}

// Upload is a push certificate to install: the certificate and its private
// key as PEM (CertPEM, KeyPEM), or both in a PKCS#12 file (PKCS12) with
// its Password.
type Upload struct {
	CertPEM, KeyPEM []byte
	PKCS12          []byte
	Password        string
	// Force installs a certificate whose topic no enrolled device uses.
	Force bool
}

// CertificateInfo describes a stored push certificate.
type CertificateInfo struct {
	Topic    string    `json:"topic"`
	NotAfter time.Time `json:"not_after"`
	// DaysLeft is the whole days until NotAfter; negative once it has passed.
	DaysLeft int `json:"days_left"`
	// Enrollments counts the enabled enrollments that use the topic.
	Enrollments int  `json:"enrollments"`
	Expiring    bool `json:"expiring"` // within 30 days, or expired
}

var (
	// ErrTopicChange is wrapped by the *TopicChangeError that Upload returns
	// for a certificate whose topic no enrolled device uses.
	ErrTopicChange = errors.New("the push certificate's topic is not the one enrolled devices use")
	// ErrUnreadable is wrapped in the *CertificateError that Upload returns
	// when what was uploaded is not a certificate and key it can read.
	ErrUnreadable = errors.New("unreadable push certificate")
)

// ErrNoCertificate (declared with the provider) is what Manager.Topic
// returns when no valid push certificate is stored.

// TopicChangeError refuses a push certificate whose topic differs from the
// topics of the enrolled devices. A device only accepts pushes on the topic
// it enrolled with, which its enrollment profile fixed, so a certificate
// with a new topic can never wake it: moving the fleet to it means
// re-enrolling every device. Apple keeps the topic when a certificate is
// renewed (at identity.apple.com, with the same Apple ID), so a different
// topic nearly always means a certificate made anew by mistake. Its message
// is safe to show to the administrator.
type TopicChangeError struct {
	// Topic is the uploaded certificate's.
	Topic string
	// InUse counts enabled enrollments per topic.
	InUse map[string]int
}

// maxTopicsNamed bounds the topics a TopicChangeError names; a server
// holds one per organisation, rarely many.
const maxTopicsNamed = 5

func (e *TopicChangeError) Error() string {
	topics := make([]string, 0, len(e.InUse))
	for t := range e.InUse {
		topics = append(topics, t)
	}
	// Most used first: those are the devices the administrator stands to lose.
	slices.SortFunc(topics, func(a, b string) int {
		return cmp.Or(cmp.Compare(e.InUse[b], e.InUse[a]), strings.Compare(a, b))
	})
	var uses []string
	for _, t := range topics[:min(len(topics), maxTopicsNamed)] {
		uses = append(uses, fmt.Sprintf("%s (%s)", t, plural(e.InUse[t], "enrollment")))
	}
	if more := len(topics) - len(uses); more > 0 {
		uses = append(uses, fmt.Sprintf("%d more", more))
	}
	return fmt.Sprintf("push certificate topic %s is not the topic of any enrolled device: enrolled devices use %s. "+
		"Devices are only woken on the topic they enrolled with, so if this certificate replaces theirs, "+
		"every such device would have to re-enroll. To keep them, renew the existing certificate at "+
		"identity.apple.com with the same Apple ID (a renewal keeps its topic) and upload that. "+
		"If this certificate is meant to be used alongside the others (another organisation), "+
		"upload it again with force",
		e.Topic, strings.Join(uses, ", "))
}

func (e *TopicChangeError) Unwrap() error { return ErrTopicChange }

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// Manager installs push certificates: it validates and stores uploaded
// ones, with their keys sealed, and keeps a Provider per stored
// certificate in Providers. It is safe for concurrent use.
type Manager struct {
	store        CertStore
	sealer       Sealer
	providers    *Providers
	providerOpts []ProviderOption
	now          func() time.Time
	logger       *slog.Logger

	// mu orders uploads and loads, so the certificate stored last for a
	// topic is also the one its provider pushes with.
	mu sync.Mutex
	// failed holds, per topic, the UpdatedAt of the stored certificate
	// that did not load, so a periodic Load reports it once.
	failed map[string]time.Time
}

// ManagerOption configures a Manager.
type ManagerOption func(*Manager)

// WithProviderOptions sets the options of the providers the manager makes
// (WithURL and WithRootCAs for --apns-url and --apns-ca).
func WithProviderOptions(opts ...ProviderOption) ManagerOption {
	return func(m *Manager) { m.providerOpts = append(m.providerOpts, opts...) }
}

// WithManagerClock sets the clock.
func WithManagerClock(now func() time.Time) ManagerOption {
	return func(m *Manager) { m.now = now }
}

// WithManagerLogger sets the logger.
func WithManagerLogger(l *slog.Logger) ManagerOption {
	return func(m *Manager) { m.logger = l }
}

// NewManager returns a Manager keeping certificates in store, their keys
// sealed by sealer, and their providers in providers.
func NewManager(store CertStore, sealer Sealer, providers *Providers, opts ...ManagerOption) *Manager {
	m := &Manager{
		store:     store,
		sealer:    sealer,
		providers: providers,
		now:       time.Now,
		logger:    slog.New(slog.DiscardHandler),
		failed:    make(map[string]time.Time),
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Load puts every stored certificate into the providers. A certificate
// that no longer loads (expired, or its key no longer opens) is skipped
// with an error in the log, so one bad certificate does not stop the
// others, or the server. Providers whose certificate is unchanged are kept
// with their connections, so Load may be called again, for instance
// periodically, to pick up certificates uploaded through another replica.
func (m *Manager) Load(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	stored, err := m.store.PushCertificates(ctx)
	if err != nil {
		return fmt.Errorf("reading push certificates: %w", err)
	}
	now := m.now()
	for _, sc := range stored {
		if m.loaded(sc) {
			continue
		}
		cert, err := m.open(sc)
		if err != nil {
			level := slog.LevelError
			if at, ok := m.failed[sc.Topic]; ok && at.Equal(sc.UpdatedAt) {
				level = slog.LevelDebug
			}
			m.failed[sc.Topic] = sc.UpdatedAt
			m.logger.Log(ctx, level, "push certificate not loaded: devices on its topic cannot be pushed until a valid one is uploaded",
				"topic", sc.Topic, "not_after", sc.NotAfter, "err", err)
			continue
		}
		delete(m.failed, sc.Topic)
		p, err := NewProvider(cert, m.providerOpts...)
		if err != nil {
			return fmt.Errorf("push provider for %s: %w", sc.Topic, err)
		}
		m.providers.Set(p)
		m.logger.InfoContext(ctx, "push certificate loaded", "topic", cert.Topic, "not_after", cert.NotAfter)
		m.warnExpiry(ctx, cert, now)
	}
	return nil
}

// loaded reports whether the provider for sc's topic already pushes with
// sc's certificate.
func (m *Manager) loaded(sc StoredCertificate) bool {
	p, ok := m.providers.Provider(sc.Topic)
	if !ok {
		return false
	}
	block, _ := pem.Decode(sc.CertPEM)
	chain := p.Certificate().TLS.Certificate
	return block != nil && len(chain) > 0 && bytes.Equal(block.Bytes, chain[0])
}

// open unseals a stored certificate's key and validates the pair again:
// the stored row may have expired since, or been sealed with another key.
func (m *Manager) open(sc StoredCertificate) (*Certificate, error) {
	der, err := m.sealer.Open(sc.SealedKey)
	if err != nil {
		return nil, fmt.Errorf("opening push key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	cert, err := LoadKeyPair(sc.CertPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if cert.Topic != sc.Topic {
		return nil, fmt.Errorf("stored under topic %s but the certificate's is %s", sc.Topic, cert.Topic)
	}
	return cert, nil
}

// Upload validates a push certificate, stores it (replacing the one with
// the same topic: a renewal) and starts pushing with it. Problems with what
// was uploaded are a *CertificateError (no MDM topic, expired, a key that
// does not match, unreadable: ErrUnreadable); a topic no enrolled device
// uses is a *TopicChangeError unless u.Force. A topic already stored is
// never a change: that certificate is being renewed.
func (m *Manager) Upload(ctx context.Context, u Upload) (*CertificateInfo, error) {
	cert, err := parseUpload(u)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	usage, err := m.store.TopicUsage(ctx)
	if err != nil {
		return nil, fmt.Errorf("counting enrollments per push topic: %w", err)
	}
	inUse := make(map[string]int, len(usage))
	for t, n := range usage {
		if n > 0 {
			inUse[t] = n
		}
	}
	if len(inUse) > 0 && inUse[cert.Topic] == 0 {
		known, err := m.stored(ctx, cert.Topic)
		if err != nil {
			return nil, err
		}
		switch {
		case known: // a renewal of a certificate whose devices have not enrolled yet
		case !u.Force:
			return nil, &TopicChangeError{Topic: cert.Topic, InUse: inUse}
		default:
			m.logger.WarnContext(ctx, "push certificate with a topic no enrolled device uses installed by force; devices on other topics keep their certificates",
				"topic", cert.Topic, "topics_in_use", len(inUse))
		}
	}

	sc, err := m.seal(cert)
	if err != nil {
		return nil, err
	}
	// The provider is made before storing so a certificate is never stored
	// that this server could not push with.
	p, err := NewProvider(cert, m.providerOpts...)
	if err != nil {
		return nil, fmt.Errorf("push provider for %s: %w", cert.Topic, err)
	}
	now := m.now()
	sc.UpdatedAt = now
	if err := m.store.PutPushCertificate(ctx, sc); err != nil {
		p.Close()
		return nil, fmt.Errorf("storing push certificate %s: %w", cert.Topic, err)
	}
	m.providers.Set(p)
	m.logger.InfoContext(ctx, "push certificate installed", "topic", cert.Topic, "not_after", cert.NotAfter,
		"enrollments", inUse[cert.Topic])
	m.warnExpiry(ctx, cert, now)
	info := m.info(cert.Topic, cert.NotAfter, inUse[cert.Topic], now)
	return &info, nil
}

// parseUpload reads an upload; everything wrong with it is a
// *CertificateError, the uploader's to fix.
func parseUpload(u Upload) (*Certificate, error) {
	pemGiven := len(u.CertPEM) > 0 || len(u.KeyPEM) > 0
	var (
		cert *Certificate
		err  error
	)
	switch {
	case pemGiven && len(u.PKCS12) > 0:
		return nil, &CertificateError{Err: ErrUnreadable,
			Detail: "send either the certificate and its private key, or a .p12, not both"}
	case len(u.PKCS12) > 0:
		cert, err = LoadPKCS12(u.PKCS12, u.Password)
	case len(u.CertPEM) > 0 && len(u.KeyPEM) > 0:
		cert, err = LoadKeyPair(u.CertPEM, u.KeyPEM)
	default:
		return nil, &CertificateError{Err: ErrUnreadable,
			Detail: "send the certificate and its private key, or a .p12 and its password"}
	}
	if ce := (*CertificateError)(nil); err != nil && !errors.As(err, &ce) {
		return nil, &CertificateError{Err: ErrUnreadable, Detail: err.Error()}
	}
	return cert, err
}

// stored reports whether a certificate for topic is stored.
func (m *Manager) stored(ctx context.Context, topic string) (bool, error) {
	stored, err := m.store.PushCertificates(ctx)
	if err != nil {
		return false, fmt.Errorf("reading push certificates: %w", err)
	}
	return slices.ContainsFunc(stored, func(sc StoredCertificate) bool { return sc.Topic == topic }), nil
}

// seal turns cert into a row: the chain as PEM, normalised whatever form
// it came in, and the key as sealed PKCS#8.
func (m *Manager) seal(cert *Certificate) (StoredCertificate, error) {
	der, err := x509.MarshalPKCS8PrivateKey(cert.TLS.PrivateKey)
	if err != nil {
		return StoredCertificate{}, fmt.Errorf("encoding push key: %w", err)
	}
	sealed, err := m.sealer.Seal(der)
	clear(der)
	if err != nil {
		return StoredCertificate{}, fmt.Errorf("sealing push key: %w", err)
	}
	var certPEM []byte
	for _, c := range cert.TLS.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	return StoredCertificate{Topic: cert.Topic, CertPEM: certPEM, SealedKey: sealed, NotAfter: cert.NotAfter}, nil
}

// List describes the stored certificates, ordered by topic, with how many
// enabled enrollments use each.
func (m *Manager) List(ctx context.Context) ([]CertificateInfo, error) {
	stored, err := m.store.PushCertificates(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading push certificates: %w", err)
	}
	usage, err := m.store.TopicUsage(ctx)
	if err != nil {
		return nil, fmt.Errorf("counting enrollments per push topic: %w", err)
	}
	now := m.now()
	infos := make([]CertificateInfo, len(stored))
	for i, sc := range stored {
		infos[i] = m.info(sc.Topic, sc.NotAfter, usage[sc.Topic], now)
	}
	return infos, nil
}

func (m *Manager) info(topic string, notAfter time.Time, enrollments int, now time.Time) CertificateInfo {
	c := Certificate{Topic: topic, NotAfter: notAfter}
	return CertificateInfo{
		Topic:       topic,
		NotAfter:    notAfter,
		DaysLeft:    c.DaysLeft(now),
		Enrollments: enrollments,
		Expiring:    notAfter.Sub(now) <= expiryWarning,
	}
}

// Topic returns the topic new enrollments use: that of the most recently
// updated certificate that has not expired, or ErrNoCertificate when there
// is none. It reads the store, so every replica answers alike.
func (m *Manager) Topic(ctx context.Context) (string, error) {
	stored, err := m.store.PushCertificates(ctx)
	if err != nil {
		return "", fmt.Errorf("reading push certificates: %w", err)
	}
	now := m.now()
	var best *StoredCertificate
	for i := range stored {
		sc := &stored[i]
		if !now.Before(sc.NotAfter) {
			continue
		}
		if best == nil || sc.UpdatedAt.After(best.UpdatedAt) {
			best = sc
		}
	}
	if best == nil {
		return "", ErrNoCertificate
	}
	return best.Topic, nil
}

// warnExpiry logs a warning for a certificate expiring within 30 days:
// after that devices stop hearing from bramley, and a certificate made
// anew instead of renewed gets a new topic.
func (m *Manager) warnExpiry(ctx context.Context, c *Certificate, now time.Time) {
	if c.NotAfter.Sub(now) > expiryWarning {
		return
	}
	m.logger.WarnContext(ctx, "push certificate expires soon: renew it at identity.apple.com with the same Apple ID (a new certificate gets a new topic, which means re-enrolling every device)",
		"topic", c.Topic, "not_after", c.NotAfter, "days_left", c.DaysLeft(now))
}
