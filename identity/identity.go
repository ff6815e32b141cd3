// Package identity establishes who a device is on every request to the
// check-in and connect endpoints, and keeps each identity certificate bound to
// one device.
//
// The certificate comes, in this order, from the Mdm-Signature header
// (a detached CMS signature over the body, sent when the profile says
// SignMessage), from the TLS client certificate when bramley terminates TLS,
// or from a header set by a trusted TLS-terminating proxy. Its chain must
// verify to bramley's CA or to a CA the operator trusts. Failures are 400 or
// 403, never 401: a 401 makes a device remove its MDM profile.
package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/pki"
)

// Identity is the verified identity of the device making a request.
type Identity struct {
	Cert *x509.Certificate
	// Hash is the SHA-256 of the certificate's DER: what enrollments bind to.
	Hash []byte
}

type ctxKey struct{}

// FromContext returns the identity the middleware verified.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(*Identity)
	return id, ok
}

// NewContext returns ctx carrying id; tests and in-process callers use it.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// Option configures a Verifier.
type Option func(*Verifier)

// WithProxyHeader trusts the named header, set by a TLS-terminating proxy,
// to carry the client certificate: RFC 9440 Client-Cert (":base64-DER:") or
// URL-escaped PEM as nginx's $ssl_client_escaped_cert sends it.
func WithProxyHeader(name string) Option {
	return func(v *Verifier) { v.proxyHeader = name }
}

// WithClock sets the clock certificates are judged against.
func WithClock(now func() time.Time) Option {
	return func(v *Verifier) { v.now = now }
}

// WithIntermediates adds CA certificates that may link a device's
// certificate to an anchor when the device sends none: over mutual TLS
// devices usually send their identity alone, without bramley's
// intermediate.
func WithIntermediates(certs ...*x509.Certificate) Option {
	return func(v *Verifier) { v.intermediates = append(v.intermediates, certs...) }
}

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option {
	return func(v *Verifier) { v.logger = l }
}

// Verifier extracts and verifies device identities.
type Verifier struct {
	roots         *x509.CertPool
	intermediates []*x509.Certificate
	proxyHeader   string
	now           func() time.Time
	logger        *slog.Logger

	// verified caches chain verification by certificate hash, so a device's
	// hundredth check-in does not redo its first one's work.
	mu       sync.Mutex
	verified map[[32]byte]time.Time // hash → NotAfter
}

// maxCached bounds the verification cache; when full it is emptied.
const maxCached = 100_000

// NewVerifier returns a Verifier accepting identities that chain to one of
// the anchors (bramley's CA and any CA the operator trusts).
func NewVerifier(anchors []*x509.Certificate, opts ...Option) *Verifier {
	v := &Verifier{
		roots:    x509.NewCertPool(),
		now:      time.Now,
		logger:   slog.New(slog.DiscardHandler),
		verified: make(map[[32]byte]time.Time),
	}
	for _, c := range anchors {
		v.roots.AddCert(c)
	}
	for _, o := range opts {
		o(v)
	}
	return v
}

// Middleware verifies the device identity of every request and puts it in
// the context. It reads the body (at most maxBody bytes) to check an
// Mdm-Signature and hands it on unchanged.
func (v *Verifier) Middleware(maxBody int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return handler.Adapt(v.logger, handler.PlainText, func(w http.ResponseWriter, r *http.Request) error {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
			var tooLarge *http.MaxBytesError
			switch {
			case errors.As(err, &tooLarge):
				return handler.Wrap(http.StatusRequestEntityTooLarge, "body too large", err)
			case err != nil:
				// The client went away or sent a broken body; not our fault.
				return handler.Wrap(http.StatusBadRequest, "reading body", err)
			}
			id, err := v.Identify(r, body)
			if err != nil {
				return err
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
			return nil
		})
	}
}

// Identify finds and verifies the device certificate of r, whose body has
// already been read into body.
func (v *Verifier) Identify(r *http.Request, body []byte) (*Identity, error) {
	cert, intermediates, err := v.extract(r, body)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(cert.Raw)
	if err := v.verifyChain(cert, intermediates, sum); err != nil {
		return nil, handler.Wrap(http.StatusForbidden, "device certificate not trusted", err)
	}
	return &Identity{Cert: cert, Hash: sum[:]}, nil
}

