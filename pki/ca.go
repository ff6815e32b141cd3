package pki

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/bramley-mdm/bramley/storage"
)

// Setting names under which the CA lives, shared by every replica: the root
// (the trust anchor) and the intermediate under it that issues everything.
const (
	SettingCACert             = "ca.cert"              // root, PEM certificate
	SettingCAKey              = "ca.key"               // root, PKCS#8 DER, sealed
	SettingCAIntermediateCert = "ca.intermediate.cert" // PEM certificate
	SettingCAIntermediateKey  = "ca.intermediate.key"  // PKCS#8 DER, sealed
)

const (
	caCommonName           = "bramley device CA"
	caLifetime             = 10 * 365 * 24 * time.Hour
	intermediateCommonName = "bramley device issuing CA"
	intermediateLifetime   = 5 * 365 * 24 * time.Hour
	// backdate allows for devices whose clocks run a little behind ours.
	backdate = time.Minute
)

// CA is bramley's certificate authority for device identities: a root, the
// trust anchor, and an intermediate under it that issues every certificate.
// A CA made from one certificate (NewCAFromKeyPair) is its own root.
type CA struct {
	cert  *x509.Certificate // the issuing certificate
	key   crypto.Signer     // its key
	root  *x509.Certificate // cert itself for a one-level CA
	now   func() time.Time
	certs CertificateStore
}

// CAOption configures a CA.
type CAOption func(*CA)

// WithCertificateStore records every certificate the CA issues, so renewals
// can be recognised and issued certificates listed.
func WithCertificateStore(s CertificateStore) CAOption {
	return func(ca *CA) { ca.certs = s }
}

// LoadOrCreateCA returns the CA kept in settings, creating it on first
// start. The intermediate is RSA because Apple devices encrypt SCEP requests
// to the key of the certificate GetCACert returns and support nothing else
// there; the root is RSA too. A database from before there was an
// intermediate (a root alone) gets one under its root, which stays the
// anchor, so identities the root issued itself keep verifying.
//
// Replicas may start at once against one empty database. The key is created
// first and the value CreateSetting returns is used, so every replica ends up
// with the winner's key; the certificate, if a replica must make it, is then
// made for that key, so whichever certificate wins matches it.
func LoadOrCreateCA(ctx context.Context, store SettingStore, sealer *Sealer, now func() time.Time, opts ...CAOption) (*CA, error) {
	key, err := loadOrCreateCAKey(ctx, store, sealer)
	if err != nil {
		return nil, err
	}
	certPEM, err := store.Setting(ctx, SettingCACert)
	if errors.Is(err, storage.ErrNotFound) {
		certPEM, err = newCACertificate(key, now())
		if err != nil {
			return nil, err
		}
		certPEM, err = store.CreateSetting(ctx, SettingCACert, certPEM)
	}
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("CA certificate does not match the CA key in settings")
	}
	icert, ikey, err := loadOrCreateIntermediate(ctx, store, sealer, cert, key, now)
	if err != nil {
		return nil, err
	}
	ca := &CA{cert: icert, key: ikey, root: cert, now: now}
	for _, o := range opts {
		o(ca)
	}
	return ca, nil
}

// loadOrCreateIntermediate returns the intermediate kept in settings,
// creating it under root like LoadOrCreateCA creates the root: key first,
// then a certificate for whichever key won.
func loadOrCreateIntermediate(ctx context.Context, store SettingStore, sealer *Sealer, root *x509.Certificate, rootKey crypto.Signer, now func() time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := loadOrCreateSealedKey(ctx, store, sealer, SettingCAIntermediateKey, func() (crypto.Signer, error) {
		return rsa.GenerateKey(rand.Reader, 2048)
	})
	if err != nil {
		return nil, nil, err
	}
	certPEM, err := store.Setting(ctx, SettingCAIntermediateCert)
	if errors.Is(err, storage.ErrNotFound) {
		var cert *x509.Certificate
		cert, err = newIntermediateCertificate(root, rootKey, key.Public(), now())
		if err != nil {
			return nil, nil, err
		}
		certPEM, err = store.CreateSetting(ctx, SettingCAIntermediateCert, EncodeCertificatePEM(cert))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading intermediate CA certificate: %w", err)
	}
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing intermediate CA certificate: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, nil, errors.New("intermediate CA certificate does not match the intermediate key in settings")
	}
	if err := cert.CheckSignatureFrom(root); err != nil {
		return nil, nil, fmt.Errorf("intermediate CA certificate was not issued by the root CA in settings: %w", err)
	}
	return cert, key, nil
}

