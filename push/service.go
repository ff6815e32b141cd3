package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Store keeps what the push service needs of enrollments: where to push
// them and how their last push went. The push state of an enrollment is one
// row (or a few columns) kept beside it; every replica reads and writes it,
// so they agree on back-off without talking to each other.
type Store interface {
	// PushTargets returns a Target for each of enrollmentIDs that can be
	// pushed now: enabled, with the Token and PushMagic of its latest
	// TokenUpdate, and a token not marked invalid by RecordPushResults.
	// IDs that are unknown, disabled, without a token or with an invalid
	// one are left out without error; duplicates come back once; the
	// order is unspecified. Read-only, so idempotent.
	PushTargets(ctx context.Context, enrollmentIDs []string) ([]Target, error)

	// RecordPushResults stores the outcome of each enrollment's latest
	// push, replacing its previous push state, and:
	//   - keeps the stored state when its PushedAt is later than the
	//     record's, so a slow replica's older answer never overwrites a
	//     newer one;
	//   - when TokenInvalid, marks the enrollment's token invalid, but only
	//     if the stored token still equals the record's Token (a TokenUpdate
	//     may have brought a new one while the push was in flight). The mark
	//     lasts until the enrollment's next TokenUpdate, which must clear it
	//     and may reset the push state.
	// Records of unknown enrollments are skipped without error: the
	// enrollment may have been removed while the push was in flight.
	// Records are independent (one transaction is not required).
	// Idempotent: writing the same records again leaves the same state.
	RecordPushResults(ctx context.Context, records []PushRecord) error

	// ClaimPendingPushes returns up to c.Limit enrollments due a push and
	// claims them by setting their NextPushAt to c.LeaseUntil (creating
	// their push state, with Attempts 0, when they have none), so that a
	// concurrent claim on another replica does not return them; the
	// service then records the real state with RecordPushResults, and an
	// enrollment whose replica died is due again at c.LeaseUntil.
	//
	// An enrollment is due when it is enabled, has a token not marked
	// invalid, and either
	//   - has an open command — Pending or NotNow, not expired at c.Now —
	//     and its NextPushAt is at or before c.Now, or it has no push state
	//     and its oldest open command was queued at or before
	//     c.QueuedBefore (queued without a push, or before pushes existed);
	//   - or its push state has Retry set and NextPushAt at or before c.Now.
	// Oldest NextPushAt first (no push state counts as oldest), so a
	// backlog drains in order. PostgreSQL: one UPDATE … WHERE id IN
	// (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING. Not idempotent:
	// a second call returns other enrollments, or none. No rows: nil, nil.
	ClaimPendingPushes(ctx context.Context, c PushClaim) ([]PendingPush, error)
}

// PushRecord is the push state of one enrollment after a push, as
// RecordPushResults stores it.
type PushRecord struct {
	EnrollmentID string
	// Token is the token that was pushed, to check before marking it invalid.
	Token    []byte
	PushedAt time.Time
	// Status is APNs' HTTP status, 0 when APNs never answered.
	Status int
	// Reason is APNs' reason, or why the push failed, "" after a 200.
	Reason string
	// TokenInvalid is set when APNs refused the token for good.
	TokenInvalid bool
	// Attempts counts the pushes since the latest push bramley was asked
	// for (an enqueue or an administrator), that one included.
	Attempts int
	// NextPushAt is when the enrollment is due again if it still has open
	// commands, or Retry is set.
	NextPushAt time.Time
	// Retry makes the enrollment due at NextPushAt even without open
	// commands: the push failed in a way worth trying again (429, 5xx, no
	// answer).
	Retry bool
}

// PushClaim says which enrollments ClaimPendingPushes returns.
type PushClaim struct {
	// Now: enrollments whose NextPushAt is at or before it are due.
	Now time.Time
	// QueuedBefore: enrollments never pushed are due when an open command
	// was queued at or before it.
	QueuedBefore time.Time
	// LeaseUntil is the NextPushAt set on the claimed enrollments.
	LeaseUntil time.Time
	// Limit is the most enrollments returned; positive.
	Limit int
}

// PendingPush is an enrollment due a push, with the Attempts of its
// current push state (0 when it had none).
type PendingPush struct {
	Target   Target
	Attempts int
}

// Sender sends pushes for one topic: one Result per target, in order.
// *Provider implements it.
type Sender interface {
	Push(ctx context.Context, targets []Target) []Result
}

