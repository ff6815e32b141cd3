package sim

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"math/big"
	"mime"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smallstep/scep"
	"github.com/smallstep/scep/x509util"

	"github.com/bramley-mdm/bramley/profile"
)

// Limits on what an enrolling device reads: profiles and SCEP answers are
// a few kilobytes.
const (
	maxProfile    = 1 << 20
	maxSCEPAnswer = 1 << 20
	enrollTimeout = 30 * time.Second
)

// EnrollOption configures EnrollDirect. Options of the Device it returns
// go in through WithDeviceOptions.
type EnrollOption func(*enrollConfig)

type enrollConfig struct {
	pinned   []*x509.Certificate
	extra    []*x509.Certificate
	download []*x509.Certificate
	keys     *KeyPool
	device   []Option
	checkURL func(*url.URL) error
	apple    *appleIdentity // EnrollOTA (ota.go)
}

// WithProfileRoots pins the roots the profile's signature must chain to,
// as a device that already trusts bramley's CA (a supervised one, or one
// whose administrator installed the root first) does. Without it the
// device accepts a signature by any certificate chaining to a root the
// profile itself carries: that catches a changed byte, but not a profile
// someone else made and signed whole.
func WithProfileRoots(roots ...*x509.Certificate) EnrollOption {
	return func(c *enrollConfig) { c.pinned = append(c.pinned, roots...) }
}

// WithExtraRoots adds roots the device trusts for TLS — downloading the
// profile, SCEP and check-ins — besides the system's and those the profile
// installs: the CA of a server certificate bramley did not issue.
func WithExtraRoots(roots ...*x509.Certificate) EnrollOption {
	return func(c *enrollConfig) { c.extra = append(c.extra, roots...) }
}

// WithDownloadRoots adds roots trusted for downloading the profile only,
// as the browser a person opens the link in may trust a CA the device
// does not. The device's later TLS trust then comes from the roots the
// profile installs, which is what a test of that trust wants.
func WithDownloadRoots(roots ...*x509.Certificate) EnrollOption {
	return func(c *enrollConfig) { c.download = append(c.download, roots...) }
}

// WithKeyPool takes identity keys from p instead of generating each one,
// so that a benchmark measures the server rather than RSA key generation.
func WithKeyPool(p *KeyPool) EnrollOption { return func(c *enrollConfig) { c.keys = p } }

// WithDeviceOptions configures the Device EnrollDirect returns; they apply
// after what the profile decides, so they may change it (WithRootCAs, or a
// custom Option setting DeviceName before the device checks in).
func WithDeviceOptions(opts ...Option) EnrollOption {
	return func(c *enrollConfig) { c.device = append(c.device, opts...) }
}

// WithURLCheck calls check before every URL the device is about to use:
// the enrollment link, then the SCEP and MDM URLs the profile names. An
// error stops the enrollment; `bramley sim` uses it to talk to the server
// it was pointed at and nothing else.
func WithURLCheck(check func(*url.URL) error) EnrollOption {
	return func(c *enrollConfig) { c.checkURL = check }
}

// EnrollDirect enrolls a new device the way a person does by opening an
// enrollment link on it: it downloads the profile at enrollURL
// (/enroll?token=…), verifies its signature, creates an RSA key of the
// SCEP payload's Keysize and gets it certified over SCEP (GetCACaps,
// GetCACert, PKIOperation PKCSReq with the payload's challenge and
// subject), then checks in with that identity — Authenticate and
// TokenUpdate — at the MDM payload's CheckInURL with its Topic. The
// Device it returns speaks to the payload's ServerURL, over mTLS or, when
// the payload says SignMessage, with Mdm-Signature.
//
// For TLS the device trusts the system's roots, the roots the profile
// installs (bramley's CA anchors its own server certificate), and those of
// WithProfileRoots and WithExtraRoots. The download, before anything is
// installed, trusts the system's roots and those of WithProfileRoots,
// WithExtraRoots and WithDownloadRoots. An unsigned profile, or one whose
// signature does not verify, is refused before anything is installed.
func EnrollDirect(ctx context.Context, enrollURL string, opts ...EnrollOption) (*Device, error) {
	var cfg enrollConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.checkURL == nil {
		cfg.checkURL = func(*url.URL) error { return nil }
	}
	if err := vetURL(cfg.checkURL, enrollURL, "enrollment URL"); err != nil {
		return nil, err
	}

	download := newHTTPClient(rootPool(cfg.download, cfg.pinned, cfg.extra))
	defer download.CloseIdleConnections()
	signed, err := fetchProfile(ctx, download, enrollURL)
	if err != nil {
		return nil, err
	}
	return installProfile(ctx, &cfg, signed)
}

