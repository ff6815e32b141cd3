package server_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/server"
)

// adeAssignView is a device of GET /ade/devices with its assignment.
type adeAssignView struct {
	SerialNumber    string `json:"serial_number"`
	ProfileUUID     string `json:"profile_uuid"`
	ProfileStatus   string `json:"profile_status"`
	AssignProfileID string `json:"assign_profile_id"`
	AssignResult    string `json:"assign_result"`
	AssignTime      string `json:"assign_time"`
}

type adeProfileView struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Profile      map[string]any    `json:"profile"`
	ProfileUUIDs map[string]string `json:"profile_uuids"`
}

// importADEToken uploads a server token the fake made for bramley's
// certificate and returns its ID.
func (e *env) importADEToken(fake *appletest.ADE) string {
	e.t.Helper()
	code, certPEM := e.raw(http.MethodGet, "/api/v1/ade/certificate", "", nil)
	if code != http.StatusOK {
		e.t.Fatalf("GET /ade/certificate: %d %s", code, certPEM)
	}
	cert, err := pki.ParseCertificatePEM(certPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	p7m, err := fake.ServerTokenP7M(cert)
	if err != nil {
		e.t.Fatal(err)
	}
	code, body := e.raw(http.MethodPost, "/api/v1/ade/tokens", "application/pkcs7-mime", p7m)
	var tok struct {
		ID string `json:"id"`
	}
	if code != http.StatusCreated || json.Unmarshal(body, &tok) != nil || tok.ID == "" {
		e.t.Fatalf("POST /ade/tokens: %d %s", code, body)
	}
	return tok.ID
}

func (e *env) createADEProfile(body any) adeProfileView {
	e.t.Helper()
	var p adeProfileView
	if code := e.api(http.MethodPost, "/api/v1/ade/profiles", body, &p); code != http.StatusCreated || p.ID == "" {
		e.t.Fatalf("POST /ade/profiles: %d %+v", code, p)
	}
	return p
}

// TestADEAssignment: an administrator defines two ADE profiles and rules
// (a serial list for one, the default for the other); a sync defines
// both at Apple (the fake) and assigns each device the right one, and
// /ade/devices shows the results. A profile Apple would refuse is
// refused at once, and nothing is stored.
func TestADEAssignment(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fake := appletest.NewADE(t)
			caFile := filepath.Join(t.TempDir(), "ade-ca.pem")
			if err := os.WriteFile(caFile, fake.CACertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			e := start(t, db(t), func(c *server.Config) { c.ADEURL = fake.URL(); c.ADECA = caFile })
			tokenID := e.importADEToken(fake)
			fake.AddDevices(
				appletest.ADEDevice{SerialNumber: "C02AAA", Model: "MacBook Air", OS: "OSX", DeviceFamily: "Mac"},
				appletest.ADEDevice{SerialNumber: "F17BBB", Model: "iPad Air", OS: "iPadOS", DeviceFamily: "iPad"},
				appletest.ADEDevice{SerialNumber: "DMPCCC", Model: "iPhone 16", OS: "iOS", DeviceFamily: "iPhone"},
			)

			// Not removable without supervision: Apple's FLAGS_INVALID.
			var errBody map[string]string
			code := e.api(http.MethodPost, "/api/v1/ade/profiles", map[string]any{"profile": map[string]any{
				"profile_name": "Bad", "is_supervised": false, "is_mdm_removable": false,
				"skip_setup_items": []string{"NoSuchPane"}}}, &errBody)
			if code != http.StatusBadRequest || !strings.Contains(errBody["error"], "is_supervised") ||
				!strings.Contains(errBody["error"], "NoSuchPane") {
				t.Errorf("invalid profile: %d %v, want 400 naming both problems", code, errBody)
			}
			if code, body := e.raw(http.MethodGet, "/api/v1/ade/profiles", "", nil); code != http.StatusOK || string(body) != "{\"profiles\":[]}\n" {
				t.Errorf("profiles after a refused one: %d %s", code, body)
			}

			staff := e.createADEProfile(map[string]any{"name": "Staff", "profile": map[string]any{
				"profile_name": "Staff devices", "is_supervised": true, "is_mdm_removable": false,
				"await_device_configured": true, "is_mandatory": true, "skip_setup_items": []string{"Siri", "TOS"},
				"department": "IT", "support_phone_number": "+44 20 7946 0000"}})
			if u, _ := staff.Profile["url"].(string); !strings.HasSuffix(u, "/ade/enroll") || !strings.HasPrefix(u, "https://") {
				t.Errorf("default url %q, want PUBLIC_URL/ade/enroll", u)
			}
			kiosk := e.createADEProfile(map[string]any{"profile": map[string]any{
				"profile_name": "Kiosk", "url": "https://kiosk.example.com/ade/enroll", "is_supervised": true}})
			if kiosk.Name != "Kiosk" {
				t.Errorf("name defaults to profile_name: %+v", kiosk)
			}
			rules := map[string]any{"rules": []any{
				map[string]any{"profile_id": kiosk.ID, "match": map[string]any{"serials": []string{"F17BBB"}}},
				map[string]any{"profile_id": staff.ID, "match": map[string]any{"default": true}},
			}}
			if code := e.api(http.MethodPut, "/api/v1/ade/assignment-rules", rules, nil); code != http.StatusOK {
				t.Fatalf("PUT /ade/assignment-rules: %d", code)
			}
			bad := map[string]any{"rules": []any{map[string]any{"profile_id": "nope", "match": map[string]any{"default": true, "family": "iPad"}}}}
			if code := e.api(http.MethodPut, "/api/v1/ade/assignment-rules", bad, &errBody); code != http.StatusBadRequest {
				t.Errorf("bad rules: %d %v, want 400", code, errBody)
			}

			e.adeSync(tokenID)
			uuids := fake.ProfileUUIDs()
			if len(uuids) != 2 {
				t.Fatalf("profiles defined at Apple: %v, want 2", uuids)
			}
			staff, kiosk = e.adeProfile(staff.ID), e.adeProfile(kiosk.ID)
			staffUUID, kioskUUID := staff.ProfileUUIDs[tokenID], kiosk.ProfileUUIDs[tokenID]
			if staffUUID == "" || kioskUUID == "" || staffUUID == kioskUUID {
				t.Fatalf("profile UUIDs: staff %v, kiosk %v", staff.ProfileUUIDs, kiosk.ProfileUUIDs)
			}
			defined, _ := fake.Profile(staffUUID)
			if defined["is_supervised"] != true || defined["is_mdm_removable"] != false || defined["await_device_configured"] != true ||
				defined["department"] != "IT" || !strings.HasSuffix(defined["url"].(string), "/ade/enroll") {
				t.Errorf("staff profile as Apple has it: %v", defined)
			}
			want := map[string]string{"C02AAA": staffUUID, "F17BBB": kioskUUID, "DMPCCC": staffUUID}
			if got := fake.Assignments(); !equalMaps(got, want) {
				t.Errorf("Apple's assignments %v, want %v", got, want)
			}
			devices := e.adeAssignments()
			for serial, uuid := range want {
				d := devices[serial]
				if d.ProfileUUID != uuid || d.ProfileStatus != "assigned" || d.AssignResult != "SUCCESS" || d.AssignTime == "" {
					t.Errorf("device %s: %+v, want %s assigned with SUCCESS", serial, d, uuid)
				}
			}
			if devices["F17BBB"].AssignProfileID != kiosk.ID || devices["C02AAA"].AssignProfileID != staff.ID {
				t.Errorf("assigned profile IDs: %+v", devices)
			}

			// The next sync sees Apple's changes and assigns nothing again;
			// a device new since gets the default.
			fake.AddDevices(appletest.ADEDevice{SerialNumber: "HXDDDD", DeviceFamily: "iPhone"})
			e.adeSync(tokenID)
			if got := fake.ProfileUUIDs(); len(got) != 2 {
				t.Errorf("profiles defined again: %v", got)
			}
			want["HXDDDD"] = staffUUID
			if got := fake.Assignments(); !equalMaps(got, want) {
				t.Errorf("Apple's assignments after the second sync %v, want %v", got, want)
			}
			if n := countRequests(fake, "/profile/devices"); n != 3 {
				t.Errorf("%d assignment requests, want 3 (two profiles, then the new device)", n)
			}
			// On demand, every device is checked; all hold their profile.
			var res struct {
				Results map[string]int `json:"results"`
			}
			if code := e.api(http.MethodPost, "/api/v1/ade/tokens/"+tokenID+"/assign", nil, &res); code != http.StatusOK || len(res.Results) != 0 {
				t.Errorf("POST /ade/tokens/%s/assign: %d %v, want nothing to do", tokenID, code, res)
			}
			if code := e.api(http.MethodPost, "/api/v1/ade/tokens/nope/assign", nil, nil); code != http.StatusNotFound {
				t.Errorf("assign of an unknown token: %d, want 404", code)
			}
		})
	}
}

func (e *env) adeProfile(id string) adeProfileView {
	e.t.Helper()
	var p adeProfileView
	if code := e.api(http.MethodGet, "/api/v1/ade/profiles/"+id, nil, &p); code != http.StatusOK {
		e.t.Fatalf("GET /ade/profiles/%s: %d", id, code)
	}
	return p
}

func (e *env) adeAssignments() map[string]adeAssignView {
	e.t.Helper()
	var out struct {
		Devices []adeAssignView `json:"devices"`
	}
	if code := e.api(http.MethodGet, "/api/v1/ade/devices", nil, &out); code != http.StatusOK {
		e.t.Fatalf("GET /ade/devices: %d", code)
	}
	m := map[string]adeAssignView{}
	for _, d := range out.Devices {
		m[d.SerialNumber] = d
	}
	return m
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func countRequests(fake *appletest.ADE, path string) int {
	n := 0
	for _, r := range fake.Requests() {
		if r.Path == path {
			n++
		}
	}
	return n
}