// ProviderSource finds the Sender for a push topic and lists the loaded
// push certificates. *Providers implements it.
type ProviderSource interface {
	Sender(topic string) (Sender, bool)
	Certificates() []*Certificate
}

// Defaults of a Service, in one place.
const (
	defaultInterval   = 30 * time.Second
	defaultBackoff    = time.Minute
	defaultMaxBackoff = time.Hour
	defaultBatchSize  = 1000
	defaultMaxRetries = 5
	// claimLease is how long a claimed enrollment stays out of other
	// replicas' claims: longer than pushing and recording one batch.
	claimLease = 5 * time.Minute
	// backgroundPushes bounds Notify's pushes in flight; beyond it Notify
	// waits, so a flood of enqueues slows down instead of piling up.
	backgroundPushes = 8
	notifyTimeout    = 2 * time.Minute
	// expiryWarning is how long before its expiry a push certificate is
	// warned about. Once it expires devices stop hearing from bramley, and
	// a certificate made anew instead of renewed gets a new topic, which
	// means re-enrolling every device.
	expiryWarning      = 30 * 24 * time.Hour
	expiryWarningEvery = 24 * time.Hour
	maxReason          = 200
	maxLoggedResults   = 10
)

// Service wakes enrollments through APNs: on demand, when commands are
// queued (Notify), and again while commands stay pending (Run), backing off
// exponentially per enrollment.
type Service struct {
	store      Store
	providers  ProviderSource
	logger     *slog.Logger
	now        func() time.Time
	observe    func(Result)
	interval   time.Duration
	backoff    time.Duration
	maxBackoff time.Duration
	batchSize  int
	maxRetries int

	bg chan struct{}
	wg sync.WaitGroup
}

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.logger = l } }

// WithClock sets the clock.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithObserver is called with every push's Result; metrics use it
// (Metrics.Observe).
func WithObserver(f func(Result)) Option { return func(s *Service) { s.observe = f } }

// WithInterval sets how often Run looks for enrollments due a push
// (default 30s).
func WithInterval(d time.Duration) Option { return func(s *Service) { s.interval = d } }

// WithBackoff sets the wait before an enrollment whose commands are still
// pending is pushed again (default 1m), doubling with each push up to max
// (default 1h). APNs keeps a push for an offline device, so pushing an
// unreachable device more often gains nothing.
func WithBackoff(initial, max time.Duration) Option {
	return func(s *Service) { s.backoff, s.maxBackoff = initial, max }
}

// WithBatchSize sets how many enrollments Run claims at once (default 1000).
func WithBatchSize(n int) Option { return func(s *Service) { s.batchSize = n } }

// WithMaxRetries sets how many pushes in a row are tried for an
// enrollment after 429, 5xx or no answer when nothing is pending for it
// (default 5); with commands pending it is pushed until they are answered.
func WithMaxRetries(n int) Option { return func(s *Service) { s.maxRetries = n } }

// New returns a push Service.
func New(store Store, providers ProviderSource, opts ...Option) (*Service, error) {
	s := &Service{
		store:      store,
		providers:  providers,
		logger:     slog.New(slog.DiscardHandler),
		now:        time.Now,
		observe:    func(Result) {},
		interval:   defaultInterval,
		backoff:    defaultBackoff,
		maxBackoff: defaultMaxBackoff,
		batchSize:  defaultBatchSize,
		maxRetries: defaultMaxRetries,
		bg:         make(chan struct{}, backgroundPushes),
	}
	for _, o := range opts {
		o(s)
	}
	switch {
	case store == nil || providers == nil:
		return nil, errors.New("push service needs a store and providers")
	case s.interval <= 0:
		return nil, fmt.Errorf("push interval must be positive, got %v", s.interval)
	case s.backoff <= 0 || s.maxBackoff < s.backoff:
		return nil, fmt.Errorf("push back-off must be positive and at most its maximum, got %v and %v", s.backoff, s.maxBackoff)
	case s.batchSize < 1:
		return nil, fmt.Errorf("push batch size must be at least 1, got %d", s.batchSize)
	}
	return s, nil
}

// PushEnrollments pushes the enrollments now and records the outcome. The
// enrollments that cannot be pushed (unknown, disabled, no valid token) are
// skipped: the Results say which were pushed. The error is the store's.
func (s *Service) PushEnrollments(ctx context.Context, enrollmentIDs []string) ([]Result, error) {
	if len(enrollmentIDs) == 0 {
		return nil, nil
	}
	targets, err := s.store.PushTargets(ctx, enrollmentIDs)
	if err != nil {
		return nil, fmt.Errorf("finding push targets: %w", err)
	}
	attempts := make([]int, len(targets))
	for i := range attempts {
		attempts[i] = 1 // asked for: the back-off starts over
	}
	return s.pushAndRecord(ctx, targets, attempts)
}