// installProfile verifies and installs a downloaded enrollment profile,
// gets the identity of its SCEP payload and checks in as its MDM payload
// says; deviceOpts configure the Device before cfg's.
func installProfile(ctx context.Context, cfg *enrollConfig, signed []byte, deviceOpts ...Option) (*Device, error) {
	ep, installed, err := readEnrollmentProfile(signed, cfg.pinned)
	if err != nil {
		return nil, err
	}
	for _, u := range [][2]string{{"SCEP URL", ep.scep.URL}, {"ServerURL", ep.mdm.ServerURL}, {"CheckInURL", ep.checkInURL()}} {
		if err := vetURL(cfg.checkURL, u[1], "the profile's "+u[0]); err != nil {
			return nil, err
		}
	}
	base, err := ep.baseURL()
	if err != nil {
		return nil, err
	}

	// Installed now: the profile's roots join the trust store.
	roots := rootPool(installed, cfg.pinned, cfg.extra)
	client := newHTTPClient(roots)
	defer client.CloseIdleConnections()
	key, err := cfg.keys.Key(ep.scep.Keysize)
	if err != nil {
		return nil, fmt.Errorf("creating the identity key: %w", err)
	}
	cert, err := scepEnroll(ctx, client, ep.scep, key)
	if err != nil {
		return nil, err
	}

	devOpts := []Option{WithRootCAs(roots), WithTopic(ep.mdm.Topic)}
	if ep.mdm.SignMessage {
		devOpts = append(devOpts, WithMdmSignature())
	}
	devOpts = append(devOpts, deviceOpts...)
	d := New(base, cert, key, append(devOpts, cfg.device...)...)
	if err := d.Enroll(ctx); err != nil {
		return nil, fmt.Errorf("checking in with the SCEP identity: %w", err)
	}
	return d, nil
}

// vetURL checks that raw is an http(s) URL, then passes it to check.
func vetURL(check func(*url.URL) error, raw, what string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%s is not an http(s) URL", what)
	}
	if err := check(u); err != nil {
		// Without the query: an enrollment link's token is a secret.
		return fmt.Errorf("%s %s://%s%s: %w", what, u.Scheme, u.Host, u.Path, err)
	}
	return nil
}

// rootPool is the system's roots plus the given ones. Without system roots
// (a bare container) it holds just the given ones.
func rootPool(sets ...[]*x509.Certificate) *x509.CertPool {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, set := range sets {
		for _, c := range set {
			pool.AddCert(c)
		}
	}
	return pool
}

func newHTTPClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: enrollTimeout,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 2,
		},
		// A device follows no redirect to another host mid-enrollment;
		// bramley sends none.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// fetchProfile downloads the signed enrollment profile.
func fetchProfile(ctx context.Context, client *http.Client, enrollURL string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, enrollURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		// The link's token is a secret: the error names the page without it.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			where := req.URL.Scheme + "://" + req.URL.Host + req.URL.Path
			return nil, fmt.Errorf("downloading the enrollment profile from %s: %w", where, ue.Err)
		}
		return nil, fmt.Errorf("downloading the enrollment profile: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProfile+1))
	if err != nil {
		return nil, fmt.Errorf("downloading the enrollment profile: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("downloading the enrollment profile: %w",
			&StatusError{Status: resp.StatusCode, Body: readableBody(resp.Header.Get("Content-Type"), body)})
	}
	if len(body) > maxProfile {
		return nil, fmt.Errorf("downloading the enrollment profile: larger than %d bytes", maxProfile)
	}
	// iOS offers to install only what is served as a profile.
	if media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); media != profile.ContentType {
		return nil, fmt.Errorf("downloading the enrollment profile: served as %q, not %s", resp.Header.Get("Content-Type"), profile.ContentType)
	}
	return body, nil
}

