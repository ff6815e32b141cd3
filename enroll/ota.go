package enroll

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage"
)

// OTA session states, in the order a device moves through them.
const (
	OTAStateIssued     = "issued"     // Profile Service payload handed out
	OTAStateAttributes = "attributes" // first signed POST accepted, attributes recorded
	OTAStateEnrolled   = "enrolled"   // second POST answered with the enrollment profile
)

// RouteOTA is the enrollment route recorded for devices enrolled over the
// air.
const RouteOTA = "ota"

// OTAAttributes is the attribute dictionary a device posts (Apple's
// "Over-the-Air Profile Delivery and Configuration"): the DeviceAttributes
// the Profile Service asked for, plus CHALLENGE.
type OTAAttributes struct {
	UDID       string `plist:"UDID,omitempty"`
	Serial     string `plist:"SERIAL,omitempty"`
	Product    string `plist:"PRODUCT,omitempty"`
	Version    string `plist:"VERSION,omitempty"`
	DeviceName string `plist:"DEVICE_NAME,omitempty"`
	IMEI       string `plist:"IMEI,omitempty"`
	MEID       string `plist:"MEID,omitempty"`
	ICCID      string `plist:"ICCID,omitempty"`
	MACAddress string `plist:"MAC_ADDRESS_EN0,omitempty"`
	Challenge  string `plist:"CHALLENGE,omitempty"`
}

// OTASession is one OTA enrollment, from the Profile Service payload to
// the enrollment profile.
type OTASession struct {
	ID       string
	Username string
	State    string
	// Device is what the first POST said (Challenge left empty).
	Device    OTAAttributes
	CreatedAt time.Time
	UpdatedAt time.Time
	ExpiresAt time.Time
}

// OTAStore keeps OTA sessions.
type OTAStore interface {
	// CreateOTASession stores a session in state OTAStateIssued with the SHA-256
	// of its challenge. storage.ErrConflict when the ID or hash exists.
	CreateOTASession(ctx context.Context, s OTASession, challengeHash []byte) error
	// StartOTASession moves the session whose challenge has this hash from
	// OTAStateIssued to OTAAttributes and records dev, in one atomic step, and
	// returns it. storage.ErrNotFound when unknown, expired at now, or past
	// OTAStateIssued: a challenge starts one session only.
	StartOTASession(ctx context.Context, challengeHash []byte, dev OTAAttributes, now time.Time) (*OTASession, error)
	// OTASession returns a session by ID; storage.ErrNotFound when unknown.
	OTASession(ctx context.Context, id string) (*OTASession, error)
	// OTASessionByChallenge returns the session whose challenge has this
	// SHA-256, in whatever state; storage.ErrNotFound when unknown.
	OTASessionByChallenge(ctx context.Context, hash []byte) (*OTASession, error)
	// FinishOTASession moves the session from OTAStateAttributes to OTAStateEnrolled
	// and records the enrollment route (device, person, RouteOTA) in one
	// transaction. storage.ErrNotFound when unknown, expired at now, or not
	// in OTAAttributes; not idempotent.
	FinishOTASession(ctx context.Context, id string, now time.Time) error
	// IssuedTo returns the ID a certificate was issued for (see
	// scep.Challenge.EnrollmentID); storage.ErrNotFound when none.
	IssuedTo(ctx context.Context, hash []byte) (string, error)
}

// OTAPolicy decides whether a device may enroll over the air, after its
// first POST: a non-nil error refuses it, and its message (a
// *handler.Error's) is what the device is told.
type OTAPolicy func(ctx context.Context, user string, dev OTAAttributes) error

// DenyList is the simple OTAPolicy of bramley serve's --ota-deny: it
// refuses devices whose serial number or product (e.g. "iPhone14,5") is
// listed, compared without regard to case.
func DenyList(entries []string) OTAPolicy {
	deny := make(map[string]bool, len(entries))
	for _, e := range entries {
		deny[strings.ToUpper(strings.TrimSpace(e))] = true
	}
	return func(_ context.Context, _ string, dev OTAAttributes) error {
		if deny[strings.ToUpper(dev.Serial)] || deny[strings.ToUpper(dev.Product)] {
			return handler.Errorf(http.StatusForbidden, "enrollment policy refuses this device")
		}
		return nil
	}
}

// OTA serves over-the-air profile-service enrollment (Apple's three
// phases; docs/apple-protocols.md section c):
//
//	GET  /ota/profile-service  HTTP Basic sign-in → signed Profile Service payload
//	POST /ota/enroll           signed by the Apple device identity → SCEP profile
//	POST /ota/enroll           signed by the SCEP identity → encrypted enrollment profile
//
// The two POSTs are told apart by their signer, as Apple's sample server
// and zentral do.
type OTA struct {
	s       *Service
	store   OTAStore
	users   Authenticator
	apple   *pki.AppleDeviceVerifier
	anchors []*x509.Certificate // bramley's CA roots, current and previous
	policy  OTAPolicy
	limit   *SignInLimiter
	maxBody int64
}

