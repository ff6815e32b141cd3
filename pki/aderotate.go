package pki

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/bramley-mdm/bramley/storage"
)

// Setting names of the ADE key pair before the last rotation
// (RotateADEKeyPair). Apple Business Manager keeps encrypting server
// tokens to the old certificate until an administrator uploads the new
// one there, so bramley keeps decrypting with the old key until every
// stored token has been uploaded again. Empty values: there is none.
const (
	SettingADEPreviousCert = "ade.previous.cert" // PEM certificate
	SettingADEPreviousKey  = "ade.previous.key"  // PKCS#8 DER, sealed
)

// RotateADEKeyPair replaces the key pair Apple encrypts ADE server tokens
// to with a new one, and keeps the current one as the previous key pair
// (PreviousADEKeyPair), replacing any older previous one. The four
// settings change in one PutSettings, so no replica reads a key with
// another pair's certificate. With no key pair yet it makes the first.
func RotateADEKeyPair(ctx context.Context, store CAStore, sealer *Sealer, now time.Time) (*x509.Certificate, error) {
	oldKey, err := store.Setting(ctx, SettingADEKey)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		cert, _, err := LoadOrCreateADEKeyPair(ctx, store, sealer, now)
		return cert, err
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", SettingADEKey, err)
	}
	// The new key is sealed with this secret key: it must be the one the
	// servers use, as the current key shows.
	if _, err := sealer.Open(oldKey); err != nil {
		return nil, fmt.Errorf("opening %s (is this the secret key it was sealed with?): %w", SettingADEKey, err)
	}
	oldCert, err := store.Setting(ctx, SettingADECert)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", SettingADECert, err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating ADE token key: %w", err)
	}
	certPEM, err := newADECertificate(key, now)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding ADE token key: %w", err)
	}
	sealed, err := sealer.Seal(der)
	if err != nil {
		return nil, fmt.Errorf("sealing ADE token key: %w", err)
	}
	if err := store.PutSettings(ctx, map[string][]byte{
		SettingADEKey:          sealed,
		SettingADECert:         certPEM,
		SettingADEPreviousKey:  oldKey,
		SettingADEPreviousCert: oldCert,
	}); err != nil {
		return nil, fmt.Errorf("storing ADE token key pair: %w", err)
	}
	return ParseCertificatePEM(certPEM)
}

// PreviousADEKeyPair returns the key pair before the last rotation; nil,
// nil, nil when there is none.
func PreviousADEKeyPair(ctx context.Context, store SettingStore, sealer *Sealer) (*x509.Certificate, *rsa.PrivateKey, error) {
	certPEM, err := store.Setting(ctx, SettingADEPreviousCert)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && len(bytes.TrimSpace(certPEM)) == 0) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", SettingADEPreviousCert, err)
	}
	sealed, err := store.Setting(ctx, SettingADEPreviousKey)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", SettingADEPreviousKey, err)
	}
	der, err := sealer.Open(sealed)
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s (is this the secret key it was sealed with?): %w", SettingADEPreviousKey, err)
	}
	signer, err := parsePKCS8(der)
	if err != nil {
		return nil, nil, err
	}
	key, ok := signer.(*rsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s holds a %T, not an RSA key", SettingADEPreviousKey, signer)
	}
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w", SettingADEPreviousCert, err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, nil, errors.New("the previous ADE token certificate does not match the previous ADE key in settings")
	}
	return cert, key, nil
}

// ForgetPreviousADEKeyPair deletes the previous key pair when it is still
// the one whose certificate is cert: a rotation meanwhile made another
// previous, which stays. Idempotent.
func ForgetPreviousADEKeyPair(ctx context.Context, store CAStore, cert *x509.Certificate) error {
	current, err := store.Setting(ctx, SettingADEPreviousCert)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !bytes.Equal(bytes.TrimSpace(current), bytes.TrimSpace(EncodeCertificatePEM(cert)))) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", SettingADEPreviousCert, err)
	}
	if err := store.PutSettings(ctx, map[string][]byte{SettingADEPreviousKey: nil, SettingADEPreviousCert: nil}); err != nil {
		return fmt.Errorf("forgetting the previous ADE token key pair: %w", err)
	}
	return nil
}
