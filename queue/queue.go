// Package queue holds the command queue and serves the connect endpoint,
// where devices fetch commands and report their results (Apple's "Sending
// MDM commands to a device"). Commands go out by priority, then age; a
// command stays queued until the device answers Acknowledged, Error or
// CommandFormatError, expires, or is cancelled before delivery.
package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

// Store keeps the queue.
type Store interface {
	// Enqueue queues the command for every enrollment, all or nothing.
	// storage.ErrNotFound when an enrollment is unknown, storage.ErrConflict
	// when the CommandUUID is taken.
	Enqueue(ctx context.Context, cmd storage.NewCommand, enrollmentIDs []string) error
	// NextCommand returns the enrollment's next command — Pending, or
	// NotNow unless skipNotNow, not expired — by priority, then age, and
	// records its first delivery. nil, nil when there is none.
	NextCommand(ctx context.Context, enrollmentID string, skipNotNow bool, now time.Time) (*mdm.Command, error)
	// StoreResult records a device's answer and returns the command's
	// RequestType. A final status (Acknowledged, Error, CommandFormatError)
	// is kept once: a repeat changes nothing. NotNow does not overwrite a
	// final status. storage.ErrNotFound when the command was never queued
	// for this enrollment.
	StoreResult(ctx context.Context, enrollmentID string, res *mdm.CommandResults, now time.Time) (requestType string, err error)
}

// DeviceInfoStore keeps what DeviceInformation results say of a device.
type DeviceInfoStore interface {
	// UpdateDeviceInfo overwrites the device's attributes with the non-empty
	// fields of info. storage.ErrNotFound when the device is unknown.
	UpdateDeviceInfo(ctx context.Context, deviceID string, info storage.Device, now time.Time) error
}

// Binder decides whether a verified identity may act as a device.
type Binder interface {
	Check(ctx context.Context, deviceID string, id *identity.Identity) error
}

// Service is the command queue.
type Service struct {
	store     Store
	info      DeviceInfoStore
	binder    Binder
	logger    *slog.Logger
	now       func() time.Time
	observe   func(status string)
	onEnqueue func(ctx context.Context, enrollmentIDs []string)
}

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.logger = l } }

// WithClock sets the clock.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithObserver is called with the Status of every connect request that
// decoded; metrics use it.
func WithObserver(f func(status string)) Option { return func(s *Service) { s.observe = f } }

// WithEnqueueHook is called after commands were queued, unless the caller
// asked for no push; the push service hangs off it.
func WithEnqueueHook(f func(ctx context.Context, enrollmentIDs []string)) Option {
	return func(s *Service) { s.onEnqueue = f }
}

