package scep

import (
	"context"
	"time"

	"github.com/bramley-mdm/bramley/storage"
)

// Challenge is what a one-time SCEP challenge was issued for.
type Challenge struct {
	// Subject, when set, is the common name the CSR's subject must carry:
	// a challenge handed to one enrollment cannot mint an identity named
	// for another.
	Subject string
	// EnrollmentID, when set, is the device ID of the enrolled device the
	// challenge was sent to (an identity renewal: enroll.RenewalService).
	// The identity issued for it is recorded with that device (see
	// WithRenewals), so the device may present it in place of its current
	// one: set it for nothing else.
	EnrollmentID string
	// Source says what issued the challenge (an enrollment token, the OTA
	// profile service, a renewal …), for the log.
	Source string
	// ExpiresAt is when the challenge stops working.
	ExpiresAt time.Time
}

// ChallengeStore hands out each SCEP challenge once.
//
// Backends keep only the SHA-256 of a challenge and look it up by that hash,
// so a database dump yields no usable challenge, and the lookup's timing
// says nothing about how close a guess came (an index search on a hash of
// the guess, not a comparison with the secret).
type ChallengeStore interface {
	// ConsumeChallenge marks the challenge used and returns what it was
	// issued for. It returns storage.ErrNotFound when the challenge is
	// unknown, already used, or expired at now. Marking it used and checking
	// that it was not are one atomic step: of two requests racing with one
	// challenge, only one gets it.
	ConsumeChallenge(ctx context.Context, challenge string, now time.Time) (Challenge, error)
}

// RenewalStore is what a RenewalReq needs: who the renewing certificate
// belongs to, and where the new one is recorded with that device (see
// pki.(*CA).IssueRenewal).
type RenewalStore interface {
	// CertDevice returns the device a certificate, by the SHA-256 of its
	// DER, is bound to (the binding made at Authenticate);
	// storage.ErrNotFound when it is bound to none.
	CertDevice(ctx context.Context, hash []byte) (deviceID string, err error)
	// RecordCertificate stores an issued certificate. Idempotent by serial.
	RecordCertificate(ctx context.Context, c storage.Certificate) error
}