// Notify pushes the enrollments in the background: it is the queue's
// enqueue hook (queue.WithEnqueueHook(svc.Notify)). It returns at once
// unless backgroundPushes are already in flight, then waits for one to end
// or for ctx; a push skipped so is made later by Run, as the commands are
// still pending. The push itself outlives ctx, which is usually an API
// request's.
func (s *Service) Notify(ctx context.Context, enrollmentIDs []string) {
	if len(enrollmentIDs) == 0 {
		return
	}
	select {
	case s.bg <- struct{}{}:
	case <-ctx.Done():
		return
	}
	ids := slices.Clone(enrollmentIDs)
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
	s.wg.Go(func() {
		defer func() { cancel(); <-s.bg }()
		if _, err := s.PushEnrollments(bctx, ids); err != nil {
			s.logger.ErrorContext(bctx, "push after enqueue failed", "enrollments", len(ids), "err", err)
		}
	})
}

// Wait waits for the pushes Notify started; call it at shutdown.
func (s *Service) Wait() { s.wg.Wait() }

// Run pushes, every interval until ctx ends, the enrollments due a push
// (see Store.ClaimPendingPushes), and warns in the log about push
// certificates expiring within 30 days. It returns nil when ctx ends.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	var warned time.Time
	for {
		if now := s.now(); now.Sub(warned) >= expiryWarningEvery {
			s.CheckCertificates(ctx)
			warned = now
		}
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.logger.ErrorContext(ctx, "push sweep failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep pushes every enrollment due a push now, a batch at a time, and
// returns how many it pushed. Run calls it every interval.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	total := 0
	for ctx.Err() == nil {
		now := s.now()
		due, err := s.store.ClaimPendingPushes(ctx, PushClaim{
			Now:          now,
			QueuedBefore: now.Add(-s.backoff),
			LeaseUntil:   now.Add(claimLease),
			Limit:        s.batchSize,
		})
		if err != nil {
			return total, fmt.Errorf("claiming pending pushes: %w", err)
		}
		if len(due) == 0 {
			break
		}
		targets := make([]Target, len(due))
		attempts := make([]int, len(due))
		for i, d := range due {
			targets[i], attempts[i] = d.Target, d.Attempts+1
		}
		if _, err := s.pushAndRecord(ctx, targets, attempts); err != nil {
			return total, err
		}
		total += len(due)
		if len(due) < s.batchSize {
			break
		}
	}
	if total > 0 {
		s.logger.DebugContext(ctx, "pushed enrollments with pending commands", "enrollments", total)
	}
	return total, ctx.Err()
}

// CheckCertificates logs a warning for each push certificate expiring
// within 30 days, and an error for each one that has expired.
func (s *Service) CheckCertificates(ctx context.Context) {
	now := s.now()
	for _, c := range s.providers.Certificates() {
		days := c.DaysLeft(now)
		switch {
		case !now.Before(c.NotAfter):
			s.logger.ErrorContext(ctx, "push certificate expired: devices cannot be pushed; renew it at identity.apple.com with the same Apple ID",
				"topic", c.Topic, "not_after", c.NotAfter)
		case c.NotAfter.Sub(now) <= expiryWarning:
			s.logger.WarnContext(ctx, "push certificate expires soon: renew it (do not create a new one: a new topic means re-enrolling every device)",
				"topic", c.Topic, "not_after", c.NotAfter, "days_left", days)
		}
	}
}

func (s *Service) pushAndRecord(ctx context.Context, targets []Target, attempts []int) ([]Result, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	results := s.send(ctx, targets)
	now := s.now()
	records := make([]PushRecord, len(results))
	for i, r := range results {
		records[i] = s.record(targets[i], r, attempts[i], now)
		s.observe(r)
	}
	s.logResults(ctx, results)
	// The record must be written even when ctx has ended: a token APNs
	// called invalid would otherwise be pushed again.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.store.RecordPushResults(rctx, records); err != nil {
		return results, fmt.Errorf("recording push results: %w", err)
	}
	return results, nil
}