// readableBody returns the message of bramley's HTML error page (the
// text of its paragraph), or body as it came.
func readableBody(contentType string, body []byte) string {
	if media, _, _ := mime.ParseMediaType(contentType); media == "text/html" {
		s := string(body)
		if i := strings.Index(s, "<p>"); i >= 0 {
			if j := strings.Index(s[i:], "</p>"); j >= 0 {
				return html.UnescapeString(s[i+len("<p>") : i+j])
			}
		}
	}
	return string(body)
}

// enrollmentProfile is what a device takes from a verified enrollment
// profile.
type enrollmentProfile struct {
	scep profile.SCEPContent
	mdm  *profile.MDM
}

func (ep *enrollmentProfile) checkInURL() string {
	if ep.mdm.CheckInURL != "" {
		return ep.mdm.CheckInURL
	}
	return ep.mdm.ServerURL // Apple: check-ins go to ServerURL when CheckInURL is absent
}

// baseURL is the base the Device's fixed paths hang from. The simulator
// speaks bramley's layout only, so anything else is an error rather than a
// device that quietly talks to the wrong place.
func (ep *enrollmentProfile) baseURL() (string, error) {
	base, ok := strings.CutSuffix(ep.mdm.ServerURL, "/mdm/connect")
	if !ok || ep.checkInURL() != base+"/mdm/checkin" {
		return "", fmt.Errorf("the profile's ServerURL %q and CheckInURL %q are not <base>/mdm/connect and <base>/mdm/checkin, the only layout the simulator speaks",
			ep.mdm.ServerURL, ep.mdm.CheckInURL)
	}
	return base, nil
}

// readEnrollmentProfile verifies a signed profile and reads its SCEP and
// MDM payloads. It returns the certificates the profile installs as roots.
//
// The signature is checked against pinned when given, otherwise against
// the roots the profile carries: those are read from the content before
// it is trusted, but only to verify with — everything the device acts on
// is read again from the content Verify returns.
func readEnrollmentProfile(signed []byte, pinned []*x509.Certificate) (*enrollmentProfile, []*x509.Certificate, error) {
	unverified, err := profile.Parse(signed)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the enrollment profile: %w", err)
	}
	anchors := pinned
	if len(anchors) == 0 {
		anchors = profileRoots(unverified)
	}
	if len(anchors) == 0 {
		return nil, nil, errors.New("verifying the enrollment profile: it carries no root certificate, and none was pinned")
	}
	pool := x509.NewCertPool()
	for _, c := range anchors {
		pool.AddCert(c)
	}
	content, _, err := profile.Verify(signed, pool)
	if err != nil {
		return nil, nil, fmt.Errorf("the enrollment profile's signature: %w", err)
	}
	p, err := profile.Parse(content)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the enrollment profile: %w", err)
	}
	return enrollmentPayloads(p)
}

