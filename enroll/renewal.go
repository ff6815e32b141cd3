package enroll

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/scep"
)

// Identity renewal. Apple devices do not renew their MDM identity over SCEP
// (apple-protocols.md b.4): it is renewed by sending the device its
// enrollment profile again, in an InstallProfile. Same PayloadIdentifier,
// so the installed profile is replaced and its SCEP payload makes a new
// identity, with a new one-time challenge issued for the device
// (scep.Challenge.EnrollmentID): the SCEP endpoint records the new
// certificate with the device, and identity.Binder then accepts it from
// that device and binds it.

// Defaults of RenewalConfig.
const (
	DefaultRenewalWindow     = 30 * 24 * time.Hour
	DefaultRenewalInterval   = time.Hour
	DefaultRenewalRetryAfter = 24 * time.Hour
	DefaultRenewalStartDelay = time.Minute
	DefaultRenewalBatchSize  = 100
)

// RenewalFailWithin: an identity this close to expiry whose renewal has not
// happened counts as a failed renewal, whatever its last command says.
const RenewalFailWithin = 7 * 24 * time.Hour

const (
	// renewalLease is how long a claimed identity is held for the replica
	// that claimed it: longer than making and queueing one profile takes.
	// One whose profile could not be queued is due again after it.
	renewalLease = 15 * time.Minute
	// challengeMargin keeps a renewal's challenge alive past its
	// command's TTL: a device that fetched the command just before it
	// expired still gets to run SCEP.
	challengeMargin = time.Hour
)

// States of a renewal (RenewalStatus.State).
const (
	// RenewalPending: a profile was sent; the device still has the identity
	// it replaces.
	RenewalPending = "pending"
	// RenewalFailed: still the old identity, and the last InstallProfile
	// failed or the identity expires within RenewalFailWithin.
	RenewalFailed = "failed"
	// RenewalRenewed: the device is bound to another identity now.
	RenewalRenewed = "renewed"
	// RenewalUnenrolled: the device channel is no longer enabled (checked
	// out, or enrolling again).
	RenewalUnenrolled = "unenrolled"
)

// Reasons a renewal failed (RenewalStatus.Reason), the first that applies.
const (
	// ReasonCommandFailed: the device answered the last InstallProfile
	// with Error or CommandFormatError.
	ReasonCommandFailed = "command_failed"
	// ReasonExpired: the identity has expired; the device must enroll again.
	ReasonExpired = "expired"
	// ReasonExpiring: the identity expires within RenewalFailWithin.
	ReasonExpiring = "expiring"
)

// ExpiringIdentity is an enrolled device whose identity is due a renewal.
type ExpiringIdentity struct {
	DeviceID string
	// CertSHA256 is the SHA-256 of the bound certificate, the one renewed.
	CertSHA256 []byte
	// Subject is the certificate's subject as recorded (pkix.Name's
	// String).
	Subject  string
	NotAfter time.Time
	// Topic is the push topic of the device channel: an MDM payload that
	// replaces the installed one must keep its Topic.
	Topic string
	// Attempts counts the profiles already sent to renew this certificate.
	Attempts int
}

// RenewalClaim says which identities ExpiringIdentities claims.
type RenewalClaim struct {
	// Now: identities that have expired are left out (an expired identity
	// can no longer fetch commands), and so are claims leased past it.
	Now time.Time
	// ExpiresBefore: identities whose NotAfter is before it are due.
	ExpiresBefore time.Time
	// RetryBefore: an identity whose last attempt was at or before it is
	// due again.
	RetryBefore time.Time
	// LeaseUntil: a claimed identity is not claimed again before it, unless
	// an attempt is recorded.
	LeaseUntil time.Time
	// Limit is the most identities returned; positive.
	Limit int
}

