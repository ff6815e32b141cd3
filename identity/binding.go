package identity

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/storage"
)

// Store is what binding needs from storage. The binding itself is written by
// the check-in store when it records an Authenticate.
type Store interface {
	// CertBinding returns the hash of the certificate bound to the device and
	// when it was bound; storage.ErrNotFound when the device is unknown.
	CertBinding(ctx context.Context, deviceID string) (hash []byte, boundAt time.Time, err error)
	// CertDevice returns the device a certificate is bound to;
	// storage.ErrNotFound when it is bound to none.
	CertDevice(ctx context.Context, hash []byte) (deviceID string, err error)
	// IssuedTo returns the device bramley issued the certificate to as a
	// renewal; storage.ErrNotFound when it issued no such certificate.
	IssuedTo(ctx context.Context, hash []byte) (deviceID string, err error)
	// RebindCert binds the device to a new certificate. Idempotent;
	// storage.ErrNotFound when the device is unknown.
	RebindCert(ctx context.Context, deviceID string, hash []byte, now time.Time) error
}

// Binder keeps each identity certificate bound to one device.
type Binder struct {
	store  Store
	logger *slog.Logger
	now    func() time.Time
}

// NewBinder returns a Binder over store.
func NewBinder(store Store, logger *slog.Logger, now func() time.Time) *Binder {
	return &Binder{store: store, logger: logger, now: now}
}

// ErrUnknownDevice is returned for a device bramley has no record of.
var ErrUnknownDevice = errors.New("unknown device")

// reenrollSkew is how much older than the current binding a re-enrolling
// device's new certificate may be, to allow for clock skew between the CA
// and this server.
const reenrollSkew = 10 * time.Minute

// Check verifies that id may act as deviceID on any request but
// Authenticate: the certificate must be the one bound at Authenticate, or a
// renewal bramley issued to this device, which then becomes the binding.
func (b *Binder) Check(ctx context.Context, deviceID string, id *Identity) error {
	bound, _, err := b.store.CertBinding(ctx, deviceID)
	if errors.Is(err, storage.ErrNotFound) {
		return &handler.Error{Status: http.StatusForbidden, Message: "unknown device", Err: ErrUnknownDevice}
	}
	if err != nil {
		return fmt.Errorf("reading certificate binding: %w", err)
	}
	if bytes.Equal(bound, id.Hash) {
		return nil
	}
	issuedTo, err := b.store.IssuedTo(ctx, id.Hash)
	switch {
	case err == nil && issuedTo == deviceID:
		if err := b.store.RebindCert(ctx, deviceID, id.Hash, b.now()); err != nil {
			return fmt.Errorf("binding renewed certificate: %w", err)
		}
		b.logger.InfoContext(ctx, "device identity renewed", "device_id", deviceID, "cert_sha256", hex.EncodeToString(id.Hash))
		return nil
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("looking up issued certificate: %w", err)
	}
	return handler.Errorf(http.StatusForbidden, "certificate is not bound to this device")
}

// CheckAuthenticate verifies that id may enroll deviceID. Authenticate is
// where a device (re-)enrolls, so a new certificate is accepted here — after
// an erase or a reinstalled profile a device comes back with a fresh one —
// but only a certificate bound to no other device, and not one older than
// the device's current binding: a certificate someone already held when the
// device last enrolled cannot take the device over.
func (b *Binder) CheckAuthenticate(ctx context.Context, deviceID string, id *Identity) error {
	other, err := b.store.CertDevice(ctx, id.Hash)
	switch {
	case err == nil && other != deviceID:
		return handler.Errorf(http.StatusForbidden, "certificate is bound to another device")
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("looking up certificate binding: %w", err)
	}
	bound, boundAt, err := b.store.CertBinding(ctx, deviceID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && len(bound) == 0) {
		return nil // a new device
	}
	if err != nil {
		return fmt.Errorf("reading certificate binding: %w", err)
	}
	if bytes.Equal(bound, id.Hash) {
		return nil
	}
	if issuedTo, err := b.store.IssuedTo(ctx, id.Hash); err == nil && issuedTo == deviceID {
		return nil
	}
	if id.Cert.NotBefore.Before(boundAt.Add(-reenrollSkew)) {
		return handler.Errorf(http.StatusForbidden, "certificate predates this device's enrollment")
	}
	b.logger.WarnContext(ctx, "device re-enrolling with a new certificate", "device_id", deviceID,
		"old_cert_sha256", hex.EncodeToString(bound), "cert_sha256", hex.EncodeToString(id.Hash))
	return nil
}