// extract returns the device certificate and any other certificates the
// device sent with it, which may be intermediates of an operator's CA.
func (v *Verifier) extract(r *http.Request, body []byte) (*x509.Certificate, []*x509.Certificate, error) {
	if sig := r.Header.Get("Mdm-Signature"); sig != "" {
		p7, cert, err := verifySignature(sig, body)
		if err != nil {
			return nil, nil, handler.Wrap(http.StatusForbidden, "Mdm-Signature does not verify", err)
		}
		return cert, p7.Certificates, nil
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return r.TLS.PeerCertificates[0], r.TLS.PeerCertificates[1:], nil
	}
	if v.proxyHeader != "" {
		if h := r.Header.Get(v.proxyHeader); h != "" {
			cert, err := ParseProxyHeader(h)
			if err != nil {
				return nil, nil, handler.Wrap(http.StatusBadRequest, "malformed client certificate header", err)
			}
			return cert, nil, nil
		}
	}
	return nil, nil, handler.Errorf(http.StatusBadRequest, "no device identity: no client certificate and no Mdm-Signature")
}

func (v *Verifier) verifyChain(cert *x509.Certificate, intermediates []*x509.Certificate, sum [32]byte) error {
	now := v.now()
	v.mu.Lock()
	notAfter, ok := v.verified[sum]
	v.mu.Unlock()
	if ok && now.Before(notAfter) {
		return nil
	}
	var pool *x509.CertPool
	if len(intermediates)+len(v.intermediates) > 0 {
		pool = x509.NewCertPool()
		for _, c := range intermediates {
			pool.AddCert(c)
		}
		for _, c := range v.intermediates {
			pool.AddCert(c)
		}
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: pool,
		CurrentTime:   now,
		// Device identities from SCEP payloads may carry no extended key
		// usage at all; what matters is the issuer.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return err
	}
	v.mu.Lock()
	if len(v.verified) >= maxCached {
		clear(v.verified)
	}
	v.verified[sum] = cert.NotAfter
	v.mu.Unlock()
	return nil
}

// MaxSignatureHeader bounds the Mdm-Signature header; real ones are ~2-4 KB.
const MaxSignatureHeader = 64 << 10

// VerifySignature checks an Mdm-Signature header value (base64 of a
// detached CMS SignedData, as devices send it: often BER with indefinite
// lengths, SHA-1, no signed attributes) against the body and returns the
// signer's certificate. It does not judge the certificate's chain.
func VerifySignature(header string, body []byte) (*x509.Certificate, error) {
	_, cert, err := verifySignature(header, body)
	return cert, err
}

func verifySignature(header string, body []byte) (*pkcs7.PKCS7, *x509.Certificate, error) {
	p7, signer, err := parseSignature(header)
	if err != nil {
		return nil, nil, err
	}
	p7.Content = body
	if err := p7.Verify(); err != nil {
		return nil, nil, fmt.Errorf("verifying signature: %w", err)
	}
	return p7, signer, nil
}

// ParseSignature returns the signer's certificate from an Mdm-Signature
// header value without verifying anything: for diagnostics, never for
// deciding who a device is.
func ParseSignature(header string) (*x509.Certificate, error) {
	_, cert, err := parseSignature(header)
	return cert, err
}

func parseSignature(header string) (p7 *pkcs7.PKCS7, signer *x509.Certificate, err error) {
	if len(header) > MaxSignatureHeader {
		return nil, nil, errors.New("signature header too large")
	}
	der, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		return nil, nil, fmt.Errorf("decoding base64: %w", err)
	}
	p7, err = pki.ParseCMS(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing CMS: %w", err)
	}
	signer = p7.GetOnlySigner()
	if signer == nil {
		return nil, nil, errors.New("CMS must have exactly one signer with its certificate")
	}
	return p7, signer, nil
}

// ParseProxyHeader parses a client certificate passed on by a proxy:
// RFC 9440 (":" base64 DER ":"), URL-escaped PEM (nginx), or plain PEM.
func ParseProxyHeader(h string) (*x509.Certificate, error) {
	h = strings.TrimSpace(h)
	if len(h) > 2 && h[0] == ':' && h[len(h)-1] == ':' {
		der, err := base64.StdEncoding.DecodeString(h[1 : len(h)-1])
		if err != nil {
			return nil, fmt.Errorf("decoding RFC 9440 Client-Cert: %w", err)
		}
		return x509.ParseCertificate(der)
	}
	if strings.Contains(h, "%") {
		// Not QueryUnescape: it turns "+" into a space, and proxies that
		// leave "+" unescaped (AWS ALB does) would lose base64 characters.
		unescaped, err := url.PathUnescape(h)
		if err != nil {
			return nil, fmt.Errorf("unescaping certificate: %w", err)
		}
		h = unescaped
	}
	block, _ := pem.Decode([]byte(h))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}
