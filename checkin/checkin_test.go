package checkin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/checkin"
	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

// Real device captures, shared with the mdm package.
const (
	authenticateIPad = "nanomdm-Authenticate.1.ipad-ios9.3.5.plist"
	tokenUpdateIPad  = "nanomdm-TokenUpdate.1.ipad-ios9.3.5.plist" // carries an UnlockToken
	tokenUpdateMac   = "nanomdm-TokenUpdate.2.imac-macos10.12.6.plist"

	ipadUDID = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"
	macUDID  = "66ADE930-5FDF-5EC4-8429-15640684C489"
	macUser  = "A1B2C3D4-0000-4000-8000-00000000BEEF"
	topic    = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func capture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "mdm", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// captured decodes the keys of a capture a test compares against.
func captured(t *testing.T, name string) (c struct {
	Token       []byte
	PushMagic   string
	UnlockToken []byte
	Topic       string
}) {
	t.Helper()
	if err := plist.Unmarshal(capture(t, name), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func dict(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := plist.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type observation struct {
	messageType string
	status      int
}

// harness is a check-in Service over fakes, with what its observer and
// event hook saw.
type harness struct {
	svc      *checkin.Service
	store    *fakeStorage
	sealer   *fakeSealer
	binder   *fakeBinder
	id       *identity.Identity
	observed []observation
	events   []mdm.CheckinMessage
}

func newHarness(opts ...checkin.Option) *harness {
	sum := sha256.Sum256([]byte("device identity certificate"))
	h := &harness{
		store:  newFakeStorage(),
		sealer: &fakeSealer{},
		binder: &fakeBinder{},
		id:     &identity.Identity{Hash: sum[:]},
	}
	h.svc = checkin.New(h.store, h.store, h.sealer, h.binder, append([]checkin.Option{
		checkin.WithClock(func() time.Time { return testNow }),
		checkin.WithObserver(func(messageType string, status int) {
			h.observed = append(h.observed, observation{messageType, status})
		}),
		checkin.WithEvents(func(_ context.Context, msg mdm.CheckinMessage) {
			h.events = append(h.events, msg)
		})}, opts...)...)
	return h
}

func (h *harness) send(body []byte, withIdentity bool) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPut, "/mdm/checkin", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/x-apple-aspen-mdm-checkin")
	if withIdentity {
		r = r.WithContext(identity.NewContext(r.Context(), h.id))
	}
	rec := httptest.NewRecorder()
	h.svc.Handler().ServeHTTP(rec, r)
	return rec
}

// seal returns what the fake sealer makes of plain.
func seal(t *testing.T, plain []byte) []byte {
	t.Helper()
	s, err := (&fakeSealer{}).Seal(plain)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertSealed fails unless sealed is plain, sealed by the fake sealer.
func assertSealed(t *testing.T, what string, sealed, plain []byte) {
	t.Helper()
	if len(sealed) == 0 {
		t.Fatalf("%s: nothing stored", what)
	}
	if bytes.Equal(sealed, plain) || bytes.Contains(sealed, plain) {
		t.Fatalf("%s stored in the clear", what)
	}
	opened, err := (&fakeSealer{}).Open(sealed)
	if err != nil || !bytes.Equal(opened, plain) {
		t.Fatalf("%s: stored value does not open to the token: %v", what, err)
	}
}

func (h *harness) assertBinder(t *testing.T, want ...string) {
	t.Helper()
	calls := h.binder.recorded()
	var got []string
	for _, c := range calls {
		got = append(got, c.method+" "+c.deviceID)
		if c.id != h.id {
			t.Errorf("binder got identity %p, want the request's %p", c.id, h.id)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("binder calls = %q, want %q", got, want)
	}
}

var refused = &handler.Error{Status: http.StatusForbidden, Message: "certificate is not bound to this device"}

// TestCheckin sends every message type through the handler and checks the
// answer, what was stored, what the binder was asked, and that the
// observer and the event hook saw the right things.
func TestCheckin(t *testing.T) {
	bootstrapPlain := []byte("bootstrap-token-secret-bytes")
	withBootstrap := func(h *harness) {
		h.store.addDevice(macUDID, []byte("hash"))
		h.store.setBootstrap(macUDID, seal(t, bootstrapPlain))
	}
	assertBootstrap := func(t *testing.T, h *harness, want []byte) {
		t.Helper()
		d, _ := h.store.device(macUDID)
		if !bytes.Equal(d.bootstrap, want) {
			t.Fatalf("stored bootstrap token = %q, want %q", d.bootstrap, want)
		}
	}
	macDM := func(endpoint string) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			return dict(t, map[string]any{"MessageType": "DeclarativeManagement", "UDID": macUDID, "Endpoint": endpoint})
		}
	}
	file := func(name string) func(*testing.T) []byte {
		return func(t *testing.T) []byte { return capture(t, name) }
	}
	msg := func(m map[string]any) func(*testing.T) []byte {
		return func(t *testing.T) []byte { return dict(t, m) }
	}

	tests := []struct {
		name       string
		setup      func(h *harness)
		body       func(t *testing.T) []byte
		noIdentity bool
		wantStatus int
		wantType   string // what the observer is told; "" when undecodable
		check      func(t *testing.T, h *harness, rec *httptest.ResponseRecorder)
	}{
		// Authenticate
		{
			name: "Authenticate stores the device bound to the identity hash",
			body: file(authenticateIPad), wantStatus: http.StatusOK, wantType: "Authenticate",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) {
				h.assertBinder(t, "CheckAuthenticate "+ipadUDID)
				d, ok := h.store.device(ipadUDID)
				if !ok {
					t.Fatal("device not stored")
				}
				if !bytes.Equal(d.certHash, h.id.Hash) {
					t.Fatalf("device bound to %x, want the identity hash %x", d.certHash, h.id.Hash)
				}
				if d.topic != topic || d.serialNumber != "F5JM992LF193" || !d.authenticatedAt.Equal(testNow) {
					t.Fatalf("stored device = %+v", d)
				}
			},
		},
		{
			name: "Authenticate re-enrolls a known device with a new identity",
			setup: func(h *harness) {
				h.store.addDevice(ipadUDID, []byte("old certificate hash"))
				h.store.addEnrollment(ipadUDID)
			},
			body: file(authenticateIPad), wantStatus: http.StatusOK, wantType: "Authenticate",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) {
				h.assertBinder(t, "CheckAuthenticate "+ipadUDID)
				if d, _ := h.store.device(ipadUDID); !bytes.Equal(d.certHash, h.id.Hash) {
					t.Fatalf("device still bound to %q", d.certHash)
				}
				if e, _ := h.store.enrollment(ipadUDID); e.enabled {
					t.Fatal("channel still enabled before its TokenUpdate")
				}
			},
		},
		{
			name:  "Authenticate refused by the binder",
			setup: func(h *harness) { h.binder.authErr = refused },
			body:  file(authenticateIPad), wantStatus: http.StatusForbidden, wantType: "Authenticate",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) {
				h.assertBinder(t, "CheckAuthenticate "+ipadUDID)
				if _, ok := h.store.device(ipadUDID); ok {
					t.Fatal("a refused Authenticate was stored")
				}
			},
		},
		{
			name:  "Authenticate is not judged by Check",
			setup: func(h *harness) { h.binder.err = refused }, // Check would refuse
			body:  file(authenticateIPad), wantStatus: http.StatusOK, wantType: "Authenticate",
		},
		{
			name:  "Authenticate when the binder fails is 500",
			setup: func(h *harness) { h.binder.authErr = errors.New("database is down") },
			body:  file(authenticateIPad), wantStatus: http.StatusInternalServerError, wantType: "Authenticate",
			check: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder) {
				if bytes.Contains(rec.Body.Bytes(), []byte("database")) {
					t.Fatalf("internal error shown to the device: %q", rec.Body)
				}
			},
		},
		{
			name:  "Authenticate when the store fails is 500",
			setup: func(h *harness) { h.store.err = errors.New("disk full") },
			body:  file(authenticateIPad), wantStatus: http.StatusInternalServerError, wantType: "Authenticate",
		},

		// TokenUpdate
		{
			name:  "TokenUpdate seals the UnlockToken and stores",
			setup: func(h *harness) { h.store.addDevice(ipadUDID, []byte("hash")) },
			body:  file(tokenUpdateIPad), wantStatus: http.StatusOK, wantType: "TokenUpdate",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) {
				h.assertBinder(t, "Check "+ipadUDID)
				c := captured(t, tokenUpdateIPad)
				if len(c.UnlockToken) == 0 {
					t.Fatal("capture has no UnlockToken")
				}
				e, ok := h.store.enrollment(ipadUDID)
				if !ok || !e.enabled {
					t.Fatalf("enrollment not stored and enabled: %+v", e)
				}
				if !bytes.Equal(e.token, c.Token) || e.pushMagic != c.PushMagic || !e.updatedAt.Equal(testNow) {
					t.Fatalf("stored enrollment = %+v", e)
				}
				assertSealed(t, "UnlockToken", e.sealedUnlockToken, c.UnlockToken)
			},
		},
		{
			name:  "TokenUpdate without an UnlockToken stores no sealed token",
			setup: func(h *harness) { h.store.addDevice(macUDID, []byte("hash")) },
			body:  file(tokenUpdateMac), wantStatus: http.StatusOK, wantType: "TokenUpdate",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) {
				e, ok := h.store.enrollment(macUDID)
				if !ok || !e.enabled || !bytes.Equal(e.token, captured(t, tokenUpdateMac).Token) {
					t.Fatalf("enrollment = %+v", e)
				}
				if e.sealedUnlockToken != nil || h.sealer.sealed != 0 {
					t.Fatalf("sealed %d values, stored %q for no UnlockToken", h.sealer.sealed, e.sealedUnlockToken)
				}
			},
		},
		{
			name:  "TokenUpdate on a user channel stores that channel",
			setup: func(h *harness) { h.store.addDevice(macUDID, []byte("hash")) },
			body: msg(map[string]any{
				"MessageType": "TokenUpdate", "UDID": macUDID, "UserID": macUser, "UserShortName": "alice",
				"Topic": topic, "Token": []byte("user push token"), "PushMagic": "user-magic",
			}),
			wantStatus: http.StatusOK, wantType: "TokenUpdate",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) {
				h.assertBinder(t, "Check "+macUDID) // the device, not the user
				if e, ok := h.store.enrollment(macUDID + ":" + macUser); !ok || !e.enabled || e.pushMagic != "user-magic" {
					t.Fatalf("user channel = %+v, %v", e, ok)
				}
				if _, ok := h.store.enrollment(macUDID); ok {
					t.Fatal("user TokenUpdate stored on the device channel")
				}
			},
		},
		{
			name: "TokenUpdate of a user whose short name has another UserID is 403",
			setup: func(h *harness) {
				h.store.addDevice(macUDID, []byte("hash"))
				h.store.err = fmt.Errorf("user %q has another UserID: %w", "alice", storage.ErrConflict)
			},
			body: msg(map[string]any{
				"MessageType": "TokenUpdate", "UDID": macUDID, "UserID": macUser, "UserShortName": "alice",
				"Topic": topic, "Token": []byte("user push token"), "PushMagic": "user-magic",
			}),
			wantStatus: http.StatusForbidden, wantType: "TokenUpdate",
			check: func(t *testing.T, _ *harness, rec *httptest.ResponseRecorder) {
				if !strings.Contains(rec.Body.String(), "another UserID") {
					t.Fatalf("body = %q, want the reason", rec.Body.String())
				}
			},
		},
		{
			name: "TokenUpdate from an unknown device is 403",
			body: file(tokenUpdateIPad), wantStatus: http.StatusForbidden, wantType: "TokenUpdate",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) {
				if _, ok := h.store.enrollment(ipadUDID); ok {
					t.Fatal("enrollment stored for an unknown device")
				}
			},
		},
		{
			name:  "TokenUpdate refused by the binder",
			setup: func(h *harness) { h.store.addDevice(ipadUDID, []byte("hash")); h.binder.err = refused },
			body:  file(tokenUpdateIPad), wantStatus: http.StatusForbidden, wantType: "TokenUpdate",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) {
				h.assertBinder(t, "Check "+ipadUDID)
				if _, ok := h.store.enrollment(ipadUDID); ok || h.sealer.sealed != 0 {
					t.Fatalf("refused TokenUpdate stored (%v) or sealed (%d)", ok, h.sealer.sealed)
				}
			},
		},
		{
			name: "TokenUpdate refused with another status passes it through",
			setup: func(h *harness) {
				h.store.addDevice(ipadUDID, []byte("hash"))
				h.binder.err = handler.Errorf(http.StatusGone, "gone")
			},
			body: file(tokenUpdateIPad), wantStatus: http.StatusGone, wantType: "TokenUpdate",
		},
		{
			name:  "TokenUpdate when the store fails is 500",
			setup: func(h *harness) { h.store.addDevice(ipadUDID, []byte("hash")); h.store.err = errors.New("disk full") },
			body:  file(tokenUpdateIPad), wantStatus: http.StatusInternalServerError, wantType: "TokenUpdate",
		},

		// CheckOut
		{
			name: "CheckOut disables the device and its users",
			setup: func(h *harness) {
				h.store.addDevice(macUDID, []byte("hash"))
				h.store.addEnrollment(macUDID)
				h.store.addEnrollment(macUDID + ":" + macUser)
			},
			body:       msg(map[string]any{"MessageType": "CheckOut", "UDID": macUDID, "Topic": topic}),
			wantStatus: http.StatusOK, wantType: "CheckOut",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) {
				h.assertBinder(t, "Check "+macUDID)
				for _, id := range []string{macUDID, macUDID + ":" + macUser} {
					if e, _ := h.store.enrollment(id); e.enabled || !e.updatedAt.Equal(testNow) {
						t.Fatalf("%s after CheckOut = %+v", id, e)
					}
				}
			},
		},
		{
			name:       "CheckOut of an unknown enrollment is 403",
			body:       msg(map[string]any{"MessageType": "CheckOut", "UDID": macUDID, "Topic": topic}),
			wantStatus: http.StatusForbidden, wantType: "CheckOut",
		},

		// UserAuthenticate
		{
			name:  "UserAuthenticate is 410 without a user directory",
			setup: func(h *harness) { h.store.addDevice(macUDID, []byte("hash")) },
			body: msg(map[string]any{
				"MessageType": "UserAuthenticate", "UDID": macUDID, "UserID": macUser, "UserShortName": "bob",
			}),
			wantStatus: http.StatusGone, wantType: "UserAuthenticate",
		},

		// SetBootstrapToken
		{
			name:  "SetBootstrapToken escrows the token sealed",
			setup: func(h *harness) { h.store.addDevice(macUDID, []byte("hash")) },
			body: msg(map[string]any{
				"MessageType": "SetBootstrapToken", "UDID": macUDID, "BootstrapToken": bootstrapPlain, "AwaitingConfiguration": false,
			}),
			wantStatus: http.StatusOK, wantType: "SetBootstrapToken",
			check: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder) {
				h.assertBinder(t, "Check "+macUDID)
				d, _ := h.store.device(macUDID)
				assertSealed(t, "bootstrap token", d.bootstrap, bootstrapPlain)
				if rec.Body.Len() != 0 {
					t.Fatalf("SetBootstrapToken answered %q", rec.Body)
				}
			},
		},
		{
			name:  "SetBootstrapToken with an empty token deletes",
			setup: withBootstrap,
			body: msg(map[string]any{
				"MessageType": "SetBootstrapToken", "UDID": macUDID, "BootstrapToken": []byte{},
			}),
			wantStatus: http.StatusOK, wantType: "SetBootstrapToken",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) { assertBootstrap(t, h, nil) },
		},
		{
			name:       "SetBootstrapToken without a token deletes",
			setup:      withBootstrap,
			body:       msg(map[string]any{"MessageType": "SetBootstrapToken", "UDID": macUDID}),
			wantStatus: http.StatusOK, wantType: "SetBootstrapToken",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) { assertBootstrap(t, h, nil) },
		},
		{
			name:  "SetBootstrapToken on a user channel is 400",
			setup: withBootstrap,
			body: msg(map[string]any{
				"MessageType": "SetBootstrapToken", "UDID": macUDID, "UserID": macUser, "BootstrapToken": []byte("user's"),
			}),
			wantStatus: http.StatusBadRequest, wantType: "SetBootstrapToken",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) {
				assertBootstrap(t, h, seal(t, bootstrapPlain))
				if h.sealer.sealed != 0 {
					t.Fatal("sealed a token it refused")
				}
			},
		},
		{
			name: "SetBootstrapToken for an unknown device is 403",
			body: msg(map[string]any{
				"MessageType": "SetBootstrapToken", "UDID": macUDID, "BootstrapToken": bootstrapPlain,
			}),
			wantStatus: http.StatusForbidden, wantType: "SetBootstrapToken",
		},

		// GetBootstrapToken
		{
			name:       "GetBootstrapToken answers the opened token",
			setup:      withBootstrap,
			body:       msg(map[string]any{"MessageType": "GetBootstrapToken", "UDID": macUDID}),
			wantStatus: http.StatusOK, wantType: "GetBootstrapToken",
			check: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder) {
				h.assertBinder(t, "Check "+macUDID)
				if ct := rec.Header().Get("Content-Type"); ct != "application/xml" {
					t.Fatalf("Content-Type = %q", ct)
				}
				var got struct{ BootstrapToken []byte }
				if err := plist.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.BootstrapToken, bootstrapPlain) {
					t.Fatalf("BootstrapToken = %q, want %q", got.BootstrapToken, bootstrapPlain)
				}
			},
		},
		{
			name:       "GetBootstrapToken with none answers a dictionary without it",
			setup:      func(h *harness) { h.store.addDevice(macUDID, []byte("hash")) },
			body:       msg(map[string]any{"MessageType": "GetBootstrapToken", "UDID": macUDID}),
			wantStatus: http.StatusOK, wantType: "GetBootstrapToken",
			check: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder) {
				var got map[string]any
				if err := plist.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatalf("answer is not a plist dictionary: %v\n%s", err, rec.Body)
				}
				if _, ok := got["BootstrapToken"]; ok {
					t.Fatalf("answer has a BootstrapToken: %s", rec.Body)
				}
				if h.sealer.opened != 0 {
					t.Fatal("opened a token that is not there")
				}
			},
		},
		{
			name:  "GetBootstrapToken on a user channel is 400",
			setup: withBootstrap,
			body: msg(map[string]any{
				"MessageType": "GetBootstrapToken", "UDID": macUDID, "UserID": macUser,
			}),
			wantStatus: http.StatusBadRequest, wantType: "GetBootstrapToken",
			check: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder) {
				if bytes.Contains(rec.Body.Bytes(), bootstrapPlain) || h.sealer.opened != 0 {
					t.Fatalf("user channel got the device's token: %q", rec.Body)
				}
			},
		},
		{
			name:       "GetBootstrapToken when the store fails is 500",
			setup:      func(h *harness) { withBootstrap(h); h.store.err = errors.New("disk full") },
			body:       msg(map[string]any{"MessageType": "GetBootstrapToken", "UDID": macUDID}),
			wantStatus: http.StatusInternalServerError, wantType: "GetBootstrapToken",
		},

		// DeclarativeManagement
		{
			name: "DeclarativeManagement tokens", body: macDM("tokens"),
			wantStatus: http.StatusOK, wantType: "DeclarativeManagement",
			check: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder) {
				h.assertBinder(t, "Check "+macUDID)
				checkTokensResponse(t, rec)
			},
		},
		{
			name: "DeclarativeManagement declaration-items", body: macDM("declaration-items"),
			wantStatus: http.StatusOK, wantType: "DeclarativeManagement",
			check: func(t *testing.T, _ *harness, rec *httptest.ResponseRecorder) {
				checkDeclarationItemsResponse(t, rec)
			},
		},
		{
			name: "DeclarativeManagement status is an empty 200",
			body: msg(map[string]any{
				"MessageType": "DeclarativeManagement", "UDID": macUDID, "Endpoint": "status",
				"Data": []byte(`{"StatusItems":{"device":{"identifier":{"udid":"` + macUDID + `"}}},"Errors":[]}`),
			}),
			wantStatus: http.StatusOK, wantType: "DeclarativeManagement",
			check: func(t *testing.T, _ *harness, rec *httptest.ResponseRecorder) {
				if rec.Body.Len() != 0 {
					t.Fatalf("status answered %q", rec.Body)
				}
			},
		},
		{
			name: "DeclarativeManagement declaration is 404", body: macDM("declaration/configuration/com.example.passcode"),
			wantStatus: http.StatusNotFound, wantType: "DeclarativeManagement",
		},
		{
			name: "DeclarativeManagement unknown endpoint is 400", body: macDM("assets-please"),
			wantStatus: http.StatusBadRequest, wantType: "DeclarativeManagement",
		},

		// GetToken
		{
			name:       "GetToken is 400",
			body:       msg(map[string]any{"MessageType": "GetToken", "UDID": macUDID, "TokenServiceType": "com.apple.maid"}),
			wantStatus: http.StatusBadRequest, wantType: "GetToken",
			check: func(t *testing.T, h *harness, _ *httptest.ResponseRecorder) { h.assertBinder(t, "Check "+macUDID) },
		},

		// Requests that do not decode, or come without an identity.
		{
			name: "not a plist", body: func(*testing.T) []byte { return []byte("MessageType=Authenticate") },
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "empty body", body: func(*testing.T) []byte { return nil },
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "no MessageType", body: msg(map[string]any{"UDID": ipadUDID, "Topic": topic}),
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "unknown MessageType", body: msg(map[string]any{"MessageType": "Hello", "UDID": ipadUDID}),
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "Authenticate without Topic", body: msg(map[string]any{"MessageType": "Authenticate", "UDID": ipadUDID}),
			wantStatus: http.StatusBadRequest,
		},
		{
			name:  "TokenUpdate without Token",
			setup: func(h *harness) { h.store.addDevice(ipadUDID, []byte("hash")) },
			body: msg(map[string]any{
				"MessageType": "TokenUpdate", "UDID": ipadUDID, "Topic": topic, "PushMagic": "magic",
			}),
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "no UDID or EnrollmentID", body: msg(map[string]any{"MessageType": "CheckOut", "Topic": topic}),
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "no identity in the context", body: file(authenticateIPad), noIdentity: true,
			wantStatus: http.StatusBadRequest,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			if tt.setup != nil {
				tt.setup(h)
			}
			rec := h.send(tt.body(t), !tt.noIdentity)
			if rec.Code == http.StatusUnauthorized {
				t.Fatal("answered 401, which unenrolls the device")
			}
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tt.wantStatus, rec.Body)
			}
			if want := []observation{{tt.wantType, tt.wantStatus}}; !slices.Equal(h.observed, want) {
				t.Fatalf("observer saw %v, want %v", h.observed, want)
			}
			if tt.wantStatus == http.StatusOK {
				if len(h.events) != 1 || h.events[0].Type() != tt.wantType {
					t.Fatalf("events = %v, want one %s", h.events, tt.wantType)
				}
			} else {
				if len(h.events) != 0 {
					t.Fatalf("event hook called for a failed check-in: %v", h.events)
				}
				if n := h.store.writeCount(); n != 0 {
					t.Fatalf("a failed check-in wrote to the store %d times", n)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" || rec.Body.Len() == 0 {
					t.Fatalf("error answered as %q: %q", ct, rec.Body)
				}
			}
			if tt.wantType == "" && len(h.binder.recorded()) != 0 {
				t.Fatalf("binder asked about a request that did not decode: %v", h.binder.recorded())
			}
			if tt.check != nil {
				tt.check(t, h, rec)
			}
		})
	}
}

