package checkin_test

import (
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/checkin"
)

// TestUserAuthenticate runs the network-user login (apple-protocols.md
// i.2) against a fake directory: a known user gets an empty
// DigestChallenge, an unknown one 410, an outage 503 (never 401), and the
// device's own check-ins never consult the directory.
func TestUserAuthenticate(t *testing.T) {
	const otherUser = "0F0F0F0F-0000-4000-8000-000000000000"
	userAuth := func(userID string, extra map[string]any) map[string]any {
		m := map[string]any{"MessageType": "UserAuthenticate", "UDID": macUDID, "UserID": userID, "UserShortName": "bob"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name        string
		dir         *fakeDirectory // nil: none configured
		binderErr   error
		body        map[string]any
		wantStatus  int
		wantKey     string // the one key of the 200 answer, with an empty string value
		wantLookups []string
	}{
		{
			name: "known user gets an empty DigestChallenge", dir: &fakeDirectory{known: map[string]bool{macUser: true}},
			body: userAuth(macUser, nil), wantStatus: http.StatusOK, wantKey: "DigestChallenge",
			wantLookups: []string{macUser + "/bob"},
		},
		{
			name: "unknown user is 410", dir: &fakeDirectory{known: map[string]bool{macUser: true}},
			body: userAuth(otherUser, nil), wantStatus: http.StatusGone, wantLookups: []string{otherUser + "/bob"},
		},
		{
			name: "directory unreachable is 503", dir: &fakeDirectory{err: errors.New("connection refused")},
			body: userAuth(macUser, nil), wantStatus: http.StatusServiceUnavailable, wantLookups: []string{macUser + "/bob"},
		},
		{
			name: "no directory configured is 410", body: userAuth(macUser, nil), wantStatus: http.StatusGone,
		},
		{
			name: "digest response gets an empty AuthToken", dir: &fakeDirectory{known: map[string]bool{macUser: true}},
			body:       userAuth(macUser, map[string]any{"DigestResponse": `Digest username="bob",realm="x",nonce="n",uri="/",response="r"`}),
			wantStatus: http.StatusOK, wantKey: "AuthToken",
		},
		{
			name: "no UserID is 400", dir: &fakeDirectory{known: map[string]bool{macUser: true}},
			body: map[string]any{"MessageType": "UserAuthenticate", "UDID": macUDID}, wantStatus: http.StatusBadRequest,
		},
		{
			name: "binding is checked before the directory", dir: &fakeDirectory{known: map[string]bool{macUser: true}},
			binderErr: refused, body: userAuth(macUser, nil), wantStatus: http.StatusForbidden,
		},
		{
			name: "device check-ins do not consult the directory", dir: &fakeDirectory{err: errors.New("down")},
			body:       map[string]any{"MessageType": "TokenUpdate", "UDID": macUDID, "Topic": topic, "PushMagic": "magic", "Token": []byte("token")},
			wantStatus: http.StatusOK,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []checkin.Option
			if tt.dir != nil {
				opts = append(opts, checkin.WithUserDirectory(tt.dir))
			}
			h := newHarness(opts...)
			h.binder.err = tt.binderErr
			h.store.addDevice(macUDID, []byte("hash"))
			rec := h.send(dict(t, tt.body), true)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.dir != nil {
				if got := tt.dir.lookups(); !slices.Equal(got, tt.wantLookups) {
					t.Fatalf("directory lookups = %q, want %q", got, tt.wantLookups)
				}
			}
			if tt.wantKey == "" {
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/xml" {
				t.Fatalf("Content-Type %q", ct)
			}
			var got map[string]any
			if err := plist.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("answer is not a plist: %v\n%s", err, rec.Body)
			}
			// The key must be present: an absent DigestChallenge is not
			// Apple's "no AuthToken needed".
			if v, ok := got[tt.wantKey]; !ok || v != "" || len(got) != 1 {
				t.Fatalf("answer = %#v, want only %s: \"\"", got, tt.wantKey)
			}
		})
	}
}