// OTAOption configures OTA.
type OTAOption func(*OTA)

// WithOTAPolicy sets the enrollment policy (default: allow every device).
func WithOTAPolicy(p OTAPolicy) OTAOption { return func(o *OTA) { o.policy = p } }

// WithOTAPreviousCAs also accepts SCEP identities from CAs rotated out.
func WithOTAPreviousCAs(certs []*x509.Certificate) OTAOption {
	return func(o *OTA) { o.anchors = append(o.anchors, certs...) }
}

// NewOTA returns the OTA service over s (which builds and signs the
// profiles and stores SCEP challenges): users sign people in, apple
// verifies the first POST's signer.
func (s *Service) NewOTA(store OTAStore, users Authenticator, apple *pki.AppleDeviceVerifier, opts ...OTAOption) *OTA {
	o := &OTA{
		s: s, store: store, users: users, apple: apple,
		anchors: []*x509.Certificate{s.ca.Root()},
		policy:  func(context.Context, string, OTAAttributes) error { return nil },
		limit:   NewSignInLimiter(),
		maxBody: 64 << 10,
	}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// ProfileServiceHandler serves GET /ota/profile-service.
func (o *OTA) ProfileServiceHandler() http.Handler {
	return handler.Adapt(o.s.logger, writePage, o.profileService)
}

// EnrollHandler serves POST /ota/enroll. Devices get plain-text errors
// and never a 401.
func (o *OTA) EnrollHandler() http.Handler {
	return handler.Adapt(o.s.logger, handler.PlainText, o.enroll)
}

// ttl is how long a Profile Service payload, and the session
// it starts, stay usable.
func (o *OTA) ttl() time.Duration { return o.s.cfg.ChallengeTTL }

func (o *OTA) profileService(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	username, password, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", basicChallenge)
		return handler.Errorf(http.StatusUnauthorized, "Sign in with your account to enroll this device.")
	}
	u, err := o.signIn(ctx, w, r, username, password)
	if err != nil {
		return err
	}
	signed, err := o.ProfileService(ctx, u.Username)
	if err != nil {
		return err
	}
	writeProfile(w, signed)
	return nil
}

// signIn checks HTTP Basic credentials under the sign-in rate limits of
// GET /enroll.
func (o *OTA) signIn(ctx context.Context, w http.ResponseWriter, r *http.Request, username, password string) (*User, error) {
	ip, now := clientIP(r), o.s.now()
	if wait, ok := o.limit.Take(ip, username, now); !ok {
		return nil, tooMany(w, wait, fmt.Errorf("OTA sign-in rate limit for client %s or user %q", ip, username))
	}
	u, err := o.users.Authenticate(ctx, username, password)
	if errors.Is(err, ErrBadCredentials) {
		o.s.logger.InfoContext(ctx, "OTA sign-in failed", "username", username, "client_ip", ip)
		w.Header().Set("WWW-Authenticate", basicChallenge)
		return nil, handler.Wrap(http.StatusUnauthorized, "The username or password is not right.", err)
	}
	o.limit.Succeeded(ip, username, now)
	if err != nil {
		return nil, fmt.Errorf("signing in: %w", err)
	}
	return u, nil
}

func (o *OTA) sign(p *profile.Profile) ([]byte, error) {
	raw, err := p.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding profile: %w", err)
	}
	signed, err := profile.Sign(raw, o.s.signer.Cert, o.s.signer.Key, o.s.signer.Chain)
	if err != nil {
		return nil, fmt.Errorf("signing profile: %w", err)
	}
	return signed, nil
}

