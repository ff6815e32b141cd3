package sim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"

	"github.com/bramley-mdm/bramley/profile"
)

// OTA is one device going through over-the-air profile-service enrollment
// (docs/apple-protocols.md section c), step by step, so that tests can
// change what it sends between steps. EnrollOTA runs every step.
type OTA struct {
	// Attributes are what the device posts, both times (CHALLENGE is
	// added from the Profile Service payload).
	Attributes map[string]string
	// AppleCert, AppleKey and AppleChain are the identity Apple built into
	// the device (appletest.DeviceCA stands in for Apple's).
	AppleCert  *x509.Certificate
	AppleKey   crypto.Signer
	AppleChain []*x509.Certificate

	// Filled in by the steps.
	Service     *profile.Service    // Profile Service payload (Start)
	SCEP        profile.SCEPContent // phase 2 SCEP payload (PostFirst)
	Identity    *x509.Certificate   // OTA identity (GetIdentity)
	IdentityKey *rsa.PrivateKey
	Final       []byte // signed, encrypted enrollment profile (PostSecond)

	cfg  enrollConfig
	base string
	user string
	pass string
}

// WithAppleIdentity gives EnrollOTA the device's Apple-issued identity
// and the intermediates it sends with what it signs.
func WithAppleIdentity(cert *x509.Certificate, key crypto.Signer, chain ...*x509.Certificate) EnrollOption {
	return func(c *enrollConfig) { c.apple = &appleIdentity{cert: cert, key: key, chain: chain} }
}

type appleIdentity struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain []*x509.Certificate
}

// NewOTA prepares a device with random attributes to enroll at baseURL as
// user.
func NewOTA(baseURL, user, password string, opts ...EnrollOption) (*OTA, error) {
	o := &OTA{base: baseURL, user: user, pass: password}
	for _, opt := range opts {
		opt(&o.cfg)
	}
	if o.cfg.apple == nil {
		return nil, errors.New("OTA enrollment needs the device's Apple identity (WithAppleIdentity)")
	}
	if o.cfg.checkURL == nil {
		o.cfg.checkURL = func(*url.URL) error { return nil }
	}
	o.AppleCert, o.AppleKey, o.AppleChain = o.cfg.apple.cert, o.cfg.apple.key, o.cfg.apple.chain
	o.Attributes = map[string]string{
		"UDID": randomUDID(), "SERIAL": randomSerial(), "PRODUCT": "iPhone14,5",
		"VERSION": "21F90", "DEVICE_NAME": "Simulated iPhone",
	}
	return o, nil
}

// EnrollOTA enrolls a new device over the air, as a person does by
// signing in on it: it downloads the Profile Service payload from
// baseURL/ota/profile-service with HTTP Basic credentials, posts its
// attributes signed by its Apple identity (WithAppleIdentity), gets an OTA
// identity over SCEP with the payload of the answer, posts its attributes
// again signed by that identity, decrypts the enrollment profile of the
// answer with it, and enrolls with that profile as EnrollDirect does.
func EnrollOTA(ctx context.Context, baseURL, user, password string, opts ...EnrollOption) (*Device, error) {
	o, err := NewOTA(baseURL, user, password, opts...)
	if err != nil {
		return nil, err
	}
	if err := o.Start(ctx); err != nil {
		return nil, err
	}
	if err := o.PostFirst(ctx); err != nil {
		return nil, err
	}
	if err := o.GetIdentity(ctx); err != nil {
		return nil, err
	}
	if err := o.PostSecond(ctx, o.Identity, o.IdentityKey); err != nil {
		return nil, err
	}
	return o.Finish(ctx)
}

func (o *OTA) client() *http.Client {
	return newHTTPClient(rootPool(o.cfg.download, o.cfg.pinned, o.cfg.extra))
}

// anchors verify bramley's signed answers: the pinned roots, else the
// extra ones.
func (o *OTA) anchors() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range append(append(append([]*x509.Certificate(nil), o.cfg.pinned...), o.cfg.extra...), o.cfg.download...) {
		pool.AddCert(c)
	}
	return pool
}

// Start signs in and reads the Profile Service payload.
func (o *OTA) Start(ctx context.Context) error {
	u := o.base + "/ota/profile-service"
	if err := vetURL(o.cfg.checkURL, u, "profile service URL"); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(o.user, o.pass)
	c := o.client()
	defer c.CloseIdleConnections()
	body, err := doProfile(c, req, "the Profile Service payload")
	if err != nil {
		return err
	}
	return o.UseProfileService(body)
}

// UseProfileService takes a signed Profile Service payload got some other
// way, as a person downloads it from the portal and installs it, in
// place of Start; the user and password of NewOTA are then unused.
func (o *OTA) UseProfileService(signed []byte) error {
	p, err := o.verified(signed, "the Profile Service payload")
	if err != nil {
		return err
	}
	if p.PayloadType != profile.TypeProfileService || p.Service == nil || p.Service.URL == "" {
		return errors.New("the Profile Service payload has no URL")
	}
	if err := vetURL(o.cfg.checkURL, p.Service.URL, "the Profile Service URL"); err != nil {
		return err
	}
	o.Service = p.Service
	return nil
}

// PostFirst posts the attributes signed by the Apple identity and reads
// the SCEP payload of the answer.
func (o *OTA) PostFirst(ctx context.Context) error {
	signed, err := o.Post(ctx, o.AppleCert, o.AppleKey, o.AppleChain)
	if err != nil {
		return err
	}
	p, err := o.verified(signed, "the identity profile")
	if err != nil {
		return err
	}
	for _, pl := range p.PayloadContent {
		if sc, ok := pl.(*profile.SCEP); ok {
			o.SCEP = sc.PayloadContent
			if err := vetURL(o.cfg.checkURL, o.SCEP.URL, "the SCEP URL"); err != nil {
				return err
			}
			return nil
		}
	}
	return errors.New("the identity profile has no SCEP payload")
}

