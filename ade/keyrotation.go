package ade

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// KeyRotation replaces the key pair Apple encrypts server tokens to and
// keeps the one before (pki.RotateADEKeyPair, pki.PreviousADEKeyPair):
// Apple Business Manager encrypts each MDM server's tokens to whichever
// certificate an administrator last uploaded there, so after a rotation
// uploads may come for either.
type KeyRotation interface {
	// RotateKeyPair makes a new key pair current and the current one
	// previous, dropping any older one.
	RotateKeyPair(ctx context.Context) (*x509.Certificate, error)
	// PreviousKeyPair returns the key pair before the last rotation; a
	// nil certificate when there is none.
	PreviousKeyPair(ctx context.Context) (*x509.Certificate, crypto.PrivateKey, error)
	// ForgetPreviousKeyPair drops the previous key pair if cert is still
	// its certificate. Idempotent.
	ForgetPreviousKeyPair(ctx context.Context, cert *x509.Certificate) error
}

// WithKeyRotation lets RotateCertificate replace the key pair, and Import
// decrypt with the previous one; without it RotateCertificate fails.
func WithKeyRotation(r KeyRotation) ServiceOption { return func(s *Service) { s.rotation = r } }

// ErrPreviousCertificateInUse: rotating again would drop a key pair that
// MDM servers in Apple Business Manager may still encrypt tokens to.
var ErrPreviousCertificateInUse = errors.New("the certificate before the last rotation may still be in use: " +
	"upload the current certificate to every MDM server in Apple Business Manager and upload each server token again, or force the rotation")

// sealedToken is what Token.Sealed holds: the server token and the
// fingerprint of the certificate its upload was encrypted to. Older
// tokens have no fingerprint; they decode as a ServerToken all the same.
type sealedToken struct {
	*ServerToken
	CertSHA256 string `json:"cert_sha256,omitempty"`
}

func certFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// decrypt opens an uploaded server token with the current key pair, or
// with the previous one when the token is encrypted to that, and returns
// the certificate it was encrypted to.
func (s *Service) decrypt(ctx context.Context, p7m []byte) (*ServerToken, *x509.Certificate, error) {
	cert, key, err := s.keyPair(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("loading ADE token key pair: %w", err)
	}
	st, err := ParseServerToken(p7m, cert, key)
	if err == nil || !errors.Is(err, ErrTokenForeign) || s.rotation == nil {
		return st, cert, err
	}
	prevCert, prevKey, perr := s.rotation.PreviousKeyPair(ctx)
	if perr != nil {
		return nil, nil, fmt.Errorf("loading the previous ADE token key pair: %w", perr)
	}
	if prevCert == nil {
		return nil, nil, err
	}
	st, perr = ParseServerToken(p7m, prevCert, prevKey)
	if perr != nil {
		if errors.Is(perr, ErrTokenForeign) {
			return nil, nil, err
		}
		return nil, nil, perr
	}
	s.logger.Warn("ADE token uploaded for the certificate before the last rotation: upload the current certificate (GET /api/v1/ade/certificate) to this MDM server in Apple Business Manager",
		"consumer_key", st.ConsumerKey)
	return st, prevCert, nil
}

// RotateCertificate makes a new key pair for server tokens and returns
// its certificate, for an administrator to upload to each MDM server in
// Apple Business Manager. Tokens encrypted to the old certificate are
// still accepted until every stored token has been uploaded again for
// the new one. Unless force, it refuses with ErrPreviousCertificateInUse
// while a previous rotation's old certificate may still be in use, since
// rotating again would drop its key.
func (s *Service) RotateCertificate(ctx context.Context, force bool) ([]byte, error) {
	if s.rotation == nil {
		return nil, errors.New("ADE certificate rotation is not configured")
	}
	if !force {
		prev, _, err := s.rotation.PreviousKeyPair(ctx)
		if err != nil {
			return nil, fmt.Errorf("loading the previous ADE token key pair: %w", err)
		}
		if prev != nil {
			cert, _, err := s.keyPair(ctx)
			if err != nil {
				return nil, fmt.Errorf("loading ADE token key pair: %w", err)
			}
			stale, err := s.tokensNotFor(ctx, cert)
			if err != nil {
				return nil, err
			}
			if len(stale) > 0 {
				return nil, fmt.Errorf("%w (tokens not uploaded again yet: %s)", ErrPreviousCertificateInUse, strings.Join(stale, ", "))
			}
		}
	}
	cert, err := s.rotation.RotateKeyPair(ctx)
	if err != nil {
		return nil, fmt.Errorf("rotating ADE token key pair: %w", err)
	}
	s.logger.Info("ADE token certificate rotated: upload the new one to each MDM server in Apple Business Manager",
		"not_after", cert.NotAfter)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), nil
}

// tokensNotFor returns the IDs of the unexpired stored tokens last
// uploaded for a certificate other than cert (or before bramley kept
// track). Expired ones count for nothing: Apple refuses them anyway.
func (s *Service) tokensNotFor(ctx context.Context, cert *x509.Certificate) ([]string, error) {
	tokens, err := s.tokens.Tokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing ADE tokens: %w", err)
	}
	want := certFingerprint(cert)
	var stale []string
	for _, t := range tokens {
		if !t.AccessTokenExpiry.After(s.now()) {
			continue
		}
		plain, err := s.sealer.Open(t.Sealed)
		if err != nil {
			return nil, fmt.Errorf("opening ADE token %s: %w", t.ID, err)
		}
		var st sealedToken
		if err := json.Unmarshal(plain, &st); err != nil {
			return nil, fmt.Errorf("decoding ADE token %s: %w", t.ID, err)
		}
		if st.CertSHA256 != want {
			stale = append(stale, t.ID)
		}
	}
	return stale, nil
}

// forgetPreviousIfDone drops the previous key pair once every stored
// token has been uploaded for cert, the current certificate. A failure is
// only logged: the upload it follows succeeded.
func (s *Service) forgetPreviousIfDone(ctx context.Context, cert *x509.Certificate) {
	if s.rotation == nil {
		return
	}
	prev, _, err := s.rotation.PreviousKeyPair(ctx)
	if err == nil && prev != nil {
		var stale []string
		if stale, err = s.tokensNotFor(ctx, cert); err == nil && len(stale) == 0 {
			if err = s.rotation.ForgetPreviousKeyPair(ctx, prev); err == nil {
				s.logger.Info("every ADE token is uploaded for the current certificate: the previous key pair is dropped")
			}
		}
	}
	if err != nil {
		s.logger.Warn("checking the previous ADE token key pair", "err", err)
	}
}