func (o *OTA) enroll(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, o.maxBody))
	if err != nil {
		return err
	}
	msg, err := ParseSignedAttributes(body)
	if err != nil {
		return handler.Wrap(http.StatusBadRequest, "the body is not a signed attribute dictionary", err)
	}
	now := o.s.now()
	// Which POST: a signer from bramley's CA is the second, one from
	// Apple's device CA the first; anything else is refused.
	if _, err := msg.Signer.Verify(x509.VerifyOptions{
		Roots: pool(o.anchors), Intermediates: pool(append(o.s.ca.Chain(), msg.Certificates...)), CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err == nil {
		return o.phase3(w, r, msg)
	}
	if err := o.apple.VerifyChain(msg.Signer, msg.Certificates); err != nil {
		return handler.Wrap(http.StatusForbidden, "the signer is neither an Apple device identity nor one bramley issued", err)
	}
	return o.phase2(w, r, msg)
}

// phase2 answers the first POST: the challenge starts its session, the
// policy decides, and the device gets a SCEP payload whose challenge is
// recorded for this session, so that the identity it obtains can be
// recognised in the second POST.
func (o *OTA) phase2(w http.ResponseWriter, r *http.Request, msg *SignedAttributes) error {
	ctx := r.Context()
	a := msg.Attributes
	if a.UDID == "" || a.Serial == "" {
		return handler.Errorf(http.StatusBadRequest, "the attributes lack UDID or SERIAL")
	}
	if a.Challenge == "" || len(a.Challenge) > 256 {
		return handler.Errorf(http.StatusForbidden, "the attributes carry no valid CHALLENGE")
	}
	// The policy before the challenge is spent: a refused device may be
	// let in later with the same payload once the policy changes.
	sessUser, err := o.peekUser(ctx, a.Challenge)
	if err != nil {
		return err
	}
	if err := o.policy(ctx, sessUser, a); err != nil {
		o.s.logger.InfoContext(ctx, "OTA enrollment refused by policy", "udid", a.UDID, "serial", a.Serial, "product", a.Product, "username", sessUser)
		return err
	}
	hash := sha256.Sum256([]byte(a.Challenge))
	dev := a
	dev.Challenge = ""
	sess, err := o.store.StartOTASession(ctx, hash[:], dev, o.s.now())
	if errors.Is(err, storage.ErrNotFound) {
		return handler.Wrap(http.StatusForbidden, "the CHALLENGE is unknown, expired or already used", err)
	}
	if err != nil {
		return fmt.Errorf("starting OTA session: %w", err)
	}
	// The identity is recorded for the session, not for the UDID: the UDID
	// is the device's own word, and an identity recorded for a device ID
	// may stand in for that device's at check-in (identity.Binder).
	challenge := randomString(24)
	chHash := sha256.Sum256([]byte(challenge))
	now := o.s.now()
	ch := scep.Challenge{
		Subject: "bramley OTA " + sess.ID, EnrollmentID: otaEnrollmentID(sess.ID),
		Source: "ota user " + sess.Username, ExpiresAt: sess.ExpiresAt,
	}
	if err := o.s.store.CreateChallenge(ctx, chHash[:], ch, now); err != nil {
		return fmt.Errorf("storing SCEP challenge: %w", err)
	}
	p := profile.New(o.s.cfg.Identifier + ".ota.identity")
	p.PayloadDisplayName = "bramley device identity"
	p.PayloadOrganization = o.s.cfg.Organization
	p.Add(&profile.SCEP{PayloadContent: profile.SCEPContent{
		URL: o.s.cfg.PublicURL + "/scep", Name: "bramley",
		Subject:   profile.SCEPSubject(pkix.Name{CommonName: ch.Subject}),
		Challenge: challenge, Keysize: 2048, KeyType: "RSA", KeyUsage: 5,
	}})
	signed, err := o.sign(p)
	if err != nil {
		return err
	}
	o.s.logger.InfoContext(ctx, "OTA attributes accepted", "ota_session", sess.ID, "udid", a.UDID,
		"serial", a.Serial, "product", a.Product, "username", sess.Username)
	writeProfile(w, signed)
	return nil
}

// peekUser is the person a challenge's session was issued to, for the
// policy; the challenge itself is checked atomically afterwards.
func (o *OTA) peekUser(ctx context.Context, challenge string) (string, error) {
	sess, err := o.store.OTASessionByChallenge(ctx, hashOf(challenge))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (sess.State != OTAStateIssued || !o.s.now().Before(sess.ExpiresAt))) {
		return "", handler.Errorf(http.StatusForbidden, "the CHALLENGE is unknown, expired or already used")
	}
	if err != nil {
		return "", fmt.Errorf("reading OTA session: %w", err)
	}
	return sess.Username, nil
}

func otaEnrollmentID(sessionID string) string { return "ota:" + sessionID }

