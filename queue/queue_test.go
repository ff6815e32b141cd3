package queue_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/storage"
)

const (
	// The real capture nanomdm-DeviceInformation.1 answers this command
	// for this device.
	deviceInformationCapture = "nanomdm-DeviceInformation.1.imac-macos10.12.6.plist"
	deviceInformationUUID    = "76eda240-5488-4989-8339-f2ae160113c4"
	macUDID                  = "66ADE930-5FDF-5EC4-8429-15640684C489"
	macUser                  = "A1B2C3D4-0000-4000-8000-00000000BEEF"
	macUserChannel           = macUDID + ":" + macUser
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type harness struct {
	svc      *queue.Service
	store    *fakeStore
	info     *fakeDeviceInfo
	binder   *fakeBinder
	id       *identity.Identity
	logs     *bytes.Buffer
	observed []string
	pushed   [][]string
}

func newHarness(enrollmentIDs ...string) *harness {
	sum := sha256.Sum256([]byte("device identity certificate"))
	h := &harness{
		store:  newFakeStore(enrollmentIDs...),
		info:   newFakeDeviceInfo(macUDID),
		binder: &fakeBinder{},
		id:     &identity.Identity{Hash: sum[:]},
		logs:   new(bytes.Buffer),
	}
	h.svc = queue.New(h.store, h.info, h.binder,
		queue.WithClock(func() time.Time { return testNow }),
		queue.WithLogger(slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		queue.WithObserver(func(status string) { h.observed = append(h.observed, status) }),
		queue.WithEnqueueHook(func(_ context.Context, ids []string) { h.pushed = append(h.pushed, ids) }))
	return h
}

func command(t *testing.T, uuid, requestType string) *mdm.Command {
	t.Helper()
	cmd, err := mdm.NewCommand(uuid, requestType, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

func (h *harness) enqueue(t *testing.T, cmd *mdm.Command, opts queue.EnqueueOptions, ids ...string) {
	t.Helper()
	if err := h.svc.Enqueue(context.Background(), cmd, ids, opts); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) connect(body []byte, withIdentity bool) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPut, "/mdm/connect", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/x-apple-aspen-mdm; charset=UTF-8")
	if withIdentity {
		r = r.WithContext(identity.NewContext(r.Context(), h.id))
	}
	rec := httptest.NewRecorder()
	h.svc.Handler().ServeHTTP(rec, r)
	return rec
}

func dict(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := plist.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// result is a connect body from the Mac's device channel.
func result(t *testing.T, status, uuid string) []byte {
	t.Helper()
	m := map[string]any{"UDID": macUDID, "Status": status}
	if uuid != "" {
		m["CommandUUID"] = uuid
	}
	return dict(t, m)
}

// deviceInformation is the real DeviceInformation capture, with changes.
func deviceInformation(t *testing.T, change func(m map[string]any)) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "mdm", "testdata", deviceInformationCapture))
	if err != nil {
		t.Fatal(err)
	}
	if change == nil {
		return raw
	}
	var m map[string]any
	if err := plist.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	change(m)
	return dict(t, m)
}

func TestEnqueue(t *testing.T) {
	tests := []struct {
		name      string
		requests  string // RequestType
		ids       []string
		opts      queue.EnqueueOptions
		storeErr  error
		wantErr   error // errors.Is; nil for success
		wantIDs   []string
		wantPush  bool
		wantPrio  int
		wantUntil time.Time // ExpiresAt
	}{
		{
			name: "IDs are deduplicated and sorted", requests: "ProfileList",
			ids:     []string{"C", "A", "C", "B", "A"},
			wantIDs: []string{"A", "B", "C"}, wantPush: true,
		},
		{
			name: "priority and TTL are passed on", requests: "ProfileList", ids: []string{"A"},
			opts:    queue.EnqueueOptions{Priority: 7, TTL: 90 * time.Minute},
			wantIDs: []string{"A"}, wantPush: true, wantPrio: 7, wantUntil: testNow.Add(90 * time.Minute),
		},
		{
			name: "negative priority is kept", requests: "ProfileList", ids: []string{"A"},
			opts:    queue.EnqueueOptions{Priority: -3},
			wantIDs: []string{"A"}, wantPush: true, wantPrio: -3,
		},
		{
			name: "no push", requests: "ProfileList", ids: []string{"B", "A"},
			opts:    queue.EnqueueOptions{NoPush: true},
			wantIDs: []string{"A", "B"},
		},
		{
			name: "a user-channel command to a user channel", requests: "ProfileList",
			ids:     []string{"A:alice", "A"},
			wantIDs: []string{"A", "A:alice"}, wantPush: true,
		},
		{
			name: "a device-channel command to a user channel", requests: "DeviceLock",
			ids: []string{"A", "A:alice"}, wantErr: queue.ErrUserChannel,
		},
		{
			name: "EraseDevice to a user channel alone", requests: "EraseDevice",
			ids: []string{"B:bob"}, wantErr: queue.ErrUserChannel,
		},
		{
			name: "an unknown enrollment", requests: "ProfileList",
			ids: []string{"A", "nobody"}, wantErr: storage.ErrNotFound,
		},
		{
			name: "a taken CommandUUID", requests: "ProfileList",
			ids: []string{"A"}, storeErr: storage.ErrConflict, wantErr: storage.ErrConflict,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness("A", "B", "C", "A:alice", "B:bob")
			h.store.err = tt.storeErr
			cmd := command(t, "", tt.requests)
			err := h.svc.Enqueue(context.Background(), cmd, tt.ids, tt.opts)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if calls := h.store.enqueueCalls(); len(calls) != 0 {
					t.Fatalf("queued %v", calls)
				}
				if len(h.pushed) != 0 {
					t.Fatalf("push hook called for a failed enqueue: %v", h.pushed)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			calls := h.store.enqueueCalls()
			if len(calls) != 1 {
				t.Fatalf("store.Enqueue called %d times", len(calls))
			}
			got := calls[0]
			if !slices.Equal(got.ids, tt.wantIDs) {
				t.Fatalf("enqueued for %q, want %q", got.ids, tt.wantIDs)
			}
			want := storage.NewCommand{
				UUID: cmd.CommandUUID, RequestType: tt.requests, Raw: cmd.Raw,
				Priority: tt.wantPrio, ExpiresAt: tt.wantUntil, CreatedAt: testNow,
			}
			if got.cmd.UUID != want.UUID || got.cmd.RequestType != want.RequestType || !bytes.Equal(got.cmd.Raw, want.Raw) ||
				got.cmd.Priority != want.Priority || !got.cmd.ExpiresAt.Equal(want.ExpiresAt) || !got.cmd.CreatedAt.Equal(want.CreatedAt) {
				t.Fatalf("stored %+v, want %+v", got.cmd, want)
			}
			var wantPushed [][]string
			if tt.wantPush {
				wantPushed = [][]string{tt.wantIDs}
			}
			if !slices.EqualFunc(h.pushed, wantPushed, slices.Equal) {
				t.Fatalf("push hook got %q, want %q", h.pushed, wantPushed)
			}
		})
	}
}

func TestEnqueueNoIDs(t *testing.T) {
	h := newHarness("A")
	if err := h.svc.Enqueue(context.Background(), command(t, "", "ProfileList"), nil, queue.EnqueueOptions{}); err == nil {
		t.Fatal("queued for nobody")
	}
	if len(h.store.enqueueCalls()) != 0 || len(h.pushed) != 0 {
		t.Fatal("an empty enqueue reached the store or the push hook")
	}
}

// TestEnqueueDoesNotReorderCallersSlice: the caller's slice is theirs.
func TestEnqueueDoesNotReorderCallersSlice(t *testing.T) {
	h := newHarness("A", "B")
	ids := []string{"B", "A", "B"}
	h.enqueue(t, command(t, "", "ProfileList"), queue.EnqueueOptions{}, ids...)
	if !slices.Equal(ids, []string{"B", "A", "B"}) {
		t.Fatalf("caller's IDs became %q", ids)
	}
}

func TestConnect(t *testing.T) {
	var (
		first  = command(t, "FIRST-0000", "ProfileList")
		second = command(t, "SECOND-0000", "SecurityInfo")
		urgent = command(t, "URGENT-0000", "CertificateList")
	)
	queueBoth := func(t *testing.T, h *harness) {
		h.enqueue(t, first, queue.EnqueueOptions{}, macUDID)
		h.enqueue(t, second, queue.EnqueueOptions{}, macUDID)
	}
	refused := &handler.Error{Status: http.StatusForbidden, Message: "certificate is not bound to this device"}

	tests := []struct {
		name         string
		setup        func(t *testing.T, h *harness)
		body         func(t *testing.T) []byte
		noIdentity   bool
		wantStatus   int
		wantCommand  **mdm.Command // nil: a zero-byte answer
		wantObserved []string
		wantSkip     []bool // skipNotNow of each NextCommand call
		enrollment   string // whose queue NextCommand reads; the Mac's device channel when ""
		check        func(t *testing.T, h *harness)
	}{
		{
			name:       "Idle with nothing queued is a zero-byte 200",
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusIdle, "") },
			wantStatus: http.StatusOK, wantObserved: []string{"Idle"}, wantSkip: []bool{false},
		},
		{
			name:       "Idle gets the next command",
			setup:      queueBoth,
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusIdle, "") },
			wantStatus: http.StatusOK, wantCommand: &first,
			wantObserved: []string{"Idle"}, wantSkip: []bool{false},
			check: func(t *testing.T, h *harness) {
				if tg, _ := h.store.target(macUDID, first.CommandUUID); !tg.deliveredAt.Equal(testNow) || tg.status != "" {
					t.Fatalf("delivered command = %+v", tg)
				}
				if h.store.resultCalls() != 0 {
					t.Fatal("an Idle stored a result")
				}
			},
		},
		{
			name: "a higher priority goes first",
			setup: func(t *testing.T, h *harness) {
				queueBoth(t, h)
				h.enqueue(t, urgent, queue.EnqueueOptions{Priority: 5}, macUDID)
			},
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusIdle, "") },
			wantStatus: http.StatusOK, wantCommand: &urgent,
			wantObserved: []string{"Idle"}, wantSkip: []bool{false},
		},
		{
			name:       "Acknowledged is stored, then the next command",
			setup:      queueBoth,
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusAcknowledged, first.CommandUUID) },
			wantStatus: http.StatusOK, wantCommand: &second,
			wantObserved: []string{"Acknowledged"}, wantSkip: []bool{false},
			check: func(t *testing.T, h *harness) {
				tg, _ := h.store.target(macUDID, first.CommandUUID)
				if tg.status != mdm.StatusAcknowledged || !tg.updatedAt.Equal(testNow) ||
					!bytes.Equal(tg.result, result(t, mdm.StatusAcknowledged, first.CommandUUID)) {
					t.Fatalf("stored result = %+v", tg)
				}
			},
		},
		{
			name:  "Error is stored with its chain, then nothing",
			setup: func(t *testing.T, h *harness) { h.enqueue(t, first, queue.EnqueueOptions{}, macUDID) },
			body: func(t *testing.T) []byte {
				return dict(t, map[string]any{
					"UDID": macUDID, "CommandUUID": first.CommandUUID, "Status": "Error",
					"ErrorChain": []any{map[string]any{"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain"}},
				})
			},
			wantStatus: http.StatusOK, wantObserved: []string{"Error"}, wantSkip: []bool{false},
			check: func(t *testing.T, h *harness) {
				tg, _ := h.store.target(macUDID, first.CommandUUID)
				if tg.status != mdm.StatusError || !bytes.Contains(tg.result, []byte("MCMDMErrorDomain")) {
					t.Fatalf("stored result = %+v", tg)
				}
			},
		},
		{
			name:       "NotNow asks for the next command skipping NotNow'd ones",
			setup:      queueBoth,
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusNotNow, first.CommandUUID) },
			wantStatus: http.StatusOK, wantCommand: &second,
			wantObserved: []string{"NotNow"}, wantSkip: []bool{true},
			check: func(t *testing.T, h *harness) {
				if tg, _ := h.store.target(macUDID, first.CommandUUID); tg.status != mdm.StatusNotNow {
					t.Fatalf("NotNow not stored: %+v", tg)
				}
			},
		},
		{
			name:       "NotNow on the only command answers nothing",
			setup:      func(t *testing.T, h *harness) { h.enqueue(t, first, queue.EnqueueOptions{}, macUDID) },
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusNotNow, first.CommandUUID) },
			wantStatus: http.StatusOK, wantObserved: []string{"NotNow"}, wantSkip: []bool{true},
		},
		{
			name: "Idle after a NotNow gets the command again",
			setup: func(t *testing.T, h *harness) {
				h.enqueue(t, first, queue.EnqueueOptions{}, macUDID)
				if rec := h.connect(result(t, mdm.StatusNotNow, first.CommandUUID), true); rec.Code != http.StatusOK || rec.Body.Len() != 0 {
					t.Fatalf("NotNow: %d %q", rec.Code, rec.Body)
				}
			},
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusIdle, "") },
			wantStatus: http.StatusOK, wantCommand: &first,
			wantObserved: []string{"NotNow", "Idle"}, wantSkip: []bool{true, false},
		},
		{
			name:       "a result for an unknown command still gets the next command",
			setup:      queueBoth,
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusAcknowledged, "NEVER-QUEUED") },
			wantStatus: http.StatusOK, wantCommand: &first,
			wantObserved: []string{"Acknowledged"}, wantSkip: []bool{false},
			check: func(t *testing.T, h *harness) {
				logs := h.logs.String()
				if !strings.Contains(logs, "result for unknown command") || !strings.Contains(logs, "command_uuid=NEVER-QUEUED") {
					t.Fatalf("no log line for the unknown command:\n%s", logs)
				}
			},
		},
		{
			name: "a result for another enrollment's command is unknown here",
			setup: func(t *testing.T, h *harness) {
				h.enqueue(t, first, queue.EnqueueOptions{}, macUserChannel)
			},
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusAcknowledged, first.CommandUUID) },
			wantStatus: http.StatusOK, wantObserved: []string{"Acknowledged"}, wantSkip: []bool{false},
			check: func(t *testing.T, h *harness) {
				if tg, _ := h.store.target(macUserChannel, first.CommandUUID); tg.status != "" {
					t.Fatalf("the user channel's command changed: %+v", tg)
				}
			},
		},

		// DeviceInformation results update the device.
		{
			name: "DeviceInformation Acknowledged updates the device",
			setup: func(t *testing.T, h *harness) {
				h.enqueue(t, command(t, deviceInformationUUID, "DeviceInformation"), queue.EnqueueOptions{}, macUDID)
			},
			body:       func(t *testing.T) []byte { return deviceInformation(t, nil) },
			wantStatus: http.StatusOK, wantObserved: []string{"Acknowledged"}, wantSkip: []bool{false},
			check: func(t *testing.T, h *harness) {
				d, calls := h.info.device(macUDID)
				if calls != 1 || d.HostName != "fruit.example.com" || !d.UpdatedAt.Equal(testNow) {
					t.Fatalf("device after DeviceInformation (%d updates) = %+v", calls, d)
				}
				if d.DeviceName != "before" {
					t.Fatalf("a field the result did not carry was overwritten: %+v", d)
				}
			},
		},
		{
			name: "DeviceInformation on a user channel leaves the device alone",
			setup: func(t *testing.T, h *harness) {
				h.enqueue(t, command(t, deviceInformationUUID, "DeviceInformation"), queue.EnqueueOptions{}, macUserChannel)
			},
			body: func(t *testing.T) []byte {
				return deviceInformation(t, func(m map[string]any) { m["UserID"] = macUser })
			},
			enrollment: macUserChannel,
			wantStatus: http.StatusOK, wantObserved: []string{"Acknowledged"}, wantSkip: []bool{false},
			check: func(t *testing.T, h *harness) {
				if tg, _ := h.store.target(macUserChannel, deviceInformationUUID); tg.status != mdm.StatusAcknowledged {
					t.Fatalf("user channel result not stored: %+v", tg)
				}
				if d, calls := h.info.device(macUDID); calls != 0 || d.HostName != "before.example.com" {
					t.Fatalf("a user channel's answer changed the device (%d updates): %+v", calls, d)
				}
			},
		},
		{
			name: "another command's QueryResponses leave the device alone",
			setup: func(t *testing.T, h *harness) {
				// The capture echoes RequestType DeviceInformation; what
				// counts is what was queued under the UUID.
				h.enqueue(t, command(t, deviceInformationUUID, "SecurityInfo"), queue.EnqueueOptions{}, macUDID)
			},
			body:       func(t *testing.T) []byte { return deviceInformation(t, nil) },
			wantStatus: http.StatusOK, wantObserved: []string{"Acknowledged"}, wantSkip: []bool{false},
			check: func(t *testing.T, h *harness) {
				if _, calls := h.info.device(macUDID); calls != 0 {
					t.Fatal("a SecurityInfo result updated device information")
				}
			},
		},
		{
			name: "DeviceInformation Error leaves the device alone",
			setup: func(t *testing.T, h *harness) {
				h.enqueue(t, command(t, deviceInformationUUID, "DeviceInformation"), queue.EnqueueOptions{}, macUDID)
			},
			body: func(t *testing.T) []byte {
				return deviceInformation(t, func(m map[string]any) { m["Status"] = "Error" })
			},
			wantStatus: http.StatusOK, wantObserved: []string{"Error"}, wantSkip: []bool{false},
			check: func(t *testing.T, h *harness) {
				if _, calls := h.info.device(macUDID); calls != 0 {
					t.Fatal("an Error result updated device information")
				}
			},
		},
		{
			name: "DeviceInformation for a device the info store lacks is still 200",
			setup: func(t *testing.T, h *harness) {
				h.info = newFakeDeviceInfo() // knows no device
				h.svc = queue.New(h.store, h.info, h.binder, queue.WithClock(func() time.Time { return testNow }),
					queue.WithLogger(slog.New(slog.NewTextHandler(h.logs, nil))),
					queue.WithObserver(func(status string) { h.observed = append(h.observed, status) }))
				h.enqueue(t, command(t, deviceInformationUUID, "DeviceInformation"), queue.EnqueueOptions{}, macUDID)
			},
			body:       func(t *testing.T) []byte { return deviceInformation(t, nil) },
			wantStatus: http.StatusOK, wantObserved: []string{"Acknowledged"}, wantSkip: []bool{false},
			check: func(t *testing.T, h *harness) {
				if _, calls := h.info.device(macUDID); calls != 1 || !strings.Contains(h.logs.String(), "updating device information") {
					t.Fatalf("%d updates; logs:\n%s", calls, h.logs)
				}
			},
		},

		// Refused and broken requests.
		{
			name:       "refused by the binder",
			setup:      func(t *testing.T, h *harness) { queueBoth(t, h); h.binder.err = refused },
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusAcknowledged, first.CommandUUID) },
			wantStatus: http.StatusForbidden,
		},
		{
			name: "refused by the binder with another status",
			setup: func(t *testing.T, h *harness) {
				queueBoth(t, h)
				h.binder.err = handler.Errorf(http.StatusGone, "gone")
			},
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusAcknowledged, first.CommandUUID) },
			wantStatus: http.StatusGone,
		},
		{
			name:       "the binder failing is 500",
			setup:      func(t *testing.T, h *harness) { queueBoth(t, h); h.binder.err = errors.New("database is down") },
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusIdle, "") },
			wantStatus: http.StatusInternalServerError,
		},
		{
			name:         "the store failing is 500",
			setup:        func(t *testing.T, h *harness) { queueBoth(t, h); h.store.err = errors.New("disk full") },
			body:         func(t *testing.T) []byte { return result(t, mdm.StatusAcknowledged, first.CommandUUID) },
			wantStatus:   http.StatusInternalServerError,
			wantObserved: []string{"Acknowledged"},
		},
		{
			name: "not a plist", body: func(*testing.T) []byte { return []byte("Status=Idle") },
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "empty body", body: func(*testing.T) []byte { return nil },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "no Status",
			body:       func(t *testing.T) []byte { return dict(t, map[string]any{"UDID": macUDID, "CommandUUID": "X"}) },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "unknown Status",
			setup:      queueBoth,
			body:       func(t *testing.T) []byte { return result(t, "Done", first.CommandUUID) },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "Acknowledged without CommandUUID",
			setup:      queueBoth,
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusAcknowledged, "") },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "no UDID",
			body:       func(t *testing.T) []byte { return dict(t, map[string]any{"Status": "Idle"}) },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "no identity in the context",
			setup:      queueBoth,
			body:       func(t *testing.T) []byte { return result(t, mdm.StatusIdle, "") },
			noIdentity: true, wantStatus: http.StatusBadRequest,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(macUDID, macUserChannel)
			if tt.setup != nil {
				tt.setup(t, h)
			}
			nextBefore := len(h.store.nextCalls())
			resultsBefore := h.store.resultCalls()
			rec := h.connect(tt.body(t), !tt.noIdentity)
			if rec.Code == http.StatusUnauthorized {
				t.Fatal("answered 401, which unenrolls the device")
			}
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tt.wantStatus, rec.Body)
			}
			if !slices.Equal(h.observed, tt.wantObserved) {
				t.Fatalf("observer saw %q, want %q", h.observed, tt.wantObserved)
			}
			enrollment := tt.enrollment
			if enrollment == "" {
				enrollment = macUDID
			}
			var skips []bool
			for _, c := range h.store.nextCalls() {
				if c.enrollmentID != enrollment || !c.now.Equal(testNow) {
					t.Fatalf("NextCommand(%q, now %v)", c.enrollmentID, c.now)
				}
				skips = append(skips, c.skipNotNow)
			}
			if !slices.Equal(skips, tt.wantSkip) {
				t.Fatalf("NextCommand skipNotNow = %v, want %v", skips, tt.wantSkip)
			}
			if tt.wantStatus != http.StatusOK {
				if ct := rec.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
					t.Fatalf("error answered as %q: %q", ct, rec.Body)
				}
				if tt.wantStatus != http.StatusInternalServerError && h.store.resultCalls() != resultsBefore {
					t.Fatal("a refused request reached StoreResult")
				}
				if tt.wantObserved == nil && len(h.store.nextCalls()) != nextBefore {
					t.Fatal("a refused request was sent a command")
				}
			} else {
				switch {
				case tt.wantCommand == nil && rec.Body.Len() != 0:
					t.Fatalf("nothing to send answered %q, want a zero-byte body", rec.Body)
				case tt.wantCommand == nil && rec.Header().Get("Content-Type") == "application/xml":
					t.Fatal("a zero-byte answer claims to be XML")
				case tt.wantCommand != nil && !bytes.Equal(rec.Body.Bytes(), (*tt.wantCommand).Raw):
					t.Fatalf("answered %q, want the raw command %s", rec.Body, (*tt.wantCommand).CommandUUID)
				case tt.wantCommand != nil && rec.Header().Get("Content-Type") != "application/xml":
					t.Fatalf("command sent as %q", rec.Header().Get("Content-Type"))
				}
			}
			for i, d := range h.binder.devices() {
				if d != macUDID || h.binder.ids[i] != h.id {
					t.Fatalf("binder asked about %q with identity %p, want the device %q with the request's", d, h.binder.ids[i], macUDID)
				}
			}
			if tt.check != nil {
				tt.check(t, h)
			}
		})
	}
}

// TestConnectUserChannel: a user channel's connect is answered from the
// user channel's queue and judged by the device's identity.
func TestConnectUserChannel(t *testing.T) {
	h := newHarness(macUDID, macUserChannel)
	deviceCmd := command(t, "DEVICE-0000", "ProfileList")
	userCmd := command(t, "USER-0000", "ProfileList")
	h.enqueue(t, deviceCmd, queue.EnqueueOptions{}, macUDID)
	h.enqueue(t, userCmd, queue.EnqueueOptions{}, macUserChannel)
	rec := h.connect(dict(t, map[string]any{"UDID": macUDID, "UserID": macUser, "Status": "Idle"}), true)
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), userCmd.Raw) {
		t.Fatalf("user channel got %d %q", rec.Code, rec.Body)
	}
	if got := h.store.nextCalls(); len(got) != 1 || got[0].enrollmentID != macUserChannel {
		t.Fatalf("NextCommand calls = %+v", got)
	}
	if got := h.binder.devices(); !slices.Equal(got, []string{macUDID}) {
		t.Fatalf("binder asked about %q", got)
	}
}
