package api

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/storage"
)

func TestListDevices(t *testing.T) {
	tests := []struct {
		name     string
		query    string
		wantIDs  []string
		wantNext string
	}{
		{"all", "", []string{"UDID-A", "UDID-B", "UDID-C"}, ""},
		{"by serial number", "?serial_number=SERIAL-B", []string{"UDID-B"}, ""},
		{"by UDID", "?udid=UDID-C", []string{"UDID-C"}, ""},
		{"no match", "?serial_number=NOPE", []string{}, ""},
		{"first page", "?limit=2", []string{"UDID-A", "UDID-B"}, "UDID-B"},
		{"last page", "?limit=2&after=UDID-B", []string{"UDID-C"}, ""},
		{"page exactly full", "?limit=3", []string{"UDID-A", "UDID-B", "UDID-C"}, ""},
		{"limit above the maximum", "?limit=5000", []string{"UDID-A", "UDID-B", "UDID-C"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newEnv(t).get("/api/v1/devices" + tt.query)
			got := decode[struct {
				Devices []storage.Device `json:"devices"`
				Next    *string          `json:"next"`
			}](t, rec, http.StatusOK)
			if got.Devices == nil || got.Next == nil {
				t.Fatalf("body %s lacks devices or next", rec.Body)
			}
			var ids []string
			for _, d := range got.Devices {
				ids = append(ids, d.ID)
			}
			if !slices.Equal(ids, tt.wantIDs) || *got.Next != tt.wantNext {
				t.Errorf("got %v next %q, want %v next %q", ids, *got.Next, tt.wantIDs, tt.wantNext)
			}
		})
	}
}

func TestListDevicesBadLimit(t *testing.T) {
	for _, limit := range []string{"0", "-1", "ten", "1.5"} {
		t.Run(limit, func(t *testing.T) {
			wantError(t, newEnv(t).get("/api/v1/devices?limit="+limit), http.StatusBadRequest)
		})
	}
}

func TestGetDevice(t *testing.T) {
	type view struct {
		storage.Device
		Enrollments []storage.Enrollment `json:"enrollments"`
		// Set for enrollment IDs.
		Dev *storage.Device     `json:"device"`
		Enr *storage.Enrollment `json:"enrollment"`
	}
	tests := []struct {
		name       string
		id         string
		want       int
		wantDevice string
		wantEnr    []string
	}{
		{"by UDID", "UDID-A", http.StatusOK, "UDID-A", []string{"UDID-A", "UDID-A:501"}},
		{"by device channel ID", "UDID-B", http.StatusOK, "UDID-B", []string{"UDID-B"}},
		{"without enrollments", "UDID-C", http.StatusOK, "UDID-C", []string{}},
		{"by enrollment ID", "UDID-A:501", http.StatusOK, "UDID-A", []string{"UDID-A:501"}},
		{"by escaped enrollment ID", "UDID-A%3A501", http.StatusOK, "UDID-A", []string{"UDID-A:501"}},
		{"unknown device", "UDID-Z", http.StatusNotFound, "", nil},
		{"unknown user", "UDID-A:502", http.StatusNotFound, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newEnv(t).get("/api/v1/devices/" + tt.id)
			if tt.want != http.StatusOK {
				wantError(t, rec, tt.want)
				return
			}
			v := decode[view](t, rec, http.StatusOK)
			var devID string
			var enrs []string
			if strings.Contains(tt.id, ":") || strings.Contains(tt.id, "%3A") {
				if v.Dev == nil || v.Enr == nil || v.ID != "" {
					t.Fatalf("body %s is not {device, enrollment}", rec.Body)
				}
				devID, enrs = v.Dev.ID, []string{v.Enr.ID}
			} else {
				if v.Enrollments == nil {
					t.Fatalf("body %s lacks enrollments", rec.Body)
				}
				devID, enrs = v.ID, []string{}
				for _, e := range v.Enrollments {
					enrs = append(enrs, e.ID)
				}
			}
			if devID != tt.wantDevice || !slices.Equal(enrs, tt.wantEnr) {
				t.Errorf("got device %q enrollments %v, want %q %v", devID, enrs, tt.wantDevice, tt.wantEnr)
			}
		})
	}
}

func TestDeviceQueue(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want int
		uuid []string
	}{
		{"with commands", "UDID-B", http.StatusOK, []string{"ABCUUID"}},
		{"empty", "UDID-A", http.StatusOK, []string{}},
		{"user channel", "UDID-A:501", http.StatusOK, []string{}},
		{"unknown enrollment", "UDID-Z", http.StatusNotFound, nil},
		{"device without enrollment", "UDID-C", http.StatusNotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			rec := e.get("/api/v1/devices/" + tt.id + "/queue")
			if tt.want != http.StatusOK {
				wantError(t, rec, tt.want)
				return
			}
			got := decode[struct {
				Queue []storage.QueueItem `json:"queue"`
			}](t, rec, http.StatusOK)
			if got.Queue == nil {
				t.Fatalf("body %s lacks queue", rec.Body)
			}
			var uuids []string
			for _, q := range got.Queue {
				uuids = append(uuids, q.CommandUUID)
			}
			if !slices.Equal(uuids, tt.uuid) {
				t.Errorf("queue %v, want %v", uuids, tt.uuid)
			}
			if !e.cmds.now.Equal(testNow) {
				t.Errorf("store got time %v, want the API's clock %v", e.cmds.now, testNow)
			}
		})
	}
}