// phase3 answers the second POST, signed by the identity issued in phase
// 2: the enrollment profile, its payloads encrypted to that identity.
func (o *OTA) phase3(w http.ResponseWriter, r *http.Request, msg *SignedAttributes) error {
	ctx := r.Context()
	sum := sha256.Sum256(msg.Signer.Raw)
	issuedTo, err := o.store.IssuedTo(ctx, sum[:])
	if errors.Is(err, storage.ErrNotFound) {
		return handler.Wrap(http.StatusForbidden, "the signer is not an identity issued for OTA enrollment", err)
	}
	if err != nil {
		return fmt.Errorf("looking up issued certificate: %w", err)
	}
	id, ok := strings.CutPrefix(issuedTo, "ota:")
	if !ok {
		return handler.Errorf(http.StatusForbidden, "the signer is not an identity issued for OTA enrollment")
	}
	sess, err := o.store.OTASession(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return handler.Wrap(http.StatusForbidden, "no OTA session for this identity", err)
	}
	if err != nil {
		return fmt.Errorf("reading OTA session: %w", err)
	}
	a := msg.Attributes
	switch {
	case sess.State != OTAStateAttributes:
		return handler.Errorf(http.StatusConflict, "this OTA session is not awaiting its second request")
	case !o.s.now().Before(sess.ExpiresAt):
		return handler.Errorf(http.StatusGone, "this OTA session has expired")
	case a.UDID != sess.Device.UDID || a.Serial != sess.Device.Serial:
		return handler.Errorf(http.StatusForbidden, "UDID or SERIAL differ from the first request")
	case a.Challenge != "" && !o.sameChallenge(ctx, a.Challenge, sess.ID):
		return handler.Errorf(http.StatusForbidden, "CHALLENGE differs from the first request")
	}
	topic, err := o.s.topic(ctx)
	if err != nil {
		return topicError(err)
	}
	p, err := o.s.enrollmentProfile(ctx, topic,
		scep.Challenge{Subject: "bramley " + mdm.NewUUID(), Source: "ota user " + sess.Username}, o.s.cfg.ChallengeTTL)
	if err != nil {
		return err
	}
	if err := profile.EncryptPayloads(p, msg.Signer); err != nil {
		return fmt.Errorf("encrypting enrollment profile: %w", err)
	}
	signed, err := o.sign(p)
	if err != nil {
		return err
	}
	if err := o.store.FinishOTASession(ctx, sess.ID, o.s.now()); errors.Is(err, storage.ErrNotFound) {
		return handler.Wrap(http.StatusConflict, "this OTA session is not awaiting its second request", err)
	} else if err != nil {
		return fmt.Errorf("finishing OTA session: %w", err)
	}
	o.s.logger.InfoContext(ctx, "OTA enrollment profile served", "ota_session", sess.ID, "udid", a.UDID,
		"serial", a.Serial, "username", sess.Username)
	writeProfile(w, signed)
	return nil
}

// sameChallenge reports whether challenge is the one that started session
// id. Devices repeat it in the second POST.
func (o *OTA) sameChallenge(ctx context.Context, challenge, id string) bool {
	sess, err := o.store.OTASessionByChallenge(ctx, hashOf(challenge))
	return err == nil && sess.ID == id
}

func hashOf(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// SignedAttributes is a verified OTA POST body.
type SignedAttributes struct {
	Attributes OTAAttributes
	// Signer is the certificate whose signature over the content verified;
	// Certificates all those the message carries (for chain building).
	Signer       *x509.Certificate
	Certificates []*x509.Certificate
}

// maxAttributes bounds the attribute plist.
const maxAttributes = 32 << 10

// ParseSignedAttributes reads an OTA POST body: a CMS SignedData with one
// signer whose signature over the attached plist verifies. Who the signer
// is, is for the caller to judge.
func ParseSignedAttributes(body []byte) (*SignedAttributes, error) {
	p7, err := parseCMS(body)
	if err != nil {
		return nil, err
	}
	if len(p7.Content) == 0 || len(p7.Content) > maxAttributes {
		return nil, fmt.Errorf("signed attributes: content of %d bytes", len(p7.Content))
	}
	if len(p7.Signers) != 1 {
		return nil, fmt.Errorf("signed attributes: %d signers, want 1", len(p7.Signers))
	}
	signer := p7.GetOnlySigner()
	if signer == nil {
		return nil, errors.New("signed attributes: the signer's certificate is not in the message")
	}
	if err := verifyOnly(p7); err != nil {
		return nil, fmt.Errorf("signed attributes: %w", err)
	}
	var a OTAAttributes
	if err := plist.NewDecoder(bytes.NewReader(p7.Content)).Decode(&a); err != nil {
		return nil, fmt.Errorf("signed attributes: %w", err)
	}
	for _, v := range []string{a.UDID, a.Serial, a.Product, a.Version, a.DeviceName, a.IMEI, a.MEID, a.ICCID, a.MACAddress} {
		if len(v) > 256 {
			return nil, errors.New("signed attributes: a value is longer than 256 bytes")
		}
	}
	return &SignedAttributes{Attributes: a, Signer: signer, Certificates: slices.Clone(p7.Certificates)}, nil
}