// New returns a queue Service.
func New(store Store, info DeviceInfoStore, binder Binder, opts ...Option) *Service {
	s := &Service{
		store: store, info: info, binder: binder,
		logger:    slog.New(slog.DiscardHandler),
		now:       time.Now,
		observe:   func(string) {},
		onEnqueue: func(context.Context, []string) {},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// EnqueueOptions says how a command is queued.
type EnqueueOptions struct {
	// Priority orders commands; higher goes first. Default 0.
	Priority int
	// TTL, when positive, is how long an undelivered command stays sendable.
	TTL time.Duration
	// NoPush queues without waking the devices.
	NoPush bool
}

// ErrUserChannel is returned when a command Apple allows only on the device
// channel is sent to a user channel.
var ErrUserChannel = errors.New("command not allowed on the user channel")

// Enqueue queues cmd for the enrollments.
func (s *Service) Enqueue(ctx context.Context, cmd *mdm.Command, enrollmentIDs []string, opts EnqueueOptions) error {
	if len(enrollmentIDs) == 0 {
		return errors.New("no enrollment IDs")
	}
	ids := slices.Clone(enrollmentIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if !mdm.UserChannelAllowed(cmd.RequestType) {
		for _, id := range ids {
			if _, user := mdm.SplitID(id); user != "" {
				return fmt.Errorf("%w: %s to %s", ErrUserChannel, cmd.RequestType, id)
			}
		}
	}
	now := s.now()
	nc := storage.NewCommand{
		UUID: cmd.CommandUUID, RequestType: cmd.RequestType, Raw: cmd.Raw,
		Priority: opts.Priority, CreatedAt: now,
	}
	if opts.TTL > 0 {
		nc.ExpiresAt = now.Add(opts.TTL)
	}
	if err := s.store.Enqueue(ctx, nc, ids); err != nil {
		return fmt.Errorf("enqueueing %s: %w", cmd.RequestType, err)
	}
	s.logger.InfoContext(ctx, "command queued", "command_uuid", cmd.CommandUUID,
		"request_type", cmd.RequestType, "targets", len(ids))
	if !opts.NoPush {
		s.onEnqueue(ctx, ids)
	}
	return nil
}

// Handler returns the connect endpoint. It expects the identity middleware
// in front of it.
func (s *Service) Handler() http.Handler {
	return handler.Adapt(s.logger, handler.PlainText, s.connect)
}

func (s *Service) connect(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, ok := identity.FromContext(ctx)
	if !ok {
		return handler.Errorf(http.StatusBadRequest, "no device identity")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return handler.Wrap(http.StatusBadRequest, "reading body", err)
	}
	res, err := mdm.DecodeCommandResults(body)
	if err != nil {
		return handler.Wrap(http.StatusBadRequest, "malformed command result", err)
	}
	if err := s.binder.Check(ctx, res.DeviceID(), id); err != nil {
		return err
	}
	s.observe(res.Status)
	enrollmentID := res.ID()
	now := s.now()
	if res.Status != mdm.StatusIdle {
		if err := s.storeResult(ctx, enrollmentID, res, now); err != nil {
			return err
		}
	}
	// After a NotNow, the device is not ready for NotNow'd commands in this
	// session; it comes back by itself when it is (Apple's NotNow rules).
	next, err := s.store.NextCommand(ctx, enrollmentID, res.Status == mdm.StatusNotNow, now)
	if err != nil {
		return fmt.Errorf("fetching next command: %w", err)
	}
	if next == nil {
		// Nothing to do is a zero-byte 200; an empty plist is not accepted
		// as "nothing".
		w.WriteHeader(http.StatusOK)
		return nil
	}
	s.logger.DebugContext(ctx, "sending command", "enrollment_id", enrollmentID,
		"command_uuid", next.CommandUUID, "request_type", next.RequestType)
	w.Header().Set("Content-Type", "application/xml")
	_, _ = w.Write(next.Raw)
	return nil
}

func (s *Service) storeResult(ctx context.Context, enrollmentID string, res *mdm.CommandResults, now time.Time) error {
	requestType, err := s.store.StoreResult(ctx, enrollmentID, res, now)
	if errors.Is(err, storage.ErrNotFound) {
		// A result for a command this enrollment never had (or one from
		// before it re-enrolled): nothing to record, but the device must
		// still get its next command.
		s.logger.WarnContext(ctx, "result for unknown command", "enrollment_id", enrollmentID,
			"command_uuid", res.CommandUUID, "status", res.Status)
		return nil
	}
	if err != nil {
		return fmt.Errorf("storing result: %w", err)
	}
	s.logger.InfoContext(ctx, "command result", "enrollment_id", enrollmentID,
		"command_uuid", res.CommandUUID, "request_type", requestType, "status", res.Status)
	if requestType == "DeviceInformation" && res.Status == mdm.StatusAcknowledged && !res.IsUserChannel() {
		if err := s.storeDeviceInformation(ctx, res, now); err != nil {
			// The result itself is stored; the summary fields can wait for
			// the next DeviceInformation.
			s.logger.WarnContext(ctx, "updating device information", "enrollment_id", enrollmentID, "err", err)
		}
	}
	return nil
}

func (s *Service) storeDeviceInformation(ctx context.Context, res *mdm.CommandResults, now time.Time) error {
	var di struct {
		QueryResponses map[string]any
	}
	if err := plist.Unmarshal(res.Raw, &di); err != nil {
		return fmt.Errorf("decoding QueryResponses: %w", err)
	}
	str := func(k string) string { v, _ := di.QueryResponses[k].(string); return v }
	info := storage.Device{
		SerialNumber: str("SerialNumber"), Model: str("Model"), ModelName: str("ModelName"),
		ProductName: str("ProductName"), DeviceName: str("DeviceName"), OSVersion: str("OSVersion"),
		BuildVersion: str("BuildVersion"), IMEI: str("IMEI"), MEID: str("MEID"), HostName: str("HostName"),
	}
	return s.info.UpdateDeviceInfo(ctx, res.DeviceID(), info, now)
}