// enrollmentPayloads reads the SCEP and MDM payloads of a verified (and,
// for OTA, decrypted) enrollment profile, and the roots it installs.
func enrollmentPayloads(p *profile.Profile) (*enrollmentProfile, []*x509.Certificate, error) {
	var ep enrollmentProfile
	var scepUUID string
	for _, pl := range p.PayloadContent {
		switch pl := pl.(type) {
		case *profile.SCEP:
			if scepUUID != "" {
				return nil, nil, errors.New("the enrollment profile has two SCEP payloads")
			}
			ep.scep, scepUUID = pl.PayloadContent, pl.PayloadUUID
		case *profile.MDM:
			if ep.mdm != nil {
				return nil, nil, errors.New("the enrollment profile has two MDM payloads")
			}
			ep.mdm = pl
		}
	}
	switch {
	case ep.mdm == nil:
		return nil, nil, errors.New("the enrollment profile has no MDM payload (com.apple.mdm)")
	case scepUUID == "":
		return nil, nil, errors.New("the enrollment profile has no SCEP payload (com.apple.security.scep); the simulator enrolls by SCEP only")
	case ep.mdm.IdentityCertificateUUID != scepUUID:
		// A device fails the install: the MDM payload names its identity.
		return nil, nil, fmt.Errorf("the MDM payload's IdentityCertificateUUID %q is not the SCEP payload's %q", ep.mdm.IdentityCertificateUUID, scepUUID)
	case ep.mdm.Topic == "":
		return nil, nil, errors.New("the MDM payload has no Topic")
	case ep.scep.KeyType != "" && ep.scep.KeyType != "RSA":
		return nil, nil, fmt.Errorf("the SCEP payload asks for a %q key; devices make RSA keys only", ep.scep.KeyType)
	}
	if ep.scep.Keysize == 0 {
		ep.scep.Keysize = 1024 // Apple's default; bramley's SCEP endpoint refuses it, as it should
	}
	return &ep, profileRoots(p), nil
}

// profileRoots returns the certificates of the profile's root and PEM
// payloads, which a device adds to its trust store.
func profileRoots(p *profile.Profile) []*x509.Certificate {
	var out []*x509.Certificate
	for _, pl := range p.PayloadContent {
		switch pl := pl.(type) {
		case *profile.Root:
			if c, err := pl.Certificate(); err == nil {
				out = append(out, c)
			}
		case *profile.PEM:
			if certs, err := pl.Certificates(); err == nil {
				out = append(out, certs...)
			}
		}
	}
	return out
}