// GetIdentity runs SCEP with the phase-2 payload.
func (o *OTA) GetIdentity(ctx context.Context) error {
	key, err := o.cfg.keys.Key(max(o.SCEP.Keysize, 2048))
	if err != nil {
		return fmt.Errorf("creating the OTA identity key: %w", err)
	}
	c := o.client()
	defer c.CloseIdleConnections()
	cert, err := scepEnroll(ctx, c, o.SCEP, key)
	if err != nil {
		return fmt.Errorf("OTA identity: %w", err)
	}
	o.Identity, o.IdentityKey = cert, key
	return nil
}

// PostSecond posts the attributes signed by cert (the OTA identity) and
// keeps the answer in Final.
func (o *OTA) PostSecond(ctx context.Context, cert *x509.Certificate, key crypto.Signer) error {
	signed, err := o.Post(ctx, cert, key, nil)
	if err != nil {
		return err
	}
	o.Final = signed
	return nil
}

// Post posts the attributes, signed by cert and key, to the Profile
// Service URL and returns the answer.
func (o *OTA) Post(ctx context.Context, cert *x509.Certificate, key crypto.Signer, chain []*x509.Certificate) ([]byte, error) {
	attrs := map[string]string{"CHALLENGE": o.Service.Challenge}
	for k, v := range o.Attributes {
		attrs[k] = v
	}
	body, err := plist.Marshal(attrs)
	if err != nil {
		return nil, err
	}
	signed, err := SignAttributes(body, cert, key, chain)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.Service.URL, bytes.NewReader(signed))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/pkcs7-signature")
	c := o.client()
	defer c.CloseIdleConnections()
	return doProfile(c, req, "the OTA answer")
}

// SignAttributes signs an attribute plist as a device does: CMS
// SignedData, content attached, the signer's certificate and chain
// included.
func SignAttributes(body []byte, cert *x509.Certificate, key crypto.Signer, chain []*x509.Certificate) ([]byte, error) {
	sd, err := pkcs7.NewSignedData(body)
	if err != nil {
		return nil, err
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(cert, key, chain, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("signing attributes: %w", err)
	}
	return sd.Finish()
}

// Finish decrypts the final profile with the OTA identity, gets the MDM
// identity over SCEP and checks in, as EnrollDirect does.
func (o *OTA) Finish(ctx context.Context) (*Device, error) {
	p, err := o.verified(o.Final, "the enrollment profile")
	if err != nil {
		return nil, err
	}
	if !p.IsEncrypted {
		return nil, errors.New("the OTA enrollment profile is not encrypted")
	}
	if err := profile.DecryptPayloads(p, o.Identity, o.IdentityKey); err != nil {
		return nil, err
	}
	ep, installed, err := enrollmentPayloads(p)
	if err != nil {
		return nil, err
	}
	for _, u := range [][2]string{{"SCEP URL", ep.scep.URL}, {"ServerURL", ep.mdm.ServerURL}, {"CheckInURL", ep.checkInURL()}} {
		if err := vetURL(o.cfg.checkURL, u[1], "the profile's "+u[0]); err != nil {
			return nil, err
		}
	}
	base, err := ep.baseURL()
	if err != nil {
		return nil, err
	}
	roots := rootPool(installed, o.cfg.pinned, o.cfg.extra)
	client := newHTTPClient(roots)
	defer client.CloseIdleConnections()
	key, err := o.cfg.keys.Key(ep.scep.Keysize)
	if err != nil {
		return nil, fmt.Errorf("creating the identity key: %w", err)
	}
	cert, err := scepEnroll(ctx, client, ep.scep, key)
	if err != nil {
		return nil, err
	}
	devOpts := []Option{WithRootCAs(roots), WithTopic(ep.mdm.Topic), func(d *Device) {
		d.UDID, d.SerialNumber = o.Attributes["UDID"], o.Attributes["SERIAL"]
		d.ProductName, d.BuildVersion, d.DeviceName = o.Attributes["PRODUCT"], o.Attributes["VERSION"], o.Attributes["DEVICE_NAME"]
	}}
	if ep.mdm.SignMessage {
		devOpts = append(devOpts, WithMdmSignature())
	}
	d := New(base, cert, key, append(devOpts, o.cfg.device...)...)
	if err := d.Enroll(ctx); err != nil {
		return nil, fmt.Errorf("checking in with the SCEP identity: %w", err)
	}
	return d, nil
}

// verified checks a signed answer against the anchors and parses it.
func (o *OTA) verified(signed []byte, what string) (*profile.Profile, error) {
	content, _, err := profile.Verify(signed, o.anchors())
	if err != nil {
		return nil, fmt.Errorf("%s's signature: %w", what, err)
	}
	p, err := profile.Parse(content)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	return p, nil
}

// doProfile sends req and returns a profile answer.
func doProfile(c *http.Client, req *http.Request, what string) ([]byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProfile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %w", what, &StatusError{Status: resp.StatusCode, Body: readableBody(resp.Header.Get("Content-Type"), body)})
	}
	if len(body) > maxProfile {
		return nil, fmt.Errorf("%s: larger than %d bytes", what, maxProfile)
	}
	if media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); media != profile.ContentType {
		return nil, fmt.Errorf("%s: served as %q, not %s", what, resp.Header.Get("Content-Type"), profile.ContentType)
	}
	return body, nil
}