func (s *Service) record(t Target, r Result, attempts int, now time.Time) PushRecord {
	rec := PushRecord{
		EnrollmentID: t.EnrollmentID,
		Token:        t.Token,
		PushedAt:     now,
		Status:       r.Status,
		Reason:       r.Reason,
		TokenInvalid: r.Unregistered,
		Attempts:     attempts,
		NextPushAt:   now.Add(s.backoffFor(attempts)),
		Retry:        r.Retryable && attempts < s.maxRetries,
	}
	if rec.Reason == "" && r.Err != nil {
		rec.Reason = r.Err.Error()
	}
	if len(rec.Reason) > maxReason {
		rec.Reason = rec.Reason[:maxReason]
	}
	return rec
}

// backoffFor returns the wait after the attempts-th push: the initial
// back-off, doubled for each push after the first, at most the maximum.
func (s *Service) backoffFor(attempts int) time.Duration {
	d := s.backoff
	for i := 1; i < attempts && d < s.maxBackoff; i++ {
		d *= 2
	}
	return min(d, s.maxBackoff)
}

// send groups targets by topic and pushes each group with its topic's
// Sender, returning one Result per target in order.
func (s *Service) send(ctx context.Context, targets []Target) []Result {
	results := make([]Result, len(targets))
	byTopic := make(map[string][]int)
	for i, t := range targets {
		byTopic[t.Topic] = append(byTopic[t.Topic], i)
	}
	var wg sync.WaitGroup
	for topic, idx := range byTopic {
		sender, ok := s.providers.Sender(topic)
		if !ok {
			s.logger.WarnContext(ctx, "no push certificate for the topic of enrollments", "topic", topic, "enrollments", len(idx))
			for _, i := range idx {
				results[i] = Result{EnrollmentID: targets[i].EnrollmentID,
					Err: fmt.Errorf("%w %q", ErrNoCertificate, topic)}
			}
			continue
		}
		batch := make([]Target, len(idx))
		for k, i := range idx {
			batch[k] = targets[i]
		}
		wg.Go(func() {
			for k, r := range sender.Push(ctx, batch) {
				results[idx[k]] = r
			}
		})
	}
	wg.Wait()
	return results
}

// logResults logs the interesting outcomes one by one, up to
// maxLoggedResults per batch so that one bad batch of a bulk command does
// not flood the log, and a summary.
func (s *Service) logResults(ctx context.Context, results []Result) {
	counts := make(map[string]int)
	logged := 0
	for _, r := range results {
		o := Outcome(r)
		counts[o]++
		if (o != OutcomeUnregistered && o != OutcomeFailed) || logged >= maxLoggedResults {
			continue
		}
		logged++
		if o == OutcomeUnregistered {
			s.logger.InfoContext(ctx, "push token no longer valid; not pushing it until the next TokenUpdate",
				"enrollment_id", r.EnrollmentID, "http_status", r.Status, "reason", r.Reason)
		} else {
			s.logger.WarnContext(ctx, "push failed", "enrollment_id", r.EnrollmentID,
				"http_status", r.Status, "err", r.Err)
		}
	}
	if n := counts[OutcomeCertificateRefused]; n > 0 {
		s.logger.ErrorContext(ctx, "APNs refused the push certificate: is it revoked, expired or replaced?",
			"pushes", n)
	}
	level := slog.LevelDebug
	if logged >= maxLoggedResults {
		level = slog.LevelWarn
	}
	s.logger.Log(ctx, level, "pushed", "ok", counts[OutcomeOK], "unregistered", counts[OutcomeUnregistered],
		"retryable", counts[OutcomeRetryable], "certificate_refused", counts[OutcomeCertificateRefused],
		"no_certificate", counts[OutcomeNoCertificate], "failed", counts[OutcomeFailed])
}

// Outcomes of a push, as Outcome names them (and the metrics label them).
const (
	OutcomeOK                 = "ok"
	OutcomeUnregistered       = "unregistered"
	OutcomeRetryable          = "retryable"
	OutcomeCertificateRefused = "certificate_refused"
	OutcomeNoCertificate      = "no_certificate"
	OutcomeFailed             = "failed"
)

// Outcome sorts a Result into one of the Outcome constants.
func Outcome(r Result) string {
	switch {
	case r.Err == nil:
		return OutcomeOK
	case r.Unregistered:
		return OutcomeUnregistered
	case r.Retryable:
		return OutcomeRetryable
	case r.Status == http.StatusForbidden:
		return OutcomeCertificateRefused
	case errors.Is(r.Err, ErrNoCertificate):
		return OutcomeNoCertificate
	}
	return OutcomeFailed
}