// scepEnroll gets key certified as a device does for a SCEP payload:
// GetCACaps, GetCACert, then a PKCSReq signed by a throwaway self-signed
// certificate of the same key (RFC 8894 section 2.3), whose CertRep is
// decrypted with that key.
func scepEnroll(ctx context.Context, client *http.Client, sc profile.SCEPContent, key *rsa.PrivateKey) (*x509.Certificate, error) {
	caps, err := scepGet(ctx, client, sc.URL, "GetCACaps", sc.Name)
	if err != nil {
		return nil, err
	}
	caBody, err := scepGet(ctx, client, sc.URL, "GetCACert", sc.Name)
	if err != nil {
		return nil, err
	}
	caCerts, err := parseCACert(caBody.body, caBody.contentType)
	if err != nil {
		return nil, fmt.Errorf("SCEP GetCACert: %w", err)
	}
	if len(sc.CAFingerprint) > 0 && !fingerprintMatches(sc.CAFingerprint, caCerts) {
		return nil, errors.New("SCEP GetCACert: no CA certificate matches the payload's CAFingerprint")
	}

	subject, err := scepSubject(sc.Subject)
	if err != nil {
		return nil, err
	}
	csrDER, err := x509util.CreateCertificateRequest(rand.Reader, &x509util.CertificateRequest{
		CertificateRequest: x509.CertificateRequest{RawSubject: subject, SignatureAlgorithm: x509.SHA256WithRSA},
		ChallengePassword:  sc.Challenge,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("creating the CSR: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("creating the CSR: %w", err)
	}
	signer, err := selfSigned(key, subject)
	if err != nil {
		return nil, err
	}
	msg, err := scep.NewCSRRequest(csr, &scep.PKIMessage{
		MessageType: scep.PKCSReq,
		Recipients:  caCerts,
		SignerKey:   key,
		SignerCert:  signer,
	})
	if err != nil {
		return nil, fmt.Errorf("building the SCEP request: %w", err)
	}

	var answer []byte
	if hasCap(caps.body, "POSTPKIOperation") {
		answer, err = scepPost(ctx, client, sc.URL, msg.Raw)
	} else {
		var r *scepAnswer
		r, err = scepGet(ctx, client, sc.URL, "PKIOperation", base64.StdEncoding.EncodeToString(msg.Raw))
		if r != nil {
			answer = r.body
		}
	}
	if err != nil {
		return nil, err
	}
	rep, err := scep.ParsePKIMessage(answer, scep.WithCACerts(caCerts))
	if err != nil {
		return nil, fmt.Errorf("SCEP CertRep does not verify with the CA certificate: %w", err)
	}
	switch {
	case rep.MessageType != scep.CertRep:
		return nil, fmt.Errorf("SCEP answered a %s, not a CertRep", rep.MessageType)
	case rep.TransactionID != msg.TransactionID:
		return nil, errors.New("SCEP CertRep answers another transaction")
	case rep.CertRepMessage == nil || !bytes.Equal(rep.RecipientNonce, msg.SenderNonce):
		return nil, errors.New("SCEP CertRep does not echo the request's nonce")
	}
	switch rep.PKIStatus {
	case scep.SUCCESS:
	case scep.FAILURE:
		return nil, fmt.Errorf("SCEP refused the request: failInfo %s", rep.FailInfo)
	case scep.PENDING:
		return nil, errors.New("SCEP answered PENDING; the simulator does not poll (bramley never pends)")
	default:
		return nil, fmt.Errorf("SCEP answered pkiStatus %q", rep.PKIStatus)
	}
	if err := rep.DecryptPKIEnvelope(signer, key); err != nil {
		return nil, fmt.Errorf("decrypting the SCEP CertRep: %w", err)
	}
	cert := rep.Certificate
	if cert == nil {
		return nil, errors.New("SCEP CertRep carries no certificate")
	}
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("SCEP issued a certificate for another key")
	}
	return cert, nil
}

// scepAnswer is a 200 answer of the SCEP endpoint.
type scepAnswer struct {
	body        []byte
	contentType string
}

func scepGet(ctx context.Context, client *http.Client, scepURL, operation, message string) (*scepAnswer, error) {
	u, err := url.Parse(scepURL)
	if err != nil {
		return nil, fmt.Errorf("SCEP URL: %w", err)
	}
	q := u.Query()
	q.Set("operation", operation)
	if message != "" {
		q.Set("message", message)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	return scepDo(client, req, operation)
}

func scepPost(ctx context.Context, client *http.Client, scepURL string, message []byte) ([]byte, error) {
	u, err := url.Parse(scepURL)
	if err != nil {
		return nil, fmt.Errorf("SCEP URL: %w", err)
	}
	q := u.Query()
	q.Set("operation", "PKIOperation")
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(message))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-pki-message")
	a, err := scepDo(client, req, "PKIOperation")
	if err != nil {
		return nil, err
	}
	return a.body, nil
}

func scepDo(client *http.Client, req *http.Request, operation string) (*scepAnswer, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("SCEP %s: %w", operation, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSCEPAnswer))
	if err != nil {
		return nil, fmt.Errorf("SCEP %s: %w", operation, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("SCEP %s: %w", operation, &StatusError{Status: resp.StatusCode, Body: string(body)})
	}
	return &scepAnswer{body: body, contentType: resp.Header.Get("Content-Type")}, nil
}

// parseCACert reads GetCACert's answer: one DER certificate, or a
// degenerate PKCS#7 of the CA and its RA certificates (RFC 8894 4.2.1).
func parseCACert(body []byte, contentType string) ([]*x509.Certificate, error) {
	media, _, _ := mime.ParseMediaType(contentType)
	switch media {
	case "application/x-x509-ca-cert":
		c, err := x509.ParseCertificate(body)
		if err != nil {
			return nil, err
		}
		return []*x509.Certificate{c}, nil
	case "application/x-x509-ca-ra-cert":
		certs, err := scep.CACerts(body)
		if err != nil {
			return nil, err
		}
		if len(certs) == 0 {
			return nil, errors.New("no certificate in the answer")
		}
		return certs, nil
	}
	return nil, fmt.Errorf("answer of type %q", contentType)
}

// fingerprintMatches compares the payload's CAFingerprint, by its length
// an MD5, SHA-1 or SHA-256 digest, with each CA certificate.
func fingerprintMatches(want []byte, certs []*x509.Certificate) bool {
	for _, c := range certs {
		var got []byte
		switch len(want) {
		case md5.Size:
			s := md5.Sum(c.Raw)
			got = s[:]
		case sha1.Size:
			s := sha1.Sum(c.Raw)
			got = s[:]
		case sha256.Size:
			s := sha256.Sum256(c.Raw)
			got = s[:]
		}
		if got != nil && bytes.Equal(got, want) {
			return true
		}
	}
	return false
}

func hasCap(caps []byte, name string) bool {
	for _, line := range strings.Fields(string(caps)) {
		if strings.EqualFold(line, name) {
			return true
		}
	}
	return false
}

// shortNameOIDs are the attribute names a SCEP payload's Subject uses
// (profile.SCEPSubject writes them); anything else is a dotted OID.
var shortNameOIDs = map[string]asn1.ObjectIdentifier{
	"C":  {2, 5, 4, 6},
	"L":  {2, 5, 4, 7},
	"ST": {2, 5, 4, 8},
	"O":  {2, 5, 4, 10},
	"OU": {2, 5, 4, 11},
	"CN": {2, 5, 4, 3},
}

// scepSubject encodes the payload's Subject — RDNs of [type, value] pairs
// — as a DER Name, keeping order and attributes as given: the challenge
// was issued for exactly that subject.
func scepSubject(subject [][][]string) ([]byte, error) {
	var seq pkix.RDNSequence
	for _, rdn := range subject {
		var set pkix.RelativeDistinguishedNameSET
		for _, pair := range rdn {
			if len(pair) != 2 {
				return nil, fmt.Errorf("the SCEP payload's Subject has an attribute of %d strings, not [type, value]", len(pair))
			}
			oid, ok := shortNameOIDs[strings.ToUpper(pair[0])]
			if !ok {
				var err error
				if oid, err = parseOID(pair[0]); err != nil {
					return nil, fmt.Errorf("the SCEP payload's Subject: attribute type %q: %w", pair[0], err)
				}
			}
			set = append(set, pkix.AttributeTypeAndValue{Type: oid, Value: pair[1]})
		}
		seq = append(seq, set)
	}
	return asn1.Marshal(seq)
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 || strconv.Itoa(n) != part {
			return nil, errors.New("neither a known name nor a dotted OID")
		}
		oid = append(oid, n)
	}
	if len(oid) < 2 {
		return nil, errors.New("neither a known name nor a dotted OID")
	}
	return oid, nil
}