// RenewalStatus is where the renewal of one device's identity stands.
type RenewalStatus struct {
	DeviceID     string `json:"device_id"`
	SerialNumber string `json:"serial_number,omitempty"`
	// NotAfter is the expiry of the identity being renewed.
	NotAfter    time.Time `json:"not_after"`
	Attempts    int       `json:"attempts"`
	LastAttempt time.Time `json:"last_attempt"`
	// LastCommandUUID is the InstallProfile of the last attempt, and
	// LastStatus where it stands: Pending, NotNow, Acknowledged, Error,
	// CommandFormatError, Expired, Cancelled; empty when the command is no
	// longer in the device's queue (a device enrolling again drops it).
	LastCommandUUID string `json:"last_command_uuid"`
	LastStatus      string `json:"last_status,omitempty"`
	// State is one of RenewalPending, RenewalFailed, RenewalRenewed,
	// RenewalUnenrolled; Reason, for a failed one, a Reason… constant.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// RenewalQuery says what RenewalStatuses lists, and when.
type RenewalQuery struct {
	// Now is the time statuses are computed at.
	Now time.Time
	// FailBefore: a still-bound identity whose NotAfter is at or before it
	// counts as failed.
	FailBefore time.Time
	// FailedOnly lists the failed renewals only.
	FailedOnly bool
}

// RenewalStore keeps the renewal attempts.
type RenewalStore interface {
	// ExpiringIdentities claims and returns up to c.Limit identities due a
	// renewal, soonest NotAfter first, then by device ID. Due: the device
	// channel is enabled, and the certificate bound to the device is one
	// bramley issued (in the certificates table, joined by SHA-256), not
	// revoked, with c.Now < NotAfter < c.ExpiresBefore; and either no
	// attempt was made for that certificate, or the last was at or before
	// c.RetryBefore and no claim is leased past c.Now.
	//
	// Claiming leases the identity until c.LeaseUntil, so the next call —
	// on this replica or another — does not return it; attempts made for
	// an earlier certificate of the device are forgotten (Attempts 0).
	// Claims and their checks are one atomic step: of two replicas
	// claiming at once, one gets each identity. Not idempotent. No rows:
	// nil, nil.
	ExpiringIdentities(ctx context.Context, c RenewalClaim) ([]ExpiringIdentity, error)
	// RecordRenewalAttempt records that the InstallProfile commandUUID was
	// queued at now to renew the device's certificate certSHA256: Attempts
	// counts one more when the certificate is the one of the device's
	// previous attempts, or restarts at 1; the lease ends. Idempotent by
	// commandUUID. An unknown device records nothing, without error.
	RecordRenewalAttempt(ctx context.Context, deviceID, commandUUID string, certSHA256 []byte, now time.Time) error
	// RenewalStatuses lists every device with a recorded attempt (or only
	// the failed ones), ordered by device ID; nil, nil when none. The state
	// is, in this order: renewed when the device is bound to another
	// certificate than the attempt's; unenrolled when its device channel is
	// not enabled; failed when its last InstallProfile was answered Error
	// or CommandFormatError, or the certificate's NotAfter is at or before
	// q.FailBefore; pending otherwise. LastStatus of an open command past
	// its expiry at q.Now reads Expired.
	RenewalStatuses(ctx context.Context, q RenewalQuery) ([]RenewalStatus, error)
}

// Enqueuer queues commands; *queue.Service implements it.
type Enqueuer interface {
	Enqueue(ctx context.Context, cmd *mdm.Command, enrollmentIDs []string, opts queue.EnqueueOptions) error
}

// RenewalConfig says when identities are renewed. Zero (or negative)
// fields take the defaults.
type RenewalConfig struct {
	// Window: identities expiring within it are renewed (default 30 days).
	// It must be shorter than the identity lifetime, or renewed identities
	// are due again at once.
	Window time.Duration
	// Interval between sweeps (default 1 hour).
	Interval time.Duration
	// RetryAfter is how long an attempt is given before the next: the
	// InstallProfile's TTL, and about its challenge's (default 24 hours).
	RetryAfter time.Duration
	// StartDelay is how long Run waits before its first sweep (default 1
	// minute), so a starting server is not slowed by it.
	StartDelay time.Duration
	// BatchSize is how many identities one claim takes (default 100).
	BatchSize int
}

// RenewalService renews device identities before they expire.
//
// Each replica runs it; the claims (RenewalStore.ExpiringIdentities) share
// the work out, so each device gets one profile per attempt across the
// cluster. On PostgreSQL a claim is one upsert into renewal_attempts whose
// conflict clause re-checks the due conditions on the row as committed, so
// the replica that loses a race for a device skips it rather than sending
// a second profile; no advisory lock is held, so a replica that dies
// mid-sweep only delays its devices by the lease. SQLite serves one node.
type RenewalService struct {
	enroll *Service
	store  RenewalStore
	enq    Enqueuer
	cfg    RenewalConfig
	logger *slog.Logger
	now    func() time.Time
}

// NewRenewalService returns the renewal service of enrollment, whose
// profile, signer, clock, logger and topic source it uses; enq queues the
// InstallProfile commands (and pushes the devices).
func NewRenewalService(enrollment *Service, store RenewalStore, enq Enqueuer, cfg RenewalConfig) *RenewalService {
	if cfg.Window <= 0 {
		cfg.Window = DefaultRenewalWindow
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultRenewalInterval
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRenewalRetryAfter
	}
	if cfg.StartDelay <= 0 {
		cfg.StartDelay = DefaultRenewalStartDelay
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultRenewalBatchSize
	}
	return &RenewalService{
		enroll: enrollment, store: store, enq: enq, cfg: cfg,
		logger: enrollment.logger, now: enrollment.now,
	}
}

// Run sweeps after StartDelay, then every Interval, until ctx ends.
func (r *RenewalService) Run(ctx context.Context) error {
	delay := time.NewTimer(r.cfg.StartDelay)
	defer delay.Stop()
	select {
	case <-ctx.Done():
		return nil
	case <-delay.C:
	}
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
			r.logger.ErrorContext(ctx, "identity renewal sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep sends a renewal profile to every device whose identity is due, a
// batch at a time, and returns how many it sent. A device whose profile
// could not be made or queued is logged and skipped (it is due again after
// the lease); the error then says how many were.
func (r *RenewalService) Sweep(ctx context.Context) (int, error) {
	sent, failed := 0, 0
	var first error
	for ctx.Err() == nil {
		now := r.now()
		due, err := r.store.ExpiringIdentities(ctx, RenewalClaim{
			Now:           now,
			ExpiresBefore: now.Add(r.cfg.Window),
			RetryBefore:   now.Add(-r.cfg.RetryAfter),
			LeaseUntil:    now.Add(renewalLease),
			Limit:         r.cfg.BatchSize,
		})
		if err != nil {
			return sent, fmt.Errorf("claiming expiring identities: %w", err)
		}
		for _, id := range due {
			if err := r.renew(ctx, id); err != nil {
				failed++
				if first == nil {
					first = err
				}
				r.logger.ErrorContext(ctx, "identity renewal not sent", "device_id", id.DeviceID, "err", err)
				continue
			}
			sent++
		}
		if len(due) < r.cfg.BatchSize {
			break
		}
	}
	if failed > 0 {
		return sent, fmt.Errorf("%d identity renewals not sent, the first: %w", failed, first)
	}
	return sent, ctx.Err()
}

// renew queues the enrollment profile for one device, with a challenge
// issued for it, and records the attempt.
func (r *RenewalService) renew(ctx context.Context, id ExpiringIdentity) error {
	topic := id.Topic
	if topic == "" {
		var err error
		if topic, err = r.enroll.topic(ctx); err != nil {
			return fmt.Errorf("reading push topic: %w", err)
		}
	}
	// The new identity keeps the device's common name where it can be read
	// back from the record, so logs and certificate listings stay readable.
	cn := commonName(id.Subject)
	if cn == "" {
		cn = "bramley " + mdm.NewUUID()
	}
	signed, err := r.enroll.profile(ctx, topic, scep.Challenge{
		Subject: cn, EnrollmentID: id.DeviceID, Source: "identity renewal",
	}, r.cfg.RetryAfter+challengeMargin)
	if err != nil {
		return err
	}
	cmd, err := mdm.NewInstallProfile(signed)
	if err != nil {
		return fmt.Errorf("building InstallProfile: %w", err)
	}
	// The TTL ends an undelivered attempt when the next one is due, so a
	// device coming back from a long absence gets one profile, not several.
	if err := r.enq.Enqueue(ctx, cmd, []string{id.DeviceID}, queue.EnqueueOptions{TTL: r.cfg.RetryAfter}); err != nil {
		return fmt.Errorf("queueing renewal profile: %w", err)
	}
	if err := r.store.RecordRenewalAttempt(ctx, id.DeviceID, cmd.CommandUUID, id.CertSHA256, r.now()); err != nil {
		// The profile is queued; unrecorded, the device may get another
		// after the lease, which replaces this one.
		return fmt.Errorf("recording renewal attempt %s: %w", cmd.CommandUUID, err)
	}
	r.logger.InfoContext(ctx, "identity renewal sent", "device_id", id.DeviceID, "command_uuid", cmd.CommandUUID,
		"not_after", id.NotAfter.UTC().Format(time.RFC3339), "attempt", id.Attempts+1)
	return nil
}

// Renewals lists the devices with a renewal attempt, in the given state
// (RenewalFailed, RenewalPending, RenewalRenewed, RenewalUnenrolled), or
// all of them when state is empty. An unknown state is a 400.
func (r *RenewalService) Renewals(ctx context.Context, state string) ([]RenewalStatus, error) {
	switch state {
	case "", RenewalPending, RenewalFailed, RenewalRenewed, RenewalUnenrolled:
	default:
		return nil, handler.Errorf(http.StatusBadRequest, "state must be one of %s, %s, %s, %s",
			RenewalFailed, RenewalPending, RenewalRenewed, RenewalUnenrolled)
	}
	now := r.now()
	all, err := r.store.RenewalStatuses(ctx, RenewalQuery{
		Now: now, FailBefore: now.Add(RenewalFailWithin), FailedOnly: state == RenewalFailed,
	})
	if err != nil {
		return nil, fmt.Errorf("listing identity renewals: %w", err)
	}
	if state == "" || state == RenewalFailed {
		return all, nil
	}
	var out []RenewalStatus
	for _, st := range all {
		if st.State == state {
			out = append(out, st)
		}
	}
	return out, nil
}

// FailedCount counts the failed renewals, for the
// bramley_identity_renewals_failed gauge.
func (r *RenewalService) FailedCount(ctx context.Context) (int, error) {
	failed, err := r.Renewals(ctx, RenewalFailed)
	if err != nil {
		return 0, err
	}
	return len(failed), nil
}

// commonName returns the first CN of a subject as pkix.Name's String
// writes it (RFC 4514: "CN=a\,b,O=x", values escaped with backslashes),
// "" when it has none.
func commonName(subject string) string {
	var attr strings.Builder
	escaped := false
	for i := 0; i <= len(subject); i++ {
		if i < len(subject) {
			c := subject[i]
			switch {
			case escaped:
				escaped = false
				attr.WriteByte(c)
				continue
			case c == '\\':
				escaped = true
				continue
			case c != ',' && c != '+':
				attr.WriteByte(c)
				continue
			}
		}
		// The end of an attribute: unescaped ',' or '+', or the string's.
		if v, ok := strings.CutPrefix(attr.String(), "CN="); ok {
			return v
		}
		attr.Reset()
	}
	return ""
}
