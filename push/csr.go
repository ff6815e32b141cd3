package push

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/pki"
)

// maxChain bounds the vendor chain walk; Apple's is three certificates.
const maxChain = 8

// NewPushCSR returns a new RSA 2048 key and a PKCS#10 request for it: step 1
// of Apple's "MDM Vendor CSR Signing". The key stays with the customer's
// bramley (the caller seals it at rest) until Apple's certificate for the
// request comes back to pair with it; only the request goes to the vendor.
func NewPushCSR() (keyPEM, csrPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generating push key: %w", err)
	}
	// Apple replaces the subject with the topic; this one only tells the
	// request apart when a person looks at it.
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:            pkix.Name{CommonName: "bramley MDM push certificate"},
		SignatureAlgorithm: x509.SHA256WithRSA,
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating push certificate request: %w", err)
	}
	keyPEM, err = pki.EncodePrivateKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return keyPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// pushCertRequest is the plist Apple's push certificates portal
// (identity.apple.com/pushcert) takes, base64-encoded: "MDM Vendor CSR
// Signing Overview", step 2d.
type pushCertRequest struct {
	PushCertRequestCSR       string // base64 of the CSR's DER
	PushCertCertificateChain string // PEM: vendor certificate, Apple WWDR intermediate, Apple root
	PushCertSignature        string // base64 SHA256withRSA signature of the CSR's DER
}

// VendorSign is the MDM vendor's half of the CSR flow: it signs a customer's
// request (csrPEM) with the vendor's "MDM CSR" certificate and key and
// returns the base64-encoded plist the customer uploads to
// identity.apple.com. vendorChainPEM holds the Apple certificates above the
// vendor certificate (the WWDR intermediate and the Apple root) in any
// order; they are put in the order Apple requires, root last, and anything
// unrelated is left out.
func VendorSign(csrPEM, vendorCertPEM, vendorKeyPEM, vendorChainPEM []byte) ([]byte, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, errors.New("no PEM certificate request found")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate request: %w", err)
	}
	// A request whose self-signature fails was altered on its way to the
	// vendor; signing it would vouch for someone else's key.
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	vendorCert, err := pki.ParseCertificatePEM(vendorCertPEM)
	if err != nil {
		return nil, fmt.Errorf("vendor certificate: %w", err)
	}
	key, err := pki.ParsePrivateKeyPEM(vendorKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("vendor key: %w", err)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("vendor key is %T; Apple's MDM CSR certificates are RSA", key)
	}
	if !keyMatches(rsaKey, vendorCert) {
		return nil, errors.New("the vendor key does not belong to the vendor certificate")
	}
	pool, err := pki.ParseCertificatesPEM(vendorChainPEM)
	if err != nil {
		return nil, fmt.Errorf("vendor chain: %w", err)
	}
	chain, err := orderChain(vendorCert, pool)
	if err != nil {
		return nil, err
	}

	digest := sha256.Sum256(csr.Raw)
	sig, err := rsa.SignPKCS1v15(rand.Reader, rsaKey, crypto.SHA256, digest[:])
	if err != nil {
		return nil, fmt.Errorf("signing certificate request: %w", err)
	}
	var chainPEM bytes.Buffer
	for _, c := range chain {
		// Re-encoded from DER: Apple wants 64-character lines, which pem
		// writes, whatever line length the files came with.
		chainPEM.Write(pki.EncodeCertificatePEM(c))
	}
	doc, err := plist.MarshalIndent(pushCertRequest{
		PushCertRequestCSR:       base64.StdEncoding.EncodeToString(csr.Raw),
		PushCertCertificateChain: chainPEM.String(),
		PushCertSignature:        base64.StdEncoding.EncodeToString(sig),
	}, "\t")
	if err != nil {
		return nil, fmt.Errorf("encoding push certificate request: %w", err)
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(doc)))
	base64.StdEncoding.Encode(out, doc)
	return out, nil
}

// orderChain returns leaf and the pool's certificates that issued it, one
// above the other, ending at a self-signed root.
func orderChain(leaf *x509.Certificate, pool []*x509.Certificate) ([]*x509.Certificate, error) {
	chain := []*x509.Certificate{leaf}
	for cur := leaf; !isSelfSigned(cur); {
		if len(chain) > maxChain {
			return nil, errors.New("vendor chain: too long")
		}
		var parent *x509.Certificate
		for _, c := range pool {
			if issuedBy(cur, c) {
				parent = c
				break
			}
		}
		if parent == nil {
			return nil, fmt.Errorf("vendor chain: no certificate for the issuer %q of %q; give the Apple WWDR intermediate and the Apple root",
				cur.Issuer.String(), cur.Subject.String())
		}
		chain = append(chain, parent)
		cur = parent
	}
	if len(chain) < 2 {
		return nil, errors.New("vendor chain: the vendor certificate is self-signed, not issued by Apple")
	}
	return chain, nil
}

// issuedBy reports whether parent signed child. Apple's older roots and
// intermediates are signed with SHA-1, which Go refuses to verify; a SHA-1
// signature is accepted here because this only orders the chain for Apple,
// which checks it itself.
func issuedBy(child, parent *x509.Certificate) bool {
	if !bytes.Equal(parent.RawSubject, child.RawIssuer) {
		return false
	}
	err := child.CheckSignatureFrom(parent)
	var insecure x509.InsecureAlgorithmError
	return err == nil || errors.As(err, &insecure)
}

func isSelfSigned(c *x509.Certificate) bool { return issuedBy(c, c) }
