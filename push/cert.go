package push

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/bramley-mdm/bramley/pki"
)

// TopicPrefix begins every MDM push topic ("com.apple.mgmt.External.<uuid>"
// for certificates from identity.apple.com). A certificate whose topic lacks
// it is an app or VoIP push certificate, which APNs would refuse for MDM.
const TopicPrefix = "com.apple.mgmt."

// oidUID is the subject attribute holding the push topic (RFC 4519 "uid").
var oidUID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}

// Why a push certificate is refused; match them with errors.Is.
var (
	ErrNoTopic     = errors.New("not an MDM push certificate: its subject has no com.apple.mgmt. topic (UID)")
	ErrExpired     = errors.New("the push certificate has expired")
	ErrKeyMismatch = errors.New("the private key does not belong to the push certificate")
)

// CertificateError is why a push certificate was refused. Its message is
// safe to show to the administrator who uploaded the certificate.
type CertificateError struct {
	Err    error  // ErrNoTopic, ErrExpired or ErrKeyMismatch
	Detail string // the topic, a date … what tells this certificate apart
}

func (e *CertificateError) Error() string {
	if e.Detail == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + " (" + e.Detail + ")"
}

func (e *CertificateError) Unwrap() error { return e.Err }

// Certificate is a validated MDM push certificate with its private key: the
// client identity for APNs.
type Certificate struct {
	// Topic is the certificate's subject UID; devices echo it in
	// Authenticate and TokenUpdate and the enrollment profile carries it.
	Topic    string
	NotAfter time.Time
	TLS      tls.Certificate
}

// DaysLeft returns the whole days until the certificate expires: negative
// once it has.
func (c *Certificate) DaysLeft(now time.Time) int {
	d := c.NotAfter.Sub(now)
	days := int(d / (24 * time.Hour))
	if d < 0 && d%(24*time.Hour) != 0 {
		days-- // floor, so one second past expiry is already -1
	}
	return days
}

// Topic returns the MDM push topic of cert: its subject UID, which must
// begin with TopicPrefix.
func Topic(cert *x509.Certificate) (string, error) {
	for _, atv := range cert.Subject.Names {
		if !atv.Type.Equal(oidUID) {
			continue
		}
		uid, ok := atv.Value.(string)
		if !ok || !strings.HasPrefix(uid, TopicPrefix) {
			return "", &CertificateError{Err: ErrNoTopic, Detail: fmt.Sprintf("UID %v", atv.Value)}
		}
		return uid, nil
	}
	return "", &CertificateError{Err: ErrNoTopic, Detail: "subject " + cert.Subject.String()}
}

// ParseCertificate parses a push certificate as Apple's push certificates
// portal hands it out (PEM, MDM_<vendor>_Certificate.pem) or as DER (.cer).
// Only the first certificate of a PEM bundle is returned.
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	if block, _ := pem.Decode(data); block == nil {
		cert, err := x509.ParseCertificate(data)
		if err != nil {
			return nil, fmt.Errorf("parsing push certificate: neither PEM nor DER: %w", err)
		}
		return cert, nil
	}
	cert, err := pki.ParseCertificatePEM(data)
	if err != nil {
		return nil, fmt.Errorf("parsing push certificate: %w", err)
	}
	return cert, nil
}

// LoadKeyPair validates a push certificate (PEM or DER, optionally followed
// by its chain) and its PEM private key: the pair must match, the
// certificate must carry an MDM topic and must not have expired now.
func LoadKeyPair(certPEM, keyPEM []byte) (*Certificate, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	if certs, err := pki.ParseCertificatesPEM(certPEM); err == nil {
		chain = certs[1:]
	}
	key, err := pki.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parsing push certificate key: %w", err)
	}
	return newCertificate(cert, chain, key, time.Now())
}

// LoadPKCS12 validates a push certificate and key exported together as a
// PKCS#12 (.p12) file, as Keychain Access exports them, with the same checks
// as LoadKeyPair.
func LoadPKCS12(data []byte, password string) (*Certificate, error) {
	key, cert, chain, err := pkcs12.DecodeChain(data, password)
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return nil, errors.New("reading push certificate .p12: wrong password")
	}
	if err != nil {
		return nil, fmt.Errorf("reading push certificate .p12: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("reading push certificate .p12: key of type %T cannot sign", key)
	}
	// Exports do not always put the key's own certificate first; take the
	// one that matches, so a chain-first file still loads.
	all := append([]*x509.Certificate{cert}, chain...)
	for i, c := range all {
		if keyMatches(signer, c) {
			cert = c
			chain = append(all[:i:i], all[i+1:]...)
			break
		}
	}
	return newCertificate(cert, chain, signer, time.Now())
}

// newCertificate checks the topic first, then the expiry: an app's push
// certificate or an expired one is useless whatever key comes with it, and
// saying so beats "wrong key".
func newCertificate(cert *x509.Certificate, chain []*x509.Certificate, key crypto.Signer, now time.Time) (*Certificate, error) {
	topic, err := Topic(cert)
	if err != nil {
		return nil, err
	}
	if !now.Before(cert.NotAfter) {
		return nil, &CertificateError{Err: ErrExpired,
			Detail: fmt.Sprintf("topic %s expired %s; renew it at identity.apple.com with the same Apple ID to keep the topic",
				topic, cert.NotAfter.UTC().Format(time.DateOnly))}
	}
	if !keyMatches(key, cert) {
		return nil, &CertificateError{Err: ErrKeyMismatch, Detail: "topic " + topic}
	}
	tc := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return &Certificate{Topic: topic, NotAfter: cert.NotAfter, TLS: tc}, nil
}

func keyMatches(key crypto.Signer, cert *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}
