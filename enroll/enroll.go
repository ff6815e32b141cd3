// Package enroll serves the enrollment routes. Direct enrollment: an
// administrator mints an enrollment token; a person opens /enroll?token=…
// and downloads the signed enrollment profile, which carries bramley's CA
// root, a SCEP payload with a fresh one-time challenge, and the MDM payload.
// Before an enrolled device's identity expires, RenewalService sends it the
// same profile again, with a challenge issued for that device.
package enroll

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage"
)

// Token is an enrollment token as stored: only the SHA-256 of its secret.
type Token struct {
	ID        string    `json:"id"` // public, for listings and logs
	Hash      []byte    `json:"-"`
	Label     string    `json:"label,omitempty"`
	MaxUses   int       `json:"max_uses"` // 0: unlimited
	Uses      int       `json:"uses"`
	ExpiresAt time.Time `json:"expires_at"`
	CreatedAt time.Time `json:"created_at"`
}

// Errors a Store returns for a token that exists but cannot be used.
var (
	ErrTokenExpired = errors.New("enrollment token expired")
	ErrTokenUsedUp  = errors.New("enrollment token used up")
)

// Store keeps enrollment tokens and the SCEP challenges profiles carry.
type Store interface {
	// CreateEnrollmentToken stores a token. storage.ErrConflict when its
	// ID or hash exists.
	CreateEnrollmentToken(ctx context.Context, t Token) error
	// UseEnrollmentToken counts one use of the token with this hash and
	// returns it, in one atomic step: of two requests racing for a token's
	// last use, one gets it. storage.ErrNotFound when unknown;
	// ErrTokenExpired when expired at now; ErrTokenUsedUp when MaxUses > 0
	// and every use is taken. A refused use changes nothing.
	UseEnrollmentToken(ctx context.Context, hash []byte, now time.Time) (*Token, error)
	// CreateChallenge stores a one-time SCEP challenge by its SHA-256, with
	// what it is bound to (see scep.ChallengeStore, which consumes it).
	CreateChallenge(ctx context.Context, hash []byte, c scep.Challenge, now time.Time) error
}

// TopicSource says which APNs topic devices enroll with: the push
// certificate's once one is uploaded, before that the configured one.
type TopicSource func(ctx context.Context) (string, error)

// ErrNoTopic means no push topic is known yet.
var ErrNoTopic = errors.New("no push topic: upload a push certificate or start bramley with --push-topic")

// Config is what the enrollment profile says.
type Config struct {
	// PublicURL is the base URL devices reach bramley at.
	PublicURL string
	// Identifier is the profile's top-level PayloadIdentifier, stable per
	// server so that a newer profile replaces the installed one.
	Identifier   string
	Organization string
	// SignMessage makes devices sign every request (Mdm-Signature), for
	// deployments behind a TLS-terminating proxy.
	SignMessage bool
	// AccessRights, 0 for all (8191).
	AccessRights int
	// ChallengeTTL is how long a profile's SCEP challenge stays usable.
	ChallengeTTL time.Duration
	// Identity is how the device gets its identity: IdentitySCEP (the
	// default, recommended: the key never leaves the device) or
	// IdentityPKCS12 (bramley makes key and certificate and sends them in
	// the profile, for devices or networks where SCEP cannot run).
	Identity string
	// IdentityLifetime is how long PKCS#12 identities last.
	IdentityLifetime time.Duration
}

// Identity kinds.
const (
	IdentitySCEP   = "scep"
	IdentityPKCS12 = "pkcs12"
)

// Service serves enrollment.
type Service struct {
	store  Store
	ca     *pki.CA
	signer *pki.Signer
	topic  TopicSource
	cfg    Config
	logger *slog.Logger
	now    func() time.Time
	certs  pki.CertificateStore
}

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.logger = l } }

// WithClock sets the clock.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithCertificateStore records PKCS#12 identities issued for renewals with
// their device.
func WithCertificateStore(certs pki.CertificateStore) Option {
	return func(s *Service) { s.certs = certs }
}

