package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"
)

// SettingSignerKey names the sealed PKCS#8 key of the profile-signing
// identity.
const SettingSignerKey = "signer.key"

// signerLifetime is how long a profile-signing certificate lasts; a new one
// is issued for the same key at every start.
const signerLifetime = 365 * 24 * time.Hour

// Signer is the identity bramley signs profiles with: a certificate issued
// by its CA's intermediate, so a device that trusts the CA root shows them as
// verified.
type Signer struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate // the intermediate and the root (ca.Chain)
}

// LoadOrCreateSigner returns the profile-signing identity. Its key is
// shared by every replica through settings (sealed, created once); its
// certificate is issued afresh at each start, since any certificate the CA
// issues for that key is as good as another, so none needs storing.
func LoadOrCreateSigner(ctx context.Context, store SettingStore, sealer *Sealer, ca *CA) (*Signer, error) {
	key, err := loadOrCreateSealedKey(ctx, store, sealer, SettingSignerKey, func() (crypto.Signer, error) {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
	if err != nil {
		return nil, fmt.Errorf("profile-signing key: %w", err)
	}
	now := ca.now()
	cert, err := ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "bramley profile signing", Organization: []string{"bramley"}},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(signerLifetime),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection, x509.ExtKeyUsageCodeSigning},
	}, key.Public())
	if err != nil {
		return nil, fmt.Errorf("issuing profile-signing certificate: %w", err)
	}
	return &Signer{Cert: cert, Key: key, Chain: ca.Chain()}, nil
}