// checkTokensResponse checks a TokensResponse
// (declarative/protocol/tokensresponse.yaml): SyncTokens is required and
// holds the DeclarationsToken and an RFC 3339 Timestamp. It returns the
// DeclarationsToken.
func checkTokensResponse(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	var resp map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	if len(resp) != 1 || resp["SyncTokens"] == nil {
		t.Fatalf("TokensResponse = %s, want exactly SyncTokens", rec.Body)
	}
	var st struct {
		DeclarationsToken *string
		Timestamp         *string
	}
	if err := json.Unmarshal(resp["SyncTokens"], &st); err != nil {
		t.Fatalf("SyncTokens: %v", err)
	}
	if st.DeclarationsToken == nil || *st.DeclarationsToken == "" {
		t.Fatalf("SyncTokens has no DeclarationsToken: %s", rec.Body)
	}
	if st.Timestamp == nil {
		t.Fatalf("SyncTokens has no Timestamp: %s", rec.Body)
	}
	if _, err := time.Parse(time.RFC3339, *st.Timestamp); err != nil {
		t.Fatalf("Timestamp: %v", err)
	}
	return *st.DeclarationsToken
}

// checkDeclarationItemsResponse checks a DeclarationItemsResponse
// (declarative/protocol/declarationitemsresponse.yaml): Declarations with
// the four required arrays, and the DeclarationsToken. It returns the
// DeclarationsToken.
func checkDeclarationItemsResponse(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	var resp struct {
		Declarations      map[string]json.RawMessage
		DeclarationsToken *string
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	if resp.DeclarationsToken == nil || *resp.DeclarationsToken == "" {
		t.Fatalf("no DeclarationsToken: %s", rec.Body)
	}
	if len(resp.Declarations) != 4 {
		t.Fatalf("Declarations = %s, want the four kinds", rec.Body)
	}
	for _, kind := range []string{"Activations", "Configurations", "Assets", "Management"} {
		var items []struct{ Identifier, ServerToken string }
		raw := resp.Declarations[kind]
		// null would decode as an empty slice; the schema requires an array.
		if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
			t.Fatalf("Declarations.%s = %s, want an array", kind, raw)
		}
		if err := json.Unmarshal(raw, &items); err != nil {
			t.Fatalf("Declarations.%s: %v", kind, err)
		}
		if len(items) != 0 {
			t.Fatalf("Declarations.%s = %s, want none", kind, raw)
		}
	}
	return *resp.DeclarationsToken
}