// New returns the enrollment Service.
func New(store Store, ca *pki.CA, signer *pki.Signer, topic TopicSource, cfg Config, opts ...Option) *Service {
	if cfg.ChallengeTTL == 0 {
		cfg.ChallengeTTL = time.Hour
	}
	if cfg.AccessRights == 0 {
		cfg.AccessRights = profile.AccessAll
	}
	s := &Service{
		store: store, ca: ca, signer: signer, topic: topic, cfg: cfg,
		logger: slog.New(slog.DiscardHandler), now: time.Now,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// TokenRequest asks for a new enrollment token.
type TokenRequest struct {
	Label     string
	ExpiresIn time.Duration // default 7 days
	MaxUses   int           // default 1; 0 is not allowed here: say how many
}

// NewToken is a minted token: the secret, shown once, and where to use it.
type NewToken struct {
	Token
	Secret string
	URL    string
}

// maxTokenLifetime bounds how long a token may live.
const maxTokenLifetime = 366 * 24 * time.Hour

// CreateToken mints an enrollment token.
func (s *Service) CreateToken(ctx context.Context, req TokenRequest) (*NewToken, error) {
	if req.ExpiresIn == 0 {
		req.ExpiresIn = 7 * 24 * time.Hour
	}
	if req.ExpiresIn < time.Minute || req.ExpiresIn > maxTokenLifetime {
		return nil, handler.Errorf(http.StatusBadRequest, "expires_in must be between 1m and %s", maxTokenLifetime)
	}
	if req.MaxUses == 0 {
		req.MaxUses = 1
	}
	if req.MaxUses < 0 || req.MaxUses > 1_000_000 {
		return nil, handler.Errorf(http.StatusBadRequest, "max_uses must be between 1 and 1000000")
	}
	if len(req.Label) > 200 {
		return nil, handler.Errorf(http.StatusBadRequest, "label is longer than 200 characters")
	}
	secret := randomString(24)
	hash := sha256.Sum256([]byte(secret))
	now := s.now()
	t := Token{
		ID: randomString(9), Hash: hash[:], Label: req.Label, MaxUses: req.MaxUses,
		ExpiresAt: now.Add(req.ExpiresIn), CreatedAt: now,
	}
	if err := s.store.CreateEnrollmentToken(ctx, t); err != nil {
		return nil, fmt.Errorf("storing enrollment token: %w", err)
	}
	s.logger.InfoContext(ctx, "enrollment token created", "token_id", t.ID, "label", t.Label, "max_uses", t.MaxUses)
	return &NewToken{Token: t, Secret: secret, URL: s.cfg.PublicURL + "/enroll?token=" + secret}, nil
}

// Handler serves GET /enroll?token=…; SignInHandler (signin.go) is the
// --enroll-auth basic alternative.
func (s *Service) Handler() http.Handler {
	return handler.Adapt(s.logger, writePage, s.enroll)
}

func (s *Service) enroll(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	secret := r.URL.Query().Get("token")
	if secret == "" || len(secret) > 256 {
		return handler.Errorf(http.StatusBadRequest, "This enrollment link has no valid token. Ask your administrator for a new link.")
	}
	// The topic first: without one the profile would be useless, and the
	// token's use must not be spent on it.
	topic, err := s.topic(ctx)
	if err != nil {
		return topicError(err)
	}
	hash := sha256.Sum256([]byte(secret))
	tok, err := s.store.UseEnrollmentToken(ctx, hash[:], s.now())
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return handler.Wrap(http.StatusForbidden, "This enrollment link is not valid. Ask your administrator for a new link.", err)
	case errors.Is(err, ErrTokenExpired):
		return handler.Wrap(http.StatusGone, "This enrollment link has expired. Ask your administrator for a new link.", err)
	case errors.Is(err, ErrTokenUsedUp):
		return handler.Wrap(http.StatusGone, "This enrollment link has already been used. Ask your administrator for a new link.", err)
	case err != nil:
		return fmt.Errorf("using enrollment token: %w", err)
	}
	signed, err := s.Profile(ctx, topic, "token "+tok.ID)
	if err != nil {
		return err
	}
	s.logger.InfoContext(ctx, "enrollment profile served", "token_id", tok.ID, "uses", tok.Uses)
	writeProfile(w, signed)
	return nil
}

// topicError explains why no profile can be served without a push topic.
func topicError(err error) error {
	if errors.Is(err, ErrNoTopic) {
		return handler.Wrap(http.StatusServiceUnavailable,
			"bramley cannot enroll devices yet: it needs an Apple push certificate (or --push-topic) so enrolled devices can be reached. Ask your administrator to upload one.", err)
	}
	return fmt.Errorf("reading push topic: %w", err)
}

// writeProfile sends a signed enrollment profile as a download.
func writeProfile(w http.ResponseWriter, signed []byte) {
	w.Header().Set("Content-Type", profile.ContentType)
	w.Header().Set("Content-Disposition", `attachment; filename="bramley-enrollment.mobileconfig"`)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(signed)
}

// Profile builds and signs an enrollment profile for topic with a fresh
// one-time SCEP challenge; source says what asked for it (for the log).
func (s *Service) Profile(ctx context.Context, topic, source string) ([]byte, error) {
	return s.profile(ctx, topic, scep.Challenge{Subject: "bramley " + mdm.NewUUID(), Source: source}, s.cfg.ChallengeTTL)
}

// profile builds and signs the enrollment profile with a fresh one-time
// challenge, issued for ch (its Subject is the identity's common name)
// and usable for ttl.
func (s *Service) profile(ctx context.Context, topic string, ch scep.Challenge, ttl time.Duration) ([]byte, error) {
	p, err := s.enrollmentProfile(ctx, topic, ch, ttl)
	if err != nil {
		return nil, err
	}
	raw, err := p.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding enrollment profile: %w", err)
	}
	signed, err := profile.Sign(raw, s.signer.Cert, s.signer.Key, s.signer.Chain)
	if err != nil {
		return nil, fmt.Errorf("signing enrollment profile: %w", err)
	}
	return signed, nil
}