// selfSigned makes the transient certificate that signs a PKCSReq.
func selfSigned(key *rsa.PrivateKey, rawSubject []byte) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		RawSubject:   rawSubject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating the SCEP signer certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// KeyPool hands out RSA keys made ahead of time, round robin, so that
// enrolling many devices is not bound by key generation (a 2048-bit key
// takes tens of milliseconds). Devices then share keys; bramley binds
// identities by certificate, so that changes nothing it checks. A nil
// *KeyPool generates every key. Safe for concurrent use.
type KeyPool struct {
	bits int
	mu   sync.Mutex
	keys []*rsa.PrivateKey
	next int
}

// NewKeyPool generates n RSA keys of bits, using every CPU.
func NewKeyPool(bits, n int) (*KeyPool, error) {
	if n < 1 {
		return nil, errors.New("a key pool needs at least one key")
	}
	p := &KeyPool{bits: bits, keys: make([]*rsa.PrivateKey, n)}
	var wg sync.WaitGroup
	errs := make([]error, n)
	work := make(chan int)
	for range min(n, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for i := range work {
				p.keys[i], errs[i] = rsa.GenerateKey(rand.Reader, bits)
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// Key returns the next pooled key when bits is the pool's size, and a
// freshly generated one otherwise.
func (p *KeyPool) Key(bits int) (*rsa.PrivateKey, error) {
	if p == nil || bits != p.bits {
		return rsa.GenerateKey(rand.Reader, bits)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.keys[p.next]
	p.next = (p.next + 1) % len(p.keys)
	return k, nil
}