// TestDeclarationsTokenAgrees: the device compares the token from tokens
// with the one in declaration-items to know whether its set is current.
func TestDeclarationsTokenAgrees(t *testing.T) {
	h := newHarness()
	get := func(endpoint string) *httptest.ResponseRecorder {
		rec := h.send(dict(t, map[string]any{"MessageType": "DeclarativeManagement", "UDID": macUDID, "Endpoint": endpoint}), true)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %q", endpoint, rec.Code, rec.Body)
		}
		return rec
	}
	tokens := checkTokensResponse(t, get("tokens"))
	items := checkDeclarationItemsResponse(t, get("declaration-items"))
	if tokens != items {
		t.Fatalf("tokens says %q, declaration-items says %q", tokens, items)
	}
}

// TestBootstrapTokenRoundTrip escrows a token, reads it back, deletes it
// and reads nothing, through the handler only.
func TestBootstrapTokenRoundTrip(t *testing.T) {
	h := newHarness()
	h.store.addDevice(macUDID, []byte("hash"))
	token := []byte{0x00, 0x01, 0xfe, 0xff, 'b', 't'}
	send := func(m map[string]any) *httptest.ResponseRecorder {
		t.Helper()
		m["UDID"] = macUDID
		rec := h.send(dict(t, m), true)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %q", m["MessageType"], rec.Code, rec.Body)
		}
		return rec
	}
	get := func() map[string]any {
		t.Helper()
		var got map[string]any
		if err := plist.Unmarshal(send(map[string]any{"MessageType": "GetBootstrapToken"}).Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	send(map[string]any{"MessageType": "SetBootstrapToken", "BootstrapToken": token})
	if got, _ := get()["BootstrapToken"].([]byte); !bytes.Equal(got, token) {
		t.Fatalf("read back %q, want %q", got, token)
	}
	send(map[string]any{"MessageType": "SetBootstrapToken", "BootstrapToken": []byte{}})
	if got := get(); len(got) != 0 {
		t.Fatalf("after delete, GetBootstrapToken = %v", got)
	}
}