// enrollmentProfile builds the unsigned enrollment profile of profile
// (OTA encrypts it before signing).
func (s *Service) enrollmentProfile(ctx context.Context, topic string, ch scep.Challenge, ttl time.Duration) (*profile.Profile, error) {
	// Root first, then the intermediate: the trust payloads a device needs
	// for bramley's HTTPS chain (Chain is a new slice every call).
	roots := s.ca.Chain()
	slices.Reverse(roots)
	opts := profile.EnrollmentOptions{
		Identifier:   s.cfg.Identifier,
		DisplayName:  "bramley enrollment",
		Description:  "Enrolls this device in " + orDefault(s.cfg.Organization, "bramley") + " device management.",
		Organization: s.cfg.Organization,
		Roots:        roots,
		ServerURL:    s.cfg.PublicURL + "/mdm/connect",
		CheckInURL:   s.cfg.PublicURL + "/mdm/checkin",
		Topic:        topic,
		SignMessage:  s.cfg.SignMessage,
		AccessRights: s.cfg.AccessRights,
	}
	if s.cfg.Identity == IdentityPKCS12 {
		var err error
		if opts.PKCS12, opts.PKCS12Password, err = s.pkcs12Identity(ctx, ch); err != nil {
			return nil, err
		}
	} else {
		challenge := randomString(24)
		hash := sha256.Sum256([]byte(challenge))
		now := s.now()
		ch.ExpiresAt = now.Add(ttl)
		if err := s.store.CreateChallenge(ctx, hash[:], ch, now); err != nil {
			return nil, fmt.Errorf("storing SCEP challenge: %w", err)
		}
		opts.SCEP = &profile.SCEPContent{
			URL:       s.cfg.PublicURL + "/scep",
			Name:      "bramley",
			Subject:   profile.SCEPSubject(pkix.Name{CommonName: ch.Subject}),
			Challenge: challenge,
		}
	}
	p, err := profile.EnrollmentProfile(opts)
	if err != nil {
		return nil, fmt.Errorf("building enrollment profile: %w", err)
	}
	return p, nil
}

// pkcs12Identity makes a key and a certificate for the subject the
// challenge names and wraps them in a PKCS#12 protected by a fresh random
// password, which travels in the same (signed) profile. For a renewal
// (ch.EnrollmentID names the device) the certificate is recorded for that
// device, so its next check-in rebinds to it.
func (s *Service) pkcs12Identity(ctx context.Context, ch scep.Challenge) ([]byte, string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, "", fmt.Errorf("generating identity key: %w", err)
	}
	lifetime := s.cfg.IdentityLifetime
	if lifetime == 0 {
		lifetime = 365 * 24 * time.Hour
	}
	subject := pkix.Name{CommonName: ch.Subject}
	var cert *x509.Certificate
	if ch.EnrollmentID != "" && s.certs != nil {
		cert, err = s.ca.IssueRenewal(ctx, s.certs, ch.EnrollmentID, &key.PublicKey, subject, lifetime)
	} else {
		cert, err = s.ca.IssueClient(ctx, &key.PublicKey, subject, lifetime)
	}
	if err != nil {
		return nil, "", fmt.Errorf("issuing identity: %w", err)
	}
	password := randomString(18)
	// 3DES with SHA-1 key derivation: the PKCS#12 encryption every Apple
	// OS version reads; the password is random and single-use, and the
	// profile carrying both is meant for one device only.
	p12, err := pkcs12.LegacyDES.Encode(key, cert, s.ca.Chain(), password)
	if err != nil {
		return nil, "", fmt.Errorf("encoding PKCS#12: %w", err)
	}
	return p12, password, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// randomString returns n random bytes, base64url-encoded: unguessable
// secrets and IDs.
func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Enrollment — bramley</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}h1{font-size:1.4rem}</style>
</head><body><main><h1>Enrollment</h1><p>{{.}}</p></main></body></html>
`))

// writePage answers a person's browser with a readable page.
func writePage(w http.ResponseWriter, _ *http.Request, status int, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = page.Execute(w, message)
}
