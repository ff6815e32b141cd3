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
// `bramley ca import` move the current root and intermediate here, so that
// device identities they issued keep verifying until the devices renew
// them: devices present their identity without its intermediate, so the old
// intermediate is kept as an anchor beside its root. The old keys are not
// kept: nothing is ever issued from an old CA again.
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
// and key) bramley's root CA: the key is sealed and both are stored where
// LoadOrCreateCA reads them, with a fresh intermediate under it that does
// the issuing, and the root certificate of the CA they replace joins the
// previous CAs (see PreviousCAs). Servers pick the new CA up when they next
// start.
//
// The certificate must be a CA certificate for key, valid now, allowed to
// sign certificates and to have an intermediate under it (no path length
// 0), and RSA, as its intermediate is: Apple devices encrypt SCEP requests
// to the CA's key and only with RSA.
func ImportCA(ctx context.Context, store CAStore, sealer *Sealer, cert *x509.Certificate, key crypto.Signer, now func() time.Time) (*CA, error) {
	if now == nil {
		now = time.Now
	}
	if _, err := NewCAFromKeyPair(cert, key, now); err != nil {
		return nil, err
	}
	if _, ok := key.(*rsa.PrivateKey); !ok {
		return nil, fmt.Errorf("the CA key is %s: Apple devices encrypt SCEP requests to the CA's key with RSA only, so bramley's CA needs an RSA key", KeyDescription(key.Public()))
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("the CA certificate's key usage does not allow signing certificates (keyCertSign)")
	}
	if cert.MaxPathLen == 0 && cert.MaxPathLenZero {
		return nil, errors.New("the CA certificate's path length constraint is 0: bramley issues from an intermediate CA under it, which that forbids")
	}
	t := now()
	if t.Before(cert.NotBefore) {
		return nil, fmt.Errorf("the CA certificate is not valid until %s", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if !t.Before(cert.NotAfter) {
		return nil, fmt.Errorf("the CA certificate expired %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return replaceCA(ctx, store, sealer, cert, key, now)
}

// RotateCA replaces bramley's CA with a new root and intermediate like the
// ones LoadOrCreateCA creates on first start. The old root joins the
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
	return replaceCA(ctx, store, sealer, cert, key, now)
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

// replaceCA stores cert and key as the root CA, with a new intermediate
// under it, and the current root and intermediate as the newest previous ones, in
// one PutSettings; it returns the new CA.
func replaceCA(ctx context.Context, store CAStore, sealer *Sealer, cert *x509.Certificate, key crypto.Signer, clock func() time.Time) (*CA, error) {
	now := clock()
	ikey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating intermediate CA key: %w", err)
	}
	icert, err := newIntermediateCertificate(cert, key, ikey.Public(), now)
	if err != nil {
		return nil, err
	}
	if err := replaceCASettings(ctx, store, sealer, cert, key, icert, ikey, now); err != nil {
		return nil, err
	}
	ca, err := NewCAFromKeyPair(icert, ikey, clock)
	if err != nil {
		return nil, err
	}
	ca.root = cert
	return ca, nil
}

func replaceCASettings(ctx context.Context, store CAStore, sealer *Sealer, cert *x509.Certificate, key crypto.Signer, icert *x509.Certificate, ikey crypto.Signer, now time.Time) error {
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

	var current []*x509.Certificate
	for _, name := range []string{SettingCACert, SettingCAIntermediateCert} {
		currentPEM, err := store.Setting(ctx, name)
		switch {
		case err == nil:
			c, err := ParseCertificatePEM(currentPEM)
			if err != nil {
				return fmt.Errorf("parsing current %s: %w", name, err)
			}
			current = append(current, c)
		case !errors.Is(err, storage.ErrNotFound):
			return fmt.Errorf("reading %s: %w", name, err)
		}
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
	candidates := append(current, previous...)
	for _, c := range candidates {
		if c.Equal(cert) || !now.Before(c.NotAfter) || slices.ContainsFunc(kept, c.Equal) {
			continue
		}
		kept = append(kept, c)
		bundle.Write(EncodeCertificatePEM(c))
	}

	sealedKey, err := sealKey(sealer, key)
	if err != nil {
		return fmt.Errorf("CA key: %w", err)
	}
	sealedIKey, err := sealKey(sealer, ikey)
	if err != nil {
		return fmt.Errorf("intermediate CA key: %w", err)
	}
	if err := store.PutSettings(ctx, map[string][]byte{
		SettingCAKey:              sealedKey,
		SettingCACert:             EncodeCertificatePEM(cert),
		SettingCAIntermediateKey:  sealedIKey,
		SettingCAIntermediateCert: EncodeCertificatePEM(icert),
		SettingCAPrevious:         bundle.Bytes(),
	}); err != nil {
		return fmt.Errorf("storing CA: %w", err)
	}
	return nil
}

func sealKey(sealer *Sealer, key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding: %w", err)
	}
	sealed, err := sealer.Seal(der)
	if err != nil {
		return nil, fmt.Errorf("sealing: %w", err)
	}
	return sealed, nil
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
