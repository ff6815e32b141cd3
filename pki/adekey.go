package pki

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"

	"github.com/bramley-mdm/bramley/storage"
)

// Setting names of the key pair Apple encrypts ADE server tokens to,
// shared by every replica.
const (
	SettingADECert = "ade.cert" // PEM certificate
	SettingADEKey  = "ade.key"  // PKCS#8 DER, sealed
)

// adeCertLifetime: every yearly server token is encrypted to this
// certificate, and replacing it means uploading a new one to Apple
// Business Manager, so it lasts as long as the CA.
const adeCertLifetime = caLifetime

// LoadOrCreateADEKeyPair returns the RSA key and self-signed certificate
// whose PEM an administrator uploads to the MDM server in Apple Business
// Manager, creating them on first use. RSA because Apple encrypts server
// tokens to RSA only. The key is sealed at rest and never leaves bramley.
// Replicas racing on an empty database agree on one pair, as with the CA
// (LoadOrCreateCA).
func LoadOrCreateADEKeyPair(ctx context.Context, store SettingStore, sealer *Sealer, now time.Time) (*x509.Certificate, *rsa.PrivateKey, error) {
	signer, err := loadOrCreateSealedKey(ctx, store, sealer, SettingADEKey, func() (crypto.Signer, error) {
		return rsa.GenerateKey(rand.Reader, 2048)
	})
	if err != nil {
		return nil, nil, err
	}
	key, ok := signer.(*rsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s holds a %T, not an RSA key", SettingADEKey, signer)
	}
	certPEM, err := store.Setting(ctx, SettingADECert)
	if errors.Is(err, storage.ErrNotFound) {
		certPEM, err = newADECertificate(key, now)
		if err != nil {
			return nil, nil, err
		}
		certPEM, err = store.CreateSetting(ctx, SettingADECert, certPEM)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading ADE token certificate: %w", err)
	}
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing ADE token certificate: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, nil, errors.New("ADE token certificate does not match the ADE key in settings")
	}
	return cert, key, nil
}

func newADECertificate(key *rsa.PrivateKey, now time.Time) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "bramley ADE server token", Organization: []string{"bramley"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(adeCertLifetime),
		// Apple wraps each token's content key with this key (key
		// transport), hence key encipherment.
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating ADE token certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("creating ADE token certificate: %w", err)
	}
	return EncodeCertificatePEM(cert), nil
}
