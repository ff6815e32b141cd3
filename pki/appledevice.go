package pki

import (
	"bytes"
	"crypto/x509"
	_ "embed" // the built-in Apple device CA
	"errors"
	"fmt"
	"time"
)

// appleDeviceCA is Apple's "Apple iPhone Device CA" (issuer "Apple iPhone
// Certification Authority"), the intermediate that issues the identity
// built into every iPhone and iPad. This copy's validity ended in 2014;
// Apple re-issued it with the same key, and devices made since still
// present certificates it signed (micromdm/micromdm pkg/crypto/testdata).
//
//go:embed apple-iphone-device-ca.pem
var appleDeviceCA []byte

// AppleDeviceCAs returns the built-in anchors of Apple's device identities.
func AppleDeviceCAs() []*x509.Certificate {
	certs, err := ParseCertificatesPEM(appleDeviceCA)
	if err != nil {
		panic(fmt.Sprintf("built-in Apple device CA: %v", err)) // embedded at build time
	}
	return certs
}

// Errors of AppleDeviceVerifier.Verify, for callers that answer them.
var (
	// ErrMalformedCMS: the bytes are not a CMS SignedData with one
	// signer and its content.
	ErrMalformedCMS = errors.New("malformed CMS")
	// ErrUntrustedSigner: the signature does not verify, or its signer
	// does not chain to an Apple device anchor.
	ErrUntrustedSigner = errors.New("not signed by an Apple device identity")
)

// maxAppleChain bounds how many certificates a device chain climbs.
const maxAppleChain = 5

// AppleDeviceVerifier verifies what a device signs with the identity Apple
// built into it: the MachineInfo of Setup Assistant enrollment (ADE) and
// the attributes of the first OTA profile-service request.
type AppleDeviceVerifier struct {
	anchors []*x509.Certificate
	now     func() time.Time
}

// NewAppleDeviceVerifier returns a verifier trusting the built-in Apple
// device CA and the extra anchors (--apple-device-ca); now judges the
// signer's own validity.
func NewAppleDeviceVerifier(extra []*x509.Certificate, now func() time.Time) *AppleDeviceVerifier {
	return &AppleDeviceVerifier{anchors: append(AppleDeviceCAs(), extra...), now: now}
}

// Verify checks a DER (or BER) CMS SignedData from outside: one signer,
// its signature over the attached content, and the signer's chain to an
// anchor (see VerifyChain). It returns the content and the signer.
// Failures wrap ErrMalformedCMS or ErrUntrustedSigner.
func (v *AppleDeviceVerifier) Verify(der []byte) ([]byte, *x509.Certificate, error) {
	p7, err := ParseCMS(der)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformedCMS, err)
	}
	if len(p7.Content) == 0 {
		return nil, nil, fmt.Errorf("%w: no signed content", ErrMalformedCMS)
	}
	signer := p7.GetOnlySigner()
	if signer == nil {
		return nil, nil, fmt.Errorf("%w: want exactly one signer with its certificate", ErrMalformedCMS)
	}
	// Verify checks the signature only (no trust store): the chain is
	// judged below, by key, as Apple's expired intermediate requires.
	if err := p7.Verify(); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUntrustedSigner, err)
	}
	if err := v.VerifyChain(signer, p7.Certificates); err != nil {
		return nil, nil, err
	}
	return p7.Content, signer, nil
}

// VerifyChain checks that leaf is valid now and chains, through the
// given intermediates, to an anchor, checking every signature by key but
// no validity dates above the leaf: Apple's "Apple iPhone Device CA"
// expired in 2014 and still signs device identities (Apple re-issued it
// with the same key; zentral verifies with OpenSSL's
// X509_V_FLAG_NO_CHECK_TIME). SHA-1 signatures are accepted, as older
// devices carry them. Failures wrap ErrUntrustedSigner.
func (v *AppleDeviceVerifier) VerifyChain(leaf *x509.Certificate, intermediates []*x509.Certificate) error {
	now := v.now()
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("%w: the device certificate is valid from %s to %s", ErrUntrustedSigner,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	c := leaf
	for range maxAppleChain {
		for _, a := range v.anchors {
			if c.Equal(a) || signedBy(c, a) {
				return nil
			}
		}
		var next *x509.Certificate
		for _, p := range intermediates {
			if !p.Equal(c) && signedBy(c, p) {
				next = p
				break
			}
		}
		if next == nil {
			break
		}
		c = next
	}
	return fmt.Errorf("%w: %q does not chain to an Apple device CA", ErrUntrustedSigner, leaf.Subject.String())
}

// signedBy reports whether parent, a CA, signed c. It is
// x509.Certificate.CheckSignatureFrom without the SHA-1 refusal, which
// Apple's older device certificates would fail.
func signedBy(c, parent *x509.Certificate) bool {
	if !bytes.Equal(c.RawIssuer, parent.RawSubject) {
		return false
	}
	if !parent.BasicConstraintsValid || !parent.IsCA {
		return false
	}
	if parent.KeyUsage != 0 && parent.KeyUsage&x509.KeyUsageCertSign == 0 {
		return false
	}
	return parent.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}
