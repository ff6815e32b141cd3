package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/storage"
)

func TestListDeviceUsers(t *testing.T) {
	tests := []struct {
		name    string
		id      string
		want    int
		wantIDs []string
	}{
		{"a device with a user", "UDID-A", http.StatusOK, []string{"UDID-A:501"}},
		{"a device without users", "UDID-B", http.StatusOK, []string{}},
		{"a device without enrollments", "UDID-C", http.StatusOK, []string{}},
		{"unknown device", "UDID-Z", http.StatusNotFound, nil},
		{"a user channel ID", "UDID-A:501", http.StatusBadRequest, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newEnv(t).get("/api/v1/devices/" + tt.id + "/users")
			if tt.want != http.StatusOK {
				wantError(t, rec, tt.want)
				return
			}
			got := decode[struct {
				Users []storage.Enrollment `json:"users"`
			}](t, rec, http.StatusOK)
			ids := []string{}
			for _, u := range got.Users {
				ids = append(ids, u.ID)
			}
			if got.Users == nil || !slices.Equal(ids, tt.wantIDs) {
				t.Fatalf("users = %s, want %v", rec.Body, tt.wantIDs)
			}
		})
	}
}

// scopedProfile returns a .mobileconfig whose PayloadScope is scope (none
// when empty), base64 in JSON.
func scopedProfile(t *testing.T, scope string) []byte {
	t.Helper()
	p := profile.New("com.example.dock")
	p.PayloadScope = scope
	p.Add(&profile.Raw{Header: profile.Header{PayloadType: "com.apple.dock"}, Keys: map[string]any{"orientation": "left"}})
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInstallProfileScope(t *testing.T) {
	tests := []struct {
		name    string
		path    string // POST target
		targets []string
		profile []byte
		want    int
		wantMsg string
	}{
		{"user profile to a user", "/api/v1/devices/UDID-A:501/commands", nil, scopedProfile(t, "User"), http.StatusCreated, ""},
		{"user profile to a device", "/api/v1/devices/UDID-A/commands", nil, scopedProfile(t, "User"), http.StatusBadRequest, "PayloadScope User"},
		{"system profile to a device", "/api/v1/devices/UDID-A/commands", nil, scopedProfile(t, "System"), http.StatusCreated, ""},
		{"system profile to a user", "/api/v1/devices/UDID-A:501/commands", nil, scopedProfile(t, "System"), http.StatusBadRequest, "PayloadScope System"},
		{"unscoped profile to a device", "/api/v1/devices/UDID-B/commands", nil, scopedProfile(t, ""), http.StatusCreated, ""},
		{"unscoped profile to a user", "/api/v1/devices/UDID-A:501/commands", nil, scopedProfile(t, ""), http.StatusBadRequest, "means System"},
		{"user profile to a device among many", "/api/v1/commands", []string{"UDID-A:501", "UDID-B"}, scopedProfile(t, "User"), http.StatusBadRequest, "UDID-B"},
		{"unreadable profile passes", "/api/v1/devices/UDID-A:501/commands", nil, []byte{0x30, 0x80, 0x06, 0x09}, http.StatusCreated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			body := map[string]any{"request_type": "InstallProfile", "profile": tt.profile}
			if tt.targets != nil {
				body["enrollment_ids"] = tt.targets
			}
			b, _ := json.Marshal(body)
			rec := e.serve(request(http.MethodPost, tt.path, mediaJSON, b))
			if tt.want != http.StatusCreated {
				if msg := wantError(t, rec, tt.want); !strings.Contains(msg, tt.wantMsg) {
					t.Fatalf("error %q does not say %q", msg, tt.wantMsg)
				}
				if len(e.enq.calls) != 0 {
					t.Fatal("a refused profile was queued")
				}
				return
			}
			if rec.Code != http.StatusCreated || len(e.enq.calls) != 1 {
				t.Fatalf("status %d, %d enqueued; body %s", rec.Code, len(e.enq.calls), rec.Body)
			}
		})
	}
}

// A Shared iPad's users take profiles without a scope, which iOS ignores.
func TestInstallProfileSharedIPadUser(t *testing.T) {
	e := newEnv(t)
	e.store.enrollments["UDID-B:bob"] = storage.Enrollment{ID: "UDID-B:bob", DeviceID: "UDID-B",
		UserID: mdm.SharedIPadUserID, UserShortName: "bob", Enabled: true}
	b, _ := json.Marshal(map[string]any{"request_type": "InstallProfile", "profile": scopedProfile(t, "")})
	if rec := e.serve(request(http.MethodPost, "/api/v1/devices/UDID-B:bob/commands", mediaJSON, b)); rec.Code != http.StatusCreated {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}
