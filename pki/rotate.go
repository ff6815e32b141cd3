package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/bramley-mdm/bramley/storage"
)

// SettingCAPrevious holds the certificates of the CAs bramley used before
// the current one, as a PEM bundle, newest first. `bramley ca rotate` and
// `bramley ca import` move the current certificate here, so that device
// identities it issued keep verifying until the devices renew them. The old
// keys are not kept: nothing is ever issued from an old CA again.
const SettingCAPrevious = "ca.previous"

// SettingWriter replaces settings, which SettingStore never does.
type SettingWriter interface {
	// PutSettings stores each value under its name, creating the setting
	// or replacing its value, all in one transaction: every value is
	// stored or none is. Replacing the CA writes its key, its certificate
	// and the previous-CAs list together, and a replica starting meanwhile
	// must never read the key of one CA with the certificate of another.
	// A nil value is stored as an empty one. Idempotent; an empty map
	// changes nothing.
	PutSettings(ctx context.Context, values map[string][]byte) error
}

// CAStore is what replacing the CA needs: reading settings and replacing
// them.
type CAStore interface {
	SettingStore
	SettingWriter
}

// ImportCA makes an existing CA (an operator's own, given as certificate
// and key) bramley's CA: the key is sealed and both are stored where
// LoadOrCreateCA reads them, and the certificate of the CA they replace
// joins the previous CAs (see PreviousCAs). Servers pick the new CA up when
// they next start.
//
// The certificate must be a CA certificate for key, valid now, allowed to
// sign certificates, and RSA: Apple devices encrypt SCEP requests to the
// CA's key and only with RSA.
func ImportCA(ctx context.Context, store CAStore, sealer *Sealer, cert *x509.Certificate, key crypto.Signer, now func() time.Time) (*CA, error) {
	if now == nil {
		now = time.Now
	}
	ca, err := NewCAFromKeyPair(cert, key, now)
	if err != nil {
		return nil, err
	}
	if _, ok := key.(*rsa.PrivateKey); !ok {
		return nil, fmt.Errorf("the CA key is %s: Apple devices encrypt SCEP requests to the CA's key with RSA only, so bramley's CA needs an RSA key", KeyDescription(key.Public()))
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("the CA certificate's key usage does not allow signing certificates (keyCertSign)")
	}
	t := now()
	if t.Before(cert.NotBefore) {
		return nil, fmt.Errorf("the CA certificate is not valid until %s", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if !t.Before(cert.NotAfter) {
		return nil, fmt.Errorf("the CA certificate expired %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := replaceCA(ctx, store, sealer, cert, key, t); err != nil {
		return nil, err
	}
	return ca, nil
}

// RotateCA replaces bramley's CA with a new one like the one
// LoadOrCreateCA creates on first start. The old certificate joins the
// previous CAs, so identities it issued still verify until they renew;
// servers pick the new CA up when they next start.
func RotateCA(ctx context.Context, store CAStore, sealer *Sealer, now func() time.Time) (*CA, error) {
	if now == nil {
		now = time.Now
	}
	if _, err := store.Setting(ctx, SettingCACert); errors.Is(err, storage.ErrNotFound) {
		return nil, errors.New("there is no CA to rotate yet: bramley serve creates one on first start")
	} else if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	certPEM, err := newCACertificate(key, now())
	if err != nil {
		return nil, err
	}
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parsing new CA certificate: %w", err)
	}
	if err := replaceCA(ctx, store, sealer, cert, key, now()); err != nil {
		return nil, err
	}
	return NewCAFromKeyPair(cert, key, now)
}

// PreviousCAs returns the certificates of the CAs bramley used before the
// current one, newest first: trust anchors for device identities besides the
// current CA. None is nil, not an error.
func PreviousCAs(ctx context.Context, store SettingStore) ([]*x509.Certificate, error) {
	data, err := store.Setting(ctx, SettingCAPrevious)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading previous CAs: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("parsing previous CAs: %w", err)
	}
	return certs, nil
}

// replaceCA stores cert and key as the CA and the current certificate as
// the newest previous one, in one PutSettings.
func replaceCA(ctx context.Context, store CAStore, sealer *Sealer, cert *x509.Certificate, key crypto.Signer, now time.Time) error {
	// Sealing the new key with a secret key other than the servers' would
	// leave them unable to start, so the secret key must first prove itself
	// on the key it replaces.
	sealed, err := store.Setting(ctx, SettingCAKey)
	switch {
	case err == nil:
		if _, err := sealer.Open(sealed); err != nil {
			return fmt.Errorf("the secret key does not open the current CA key: is it the one the server uses (--secret-key, BRAMLEY_SECRET_KEY or DATA/%s)? %w", SecretKeyFile, err)
		}
	case !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("reading CA key: %w", err)
	}

	var current *x509.Certificate
	currentPEM, err := store.Setting(ctx, SettingCACert)
	switch {
	case err == nil:
		if current, err = ParseCertificatePEM(currentPEM); err != nil {
			return fmt.Errorf("parsing current CA certificate: %w", err)
		}
	case !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("reading CA certificate: %w", err)
	}
	previous, err := PreviousCAs(ctx, store)
	if err != nil {
		return err
	}

	// Newest first, each once, never the new CA itself (importing an old
	// CA again makes it current), and without expired ones: an identity
	// cannot outlive the CA that issued it, so those verify nothing.
	var bundle bytes.Buffer
	var kept []*x509.Certificate
	candidates := previous
	if current != nil {
		candidates = append([]*x509.Certificate{current}, previous...)
	}
	for _, c := range candidates {
		if c.Equal(cert) || !now.Before(c.NotAfter) || slices.ContainsFunc(kept, c.Equal) {
			continue
		}
		kept = append(kept, c)
		bundle.Write(EncodeCertificatePEM(c))
	}

	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding CA key: %w", err)
	}
	sealedKey, err := sealer.Seal(der)
	if err != nil {
		return fmt.Errorf("sealing CA key: %w", err)
	}
	if err := store.PutSettings(ctx, map[string][]byte{
		SettingCAKey:      sealedKey,
		SettingCACert:     EncodeCertificatePEM(cert),
		SettingCAPrevious: bundle.Bytes(),
	}); err != nil {
		return fmt.Errorf("storing CA: %w", err)
	}
	return nil
}

// KeyDescription names a public key's algorithm and size, such as "RSA 2048"
// or "ECDSA P-256", for people reading about a certificate.
func KeyDescription(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}
