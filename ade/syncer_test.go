package ade

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
)

const tokenID = "token-1"

func TestSyncerWithFake(t *testing.T) {
	fake := appletest.NewADE(t)
	fake.AddDevices(devices(250, "SYNC")...)
	c, _ := newFakeClient(t, fake)
	cursors, sink := &memCursors{}, &memSink{}
	s := NewSyncer(cursors, sink, WithSyncLimit(100))
	ctx := t.Context()

	// First run: a full fetch in pages, then a sync with nothing new.
	res, err := s.Sync(ctx, tokenID, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fetched != 250 || res.Added+res.Modified+res.Deleted != 0 || res.Refetched || res.Stalled {
		t.Errorf("first run %+v", res)
	}
	if len(sink.serials(tokenID)) != 250 {
		t.Errorf("%d devices recorded, want 250", len(sink.serials(tokenID)))
	}
	stored, _ := cursors.Cursor(ctx, tokenID)
	if stored == "" || stored != res.Cursor {
		t.Errorf("cursor stored %q, result %q", stored, res.Cursor)
	}
	wantCalls := []string{"POST /server/devices 200", "POST /server/devices 200", "POST /server/devices 200", "POST /devices/sync 200"}
	if got := paths(fake.Requests())[1:]; !slices.Equal(got, wantCalls) {
		t.Errorf("requests %v, want %v", got, wantCalls)
	}

	// Second run: the fetch cursor is exhausted, sync reports the changes.
	fake.AddDevices(appletest.ADEDevice{SerialNumber: "SYNCNEW"})
	fake.ModifyDevice("SYNC0007", func(d *appletest.ADEDevice) { d.AssetTag = "A7" })
	fake.RemoveDevice("SYNC0008")
	before := len(fake.Requests())
	res, err = s.Sync(ctx, tokenID, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fetched != 0 || res.Added != 1 || res.Modified != 1 || res.Deleted != 1 {
		t.Errorf("second run %+v", res)
	}
	wantCalls = []string{"POST /server/devices 400", "POST /devices/sync 200"}
	if got := paths(fake.Requests()[before:]); !slices.Equal(got, wantCalls) {
		t.Errorf("requests %v, want %v", got, wantCalls)
	}
	got := sink.serials(tokenID)
	if len(got) != 250 || !slices.Contains(got, "SYNCNEW") || slices.Contains(got, "SYNC0008") {
		t.Errorf("devices after sync: %d, new %v, deleted gone %v", len(got), slices.Contains(got, "SYNCNEW"), !slices.Contains(got, "SYNC0008"))
	}
	last := sink.calls[len(sink.calls)-1]
	ops := make(map[string]OpType)
	for _, d := range last {
		ops[d.SerialNumber] = d.OpType
	}
	if ops["SYNCNEW"] != OpAdded || ops["SYNC0007"] != OpModified || ops["SYNC0008"] != OpDeleted {
		t.Errorf("op types %v", ops)
	}

	// A device changed twice reaches the sink once, as it is now.
	fake.ModifyDevice("SYNC0009", func(d *appletest.ADEDevice) { d.AssetTag = "first" })
	fake.ModifyDevice("SYNC0009", func(d *appletest.ADEDevice) { d.AssetTag = "second" })
	if _, err := s.Sync(ctx, tokenID, c); err != nil {
		t.Fatal(err)
	}
	last = sink.calls[len(sink.calls)-1]
	if len(last) != 1 || last[0].AssetTag != "second" {
		t.Errorf("last call %+v", last)
	}
}

func TestSyncerExpiredCursor(t *testing.T) {
	fake := appletest.NewADE(t)
	fake.AddDevices(devices(30, "EXP")...)
	c, _ := newFakeClient(t, fake)
	cursors, sink := &memCursors{}, &memSink{}
	s := NewSyncer(cursors, sink)
	ctx := t.Context()
	if _, err := s.Sync(ctx, tokenID, c); err != nil {
		t.Fatal(err)
	}
	old, _ := cursors.Cursor(ctx, tokenID)

	fake.ExpireCursors()
	before := len(fake.Requests())
	res, err := s.Sync(ctx, tokenID, c)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Refetched || res.Fetched != 30 {
		t.Errorf("result %+v", res)
	}
	want := []string{"POST /server/devices 400", "POST /devices/sync 400", "POST /server/devices 200", "POST /devices/sync 200"}
	if got := paths(fake.Requests()[before:]); !slices.Equal(got, want) {
		t.Errorf("requests %v, want %v", got, want)
	}
	if now, _ := cursors.Cursor(ctx, tokenID); now == old || now == "" {
		t.Errorf("cursor %q not replaced", now)
	}
}

func TestSyncerInvalidCursor(t *testing.T) {
	fake := appletest.NewADE(t)
	fake.AddDevices(devices(3, "INV")...)
	c, _ := newFakeClient(t, fake)
	cursors := &memCursors{cursors: map[string]string{tokenID: "bm90IGEgY3Vyc29y"}}
	res, err := NewSyncer(cursors, &memSink{}).Sync(t.Context(), tokenID, c)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Refetched || res.Fetched != 3 {
		t.Errorf("result %+v", res)
	}
}

func TestSyncerEchoedCursor(t *testing.T) {
	fake := appletest.NewADE(t)
	fake.AddDevices(devices(3, "ECHO")...)
	c, _ := newFakeClient(t, fake)
	cursors := &memCursors{}
	s := NewSyncer(cursors, &memSink{})
	if _, err := s.Sync(t.Context(), tokenID, c); err != nil {
		t.Fatal(err)
	}
	fake.EchoCursor(100)
	before := len(fake.Requests())
	res, err := s.Sync(t.Context(), tokenID, c)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stalled {
		t.Errorf("result %+v", res)
	}
	// Exhausted fetch, then two syncs answered with the same cursor.
	if n := len(fake.Requests()) - before; n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
}

func TestSyncerTermsNotSigned(t *testing.T) {
	fake := appletest.NewADE(t)
	c, _ := newFakeClient(t, fake)
	fake.RequireTerms(true)
	_, err := NewSyncer(&memCursors{}, &memSink{}).Sync(t.Context(), tokenID, c)
	if !errors.Is(err, ErrTermsNotSigned) {
		t.Fatalf("got %v, want ErrTermsNotSigned", err)
	}
}

func TestSyncerThrottled(t *testing.T) {
	fake := appletest.NewADE(t)
	fake.AddDevices(devices(5, "THR")...)
	c, s := newFakeClient(t, fake)
	fake.ThrottleNext("/server/devices", 1, 5*time.Second)
	res, err := NewSyncer(&memCursors{}, &memSink{}).Sync(t.Context(), tokenID, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fetched != 5 || !slices.Equal(s.get(), []time.Duration{5 * time.Second}) {
		t.Errorf("result %+v, waits %v", res, s.get())
	}
}

// scripted is a DeviceSource that answers from a script.
type scripted struct {
	answers []scriptedAnswer
	calls   []string
}

type scriptedAnswer struct {
	page *DevicePage
	err  error
}

func (s *scripted) next(kind, cursor string) (*DevicePage, error) {
	s.calls = append(s.calls, kind+" "+cursor)
	if len(s.answers) == 0 {
		return nil, errors.New("script ended")
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	return a.page, a.err
}

func (s *scripted) FetchDevices(_ context.Context, cursor string, _ int) (*DevicePage, error) {
	return s.next("fetch", cursor)
}

func (s *scripted) SyncDevices(_ context.Context, cursor string, _ int) (*DevicePage, error) {
	return s.next("sync", cursor)
}

func page(cursor string, more bool, serials ...string) scriptedAnswer {
	p := &DevicePage{Cursor: cursor, MoreToFollow: more}
	for _, s := range serials {
		p.Devices = append(p.Devices, Device{SerialNumber: s})
	}
	return scriptedAnswer{page: p}
}

func fail(code string) scriptedAnswer {
	return scriptedAnswer{err: &Error{Endpoint: "POST /x", Status: http.StatusBadRequest, Code: code}}
}

func TestSyncerScripted(t *testing.T) {
	tests := []struct {
		name      string
		start     string
		answers   []scriptedAnswer
		sinkErr   error
		wantCalls []string
		wantErr   error
		anyErr    bool
		cursor    string
		stalled   bool
	}{
		{
			name:      "fetch then sync",
			answers:   []scriptedAnswer{page("c1", true, "A"), page("c2", false, "B"), page("c3", false)},
			wantCalls: []string{"fetch ", "fetch c1", "sync c2"},
			cursor:    "c3",
		},
		{
			name:      "exhausted goes to sync",
			start:     "c9",
			answers:   []scriptedAnswer{fail("EXHAUSTED_CURSOR"), page("c10", true), page("c11", false)},
			wantCalls: []string{"fetch c9", "sync c9", "sync c10"},
			cursor:    "c11",
		},
		{
			name:      "refetch once only",
			start:     "c9",
			answers:   []scriptedAnswer{fail("EXHAUSTED_CURSOR"), fail("INVALID_CURSOR"), fail("INVALID_CURSOR")},
			wantCalls: []string{"fetch c9", "sync c9", "fetch "},
			wantErr:   ErrInvalidCursor,
			cursor:    "c9",
		},
		{
			name:      "one echo is tolerated",
			answers:   []scriptedAnswer{page("c1", true), page("c1", true), page("c2", false), page("c3", false)},
			wantCalls: []string{"fetch ", "fetch c1", "fetch c1", "sync c2"},
			cursor:    "c3",
		},
		{
			name:      "echo twice stops",
			start:     "c5",
			answers:   []scriptedAnswer{fail("EXHAUSTED_CURSOR"), page("c5", true), page("c5", true)},
			wantCalls: []string{"fetch c5", "sync c5", "sync c5"},
			cursor:    "c5",
			stalled:   true,
		},
		{
			name:      "same cursor, nothing more: done",
			start:     "c5",
			answers:   []scriptedAnswer{fail("EXHAUSTED_CURSOR"), page("c5", false)},
			wantCalls: []string{"fetch c5", "sync c5"},
			cursor:    "c5",
		},
		{
			name:      "no cursor in the answer",
			answers:   []scriptedAnswer{page("", false, "A")},
			wantCalls: []string{"fetch "},
			anyErr:    true,
		},
		{
			name:      "sink failure keeps the cursor",
			start:     "c1",
			answers:   []scriptedAnswer{page("c2", false, "A")},
			sinkErr:   errors.New("disk full"),
			wantCalls: []string{"fetch c1"},
			anyErr:    true,
			cursor:    "c1",
		},
		{
			name:      "other errors end the run",
			answers:   []scriptedAnswer{page("c1", true, "A"), {err: &Error{Status: 503}}},
			wantCalls: []string{"fetch ", "fetch c1"},
			wantErr:   ErrUnavailable,
			cursor:    "c1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &scripted{answers: tt.answers}
			cursors := &memCursors{cursors: map[string]string{tokenID: tt.start}}
			res, err := NewSyncer(cursors, &memSink{fail: tt.sinkErr}).Sync(t.Context(), tokenID, src)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("got %v, want %v", err, tt.wantErr)
				}
			case tt.anyErr:
				if err == nil {
					t.Error("no error")
				}
			case err != nil:
				t.Errorf("error %v", err)
			}
			if !slices.Equal(src.calls, tt.wantCalls) {
				t.Errorf("calls %q, want %q", src.calls, tt.wantCalls)
			}
			if c, _ := cursors.Cursor(t.Context(), tokenID); tt.cursor != "" && c != tt.cursor {
				t.Errorf("cursor %q, want %q", c, tt.cursor)
			}
			if res.Stalled != tt.stalled {
				t.Errorf("stalled %v", res.Stalled)
			}
		})
	}

	t.Run("page bound", func(t *testing.T) {
		var answers []scriptedAnswer
		for i := range 10 {
			answers = append(answers, page(fmt.Sprint("c", i), true))
		}
		_, err := NewSyncer(&memCursors{}, &memSink{}, WithMaxPages(5)).Sync(t.Context(), tokenID, &scripted{answers: answers})
		if err == nil {
			t.Error("no error past the page bound")
		}
	})
}

func TestLatestPerSerial(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := []Device{
		{SerialNumber: "A", OpType: OpAdded, OpDate: t0},
		{SerialNumber: "B", OpType: OpAdded, OpDate: t0},
		{SerialNumber: "A", OpType: OpDeleted, OpDate: t0.Add(time.Minute)},
		{SerialNumber: "B", OpType: OpModified, OpDate: t0.Add(-time.Minute)}, // older: ignored
		{SerialNumber: "A", OpType: OpAdded, OpDate: t0.Add(time.Minute)},     // a tie: the later one
	}
	got := latestPerSerial(in)
	if len(got) != 2 || got[0].SerialNumber != "A" || got[0].OpType != OpAdded || got[1].OpType != OpAdded {
		t.Errorf("got %+v", got)
	}
}
