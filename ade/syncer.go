package ade

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// CursorStore keeps each server token's device cursor.
type CursorStore interface {
	// Cursor returns the token's cursor; "" when it has none yet.
	Cursor(ctx context.Context, tokenID string) (string, error)
	// SetCursor replaces the token's cursor.
	SetCursor(ctx context.Context, tokenID, cursor string) error
}

// DeviceSink receives the devices the syncer reads from Apple.
type DeviceSink interface {
	// UpsertDevices records devices for the token, in Apple's order, each
	// serial number at most once per call (its latest operation). Devices from a fetch have no
	// OpType: each is assigned to the MDM server now. From a sync, OpType
	// says what changed; OpDeleted means the device left this MDM server.
	// The same device may come again in a later call (Apple repeats
	// itself, and a page is replayed after a crash), so it must be
	// idempotent.
	UpsertDevices(ctx context.Context, tokenID string, devices []Device) error
}

// DeviceSource is the part of Client the syncer uses.
type DeviceSource interface {
	FetchDevices(ctx context.Context, cursor string, limit int) (*DevicePage, error)
	SyncDevices(ctx context.Context, cursor string, limit int) (*DevicePage, error)
}

const (
	// defaultSyncLimit is the page size asked for: the most Apple's
	// documentation allows (its /account may allow more).
	defaultSyncLimit = 1000
	// defaultMaxPages bounds one run: ten million devices at 1000 a page.
	defaultMaxPages = 10000
	// echoLimit is how many answers in a row may hand back the cursor
	// they were asked with while claiming more_to_follow before the
	// syncer stops: asking again with it would loop forever.
	echoLimit = 2
)

// Syncer keeps bramley's list of a token's devices in step with Apple's:
// a full fetch (/server/devices) from an empty cursor, then changes
// (/devices/sync) from the saved cursor (g.2, after nanodep's syncer).
type Syncer struct {
	cursors  CursorStore
	sink     DeviceSink
	limit    int
	maxPages int
	logger   *slog.Logger
}

// SyncerOption configures a Syncer.
type SyncerOption func(*Syncer)

// WithSyncLimit sets the page size asked of Apple (default 1000).
func WithSyncLimit(n int) SyncerOption { return func(s *Syncer) { s.limit = n } }

// WithMaxPages bounds the pages of one run (default 10000).
func WithMaxPages(n int) SyncerOption { return func(s *Syncer) { s.maxPages = n } }

// WithSyncLogger sets the logger.
func WithSyncLogger(l *slog.Logger) SyncerOption { return func(s *Syncer) { s.logger = l } }