// newIntermediateCertificate issues the intermediate for pub under root:
// path length 0, since it only issues end-entity certificates, and key
// encipherment, since SCEP requests are encrypted to it.
func newIntermediateCertificate(root *x509.Certificate, rootKey crypto.Signer, pub crypto.PublicKey, now time.Time) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: intermediateCommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(intermediateLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	if tmpl.NotAfter.After(root.NotAfter) {
		tmpl.NotAfter = root.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, pub, rootKey)
	if err != nil {
		return nil, fmt.Errorf("creating intermediate CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("creating intermediate CA certificate: %w", err)
	}
	return cert, nil
}

// NewCAFromKeyPair returns a CA for an existing certificate and key: an
// operator's own CA (bramley ca import), or a test CA. The certificate must
// be a CA certificate for key. Apple devices encrypt SCEP requests to the
// CA's key and only with RSA, so a CA that serves SCEP needs an RSA key;
// that is left to the caller, since the check-in side works with any.
func NewCAFromKeyPair(cert *x509.Certificate, key crypto.Signer, now func() time.Time, opts ...CAOption) (*CA, error) {
	if cert == nil || key == nil {
		return nil, errors.New("CA certificate and key are required")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, errors.New("certificate is not a CA certificate (basicConstraints CA:TRUE)")
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("CA certificate does not match the key")
	}
	if now == nil {
		now = time.Now
	}
	ca := &CA{cert: cert, key: key, root: cert, now: now}
	for _, o := range opts {
		o(ca)
	}
	return ca, nil
}

func loadOrCreateCAKey(ctx context.Context, store SettingStore, sealer *Sealer) (crypto.Signer, error) {
	return loadOrCreateSealedKey(ctx, store, sealer, SettingCAKey, func() (crypto.Signer, error) {
		return rsa.GenerateKey(rand.Reader, 2048)
	})
}

// loadOrCreateSealedKey returns the private key sealed under the setting
// name, generating and storing one if there is none. The value
// CreateSetting returns is used, so racing replicas agree on one key.
func loadOrCreateSealedKey(ctx context.Context, store SettingStore, sealer *Sealer, name string, generate func() (crypto.Signer, error)) (crypto.Signer, error) {
	sealed, err := store.Setting(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		key, err := generate()
		if err != nil {
			return nil, fmt.Errorf("generating %s: %w", name, err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", name, err)
		}
		if sealed, err = sealer.Seal(der); err != nil {
			return nil, fmt.Errorf("sealing %s: %w", name, err)
		}
		sealed, err = store.CreateSetting(ctx, name, sealed)
		if err != nil {
			return nil, fmt.Errorf("storing %s: %w", name, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	der, err := sealer.Open(sealed)
	if err != nil {
		return nil, fmt.Errorf("opening %s (is this the secret key it was sealed with?): %w", name, err)
	}
	return parsePKCS8(der)
}

func newCACertificate(key crypto.Signer, now time.Time) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	return EncodeCertificatePEM(cert), nil
}

// Certificate returns the issuing certificate (the intermediate): what
// GetCACert offers to encrypt SCEP requests to and what signs CertReps.
// Root is the trust anchor.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Root returns the root certificate: the trust anchor for device identities
// and for bramley's generated HTTPS certificate.
func (ca *CA) Root() *x509.Certificate { return ca.root }

// Chain returns the issuing certificate and, if it is not the root, the
// root: what a certificate the CA issues needs in order to be verified, and
// what the enrollment profile's trust payloads carry.
func (ca *CA) Chain() []*x509.Certificate {
	if ca.root == nil || ca.root.Equal(ca.cert) {
		return []*x509.Certificate{ca.cert}
	}
	return []*x509.Certificate{ca.cert, ca.root}
}

// Signer returns the issuing certificate's private key, for SCEP
// decryption and CMS.
func (ca *CA) Signer() crypto.Signer { return ca.key }

// IssueClient issues a client-authentication identity certificate for pub,
// valid for lifetime from now (never past the CA's own expiry), and records
// it when the CA has a CertificateStore.
func (ca *CA) IssueClient(ctx context.Context, pub crypto.PublicKey, subject pkix.Name, lifetime time.Duration) (*x509.Certificate, error) {
	return ca.issueClient(ctx, ca.certs, "", pub, subject, lifetime)
}

// IssueRenewal issues, like IssueClient, a new identity for a device that
// proved it holds its current one (a SCEP RenewalReq), and records it in
// store with deviceID. The record is what lets identity.Binder accept the
// new certificate from that device, and only that device, at its next
// check-in (Store.IssuedTo).
//
// The certificate is recorded once, in store, and not also in the CA's own
// CertificateStore: recording is idempotent by serial, so a first record
// without the device would win and the renewal would later be refused.
func (ca *CA) IssueRenewal(ctx context.Context, store CertificateStore, deviceID string, pub crypto.PublicKey, subject pkix.Name, lifetime time.Duration) (*x509.Certificate, error) {
	if store == nil {
		return nil, errors.New("issuing renewal: no certificate store to record it in")
	}
	if deviceID == "" {
		return nil, errors.New("issuing renewal: no device ID")
	}
	return ca.issueClient(ctx, store, deviceID, pub, subject, lifetime)
}

func (ca *CA) issueClient(ctx context.Context, store CertificateStore, deviceID string, pub crypto.PublicKey, subject pkix.Name, lifetime time.Duration) (*x509.Certificate, error) {
	if lifetime <= 0 {
		return nil, fmt.Errorf("certificate lifetime must be positive, got %v", lifetime)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		Subject:     subject,
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(lifetime),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cert, err := ca.issue(tmpl, pub)
	if err != nil {
		return nil, err
	}
	if store != nil {
		sum := sha256.Sum256(cert.Raw)
		err := store.RecordCertificate(ctx, storage.Certificate{
			Serial:    hex.EncodeToString(cert.SerialNumber.Bytes()),
			SHA256:    sum[:],
			Subject:   cert.Subject.String(),
			DeviceID:  deviceID,
			NotAfter:  cert.NotAfter,
			CreatedAt: now,
		})
		if err != nil {
			// An unrecorded certificate would later fail as an unknown
			// renewal, so it is not handed out.
			return nil, fmt.Errorf("recording issued certificate: %w", err)
		}
	}
	return cert, nil
}

// issue signs tmpl for pub with a fresh serial, keeping it within the CA's
// validity: a certificate outliving its issuer cannot be verified anyway.
func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate: %w", err)
	}
	return cert, nil
}

// randomSerial returns a random 128-bit serial: unguessable and, in
// practice, unique across replicas without coordination.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generating serial number: %w", err)
		}
		if n.Sign() > 0 { // RFC 5280 requires a positive serial
			return n, nil
		}
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}
