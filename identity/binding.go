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
	// Enrollment returns an enrollment by ID; storage.ErrNotFound when
	// unknown. A device channel is Enabled from its TokenUpdate until the
	// next Authenticate or its CheckOut.
	Enrollment(ctx context.Context, enrollmentID string) (*storage.Enrollment, error)
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

// CheckAuthenticate verifies that id may enroll deviceID. A certificate
// bound to another device is refused. While the device is enrolled (its
// device channel enabled by a TokenUpdate), only its bound certificate or a
// renewal bramley issued to it may Authenticate: anyone else holding a
// certificate from the same CA could otherwise take the device over. A
// device that never finished enrolling, or checked out, may come back with
// a new certificate — after a reinstalled profile it has a fresh one.
func (b *Binder) CheckAuthenticate(ctx context.Context, deviceID string, id *Identity) error {
	other, err := b.store.CertDevice(ctx, id.Hash)
	switch {
	case err == nil && other != deviceID:
		return handler.Errorf(http.StatusForbidden, "certificate is bound to another device")
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("looking up certificate binding: %w", err)
	}
	bound, _, err := b.store.CertBinding(ctx, deviceID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && len(bound) == 0) {
		return nil // a new device
	}
	if err != nil {
		return fmt.Errorf("reading certificate binding: %w", err)
	}
	if bytes.Equal(bound, id.Hash) {
		return nil
	}
	switch issuedTo, err := b.store.IssuedTo(ctx, id.Hash); {
	case err == nil && issuedTo == deviceID:
		return nil
	case err == nil && issuedTo != "":
		return handler.Errorf(http.StatusForbidden, "certificate was issued to another device")
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("looking up issued certificate: %w", err)
	}
	enr, err := b.store.Enrollment(ctx, deviceID)
	switch {
	case err == nil && enr.Enabled:
		return handler.Errorf(http.StatusForbidden, "device is enrolled with another certificate")
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("reading enrollment: %w", err)
	}
	b.logger.WarnContext(ctx, "device re-enrolling with a new certificate", "device_id", deviceID,
		"old_cert_sha256", hex.EncodeToString(bound), "cert_sha256", hex.EncodeToString(id.Hash))
	return nil
}