// NewSyncer returns a syncer keeping cursors in cursors and handing
// devices to sink.
func NewSyncer(cursors CursorStore, sink DeviceSink, opts ...SyncerOption) *Syncer {
	s := &Syncer{
		cursors:  cursors,
		sink:     sink,
		limit:    defaultSyncLimit,
		maxPages: defaultMaxPages,
		logger:   slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// SyncResult tells what one run did.
type SyncResult struct {
	// Pages is the number of answers with devices or a cursor.
	Pages int
	// Fetched counts devices from fetch pages; Added, Modified and
	// Deleted those from sync pages.
	Fetched, Added, Modified, Deleted int
	// Refetched: the saved cursor had expired or was unknown, so the
	// run fetched everything again.
	Refetched bool
	// Stalled: Apple kept answering with the cursor it was asked with
	// and more_to_follow; the run stopped there and tries again next time.
	Stalled bool
	// Cursor is the cursor saved at the end.
	Cursor string
}

type phase string

const (
	phaseFetch phase = "fetch"
	phaseSync  phase = "sync"
)

// Sync brings the token's devices up to date: it fetches from the saved
// cursor page by page while Apple has more to follow, then syncs the same
// way. An exhausted cursor (a finished fetch) goes straight to sync; an
// expired or invalid one starts the fetch again from nothing, once per
// run. Each page goes to the sink before its cursor is saved, so a crash
// replays a page rather than losing one. Other errors end the run with
// the cursor of the last page saved.
func (s *Syncer) Sync(ctx context.Context, tokenID string, src DeviceSource) (SyncResult, error) {
	var res SyncResult
	cursor, err := s.cursors.Cursor(ctx, tokenID)
	if err != nil {
		return res, fmt.Errorf("reading ADE cursor: %w", err)
	}
	res.Cursor = cursor
	log := s.logger.With("token_id", tokenID)
	ph, echoes := phaseFetch, 0
	for calls := 0; ; calls++ {
		if calls >= s.maxPages {
			return res, fmt.Errorf("ADE sync: more than %d pages in one run", s.maxPages)
		}
		var page *DevicePage
		if ph == phaseFetch {
			page, err = src.FetchDevices(ctx, cursor, s.limit)
		} else {
			page, err = src.SyncDevices(ctx, cursor, s.limit)
		}
		switch {
		case err == nil:
		case ph == phaseFetch && errors.Is(err, ErrExhaustedCursor):
			// The fetch this cursor belongs to has finished.
			ph = phaseSync
			continue
		case errors.Is(err, ErrExpiredCursor) || errors.Is(err, ErrInvalidCursor):
			if res.Refetched {
				return res, fmt.Errorf("ADE %s: cursor refused again after starting over: %w", ph, err)
			}
			log.Info("ADE cursor refused, fetching every device again", "phase", ph, "err", err)
			res.Refetched = true
			cursor, ph, echoes = "", phaseFetch, 0
			continue
		default:
			return res, fmt.Errorf("ADE %s: %w", ph, err)
		}
		res.Pages++
		devices := latestPerSerial(page.Devices)
		if len(devices) > 0 {
			if err := s.sink.UpsertDevices(ctx, tokenID, devices); err != nil {
				return res, fmt.Errorf("recording ADE devices: %w", err)
			}
		}
		res.count(ph, devices)
		log.Debug("ADE devices page", "phase", ph, "devices", len(page.Devices), "more_to_follow", page.MoreToFollow)
		if page.Cursor == "" {
			return res, fmt.Errorf("ADE %s: Apple answered without a cursor", ph)
		}
		if page.Cursor == cursor && page.MoreToFollow {
			// Apple has been seen to repeat a cursor; asking with it
			// again would get the same page forever.
			if echoes++; echoes >= echoLimit {
				log.Warn("ADE answered with the same cursor again; stopping until the next run", "phase", ph, "cursor", cursor)
				res.Stalled = true
				return res, nil
			}
			continue
		}
		echoes = 0
		if page.Cursor != cursor {
			if err := s.cursors.SetCursor(ctx, tokenID, page.Cursor); err != nil {
				return res, fmt.Errorf("saving ADE cursor: %w", err)
			}
			cursor = page.Cursor
			res.Cursor = cursor
		}
		switch {
		case page.MoreToFollow:
		case ph == phaseFetch:
			ph = phaseSync
		default:
			log.Info("ADE sync done", "fetched", res.Fetched, "added", res.Added, "modified", res.Modified, "deleted", res.Deleted, "refetched", res.Refetched)
			return res, nil
		}
	}
}

func (r *SyncResult) count(ph phase, devices []Device) {
	if ph == phaseFetch {
		r.Fetched += len(devices)
		return
	}
	for _, d := range devices {
		switch d.OpType {
		case OpAdded:
			r.Added++
		case OpModified:
			r.Modified++
		case OpDeleted:
			r.Deleted++
		}
	}
}

// latestPerSerial keeps one record per serial number: the one with the
// latest op_date, the later one in the page on a tie. Apple may list a
// device twice in a page (g.2), and a sink writing a page as one batch
// must not see a key twice.
func latestPerSerial(devices []Device) []Device {
	index := make(map[string]int, len(devices))
	out := make([]Device, 0, len(devices))
	for _, d := range devices {
		i, seen := index[d.SerialNumber]
		switch {
		case !seen:
			index[d.SerialNumber] = len(out)
			out = append(out, d)
		case !d.OpDate.Before(out[i].OpDate):
			out[i] = d
		}
	}
	return out
}
