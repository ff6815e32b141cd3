package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/vpp"
)

// TestVPPDeviceLicence: an app licensed to a device's serial number, with
// no person, is associated with Apple, waited for, and queued on the
// device once; asking again asks Apple nothing.
func TestVPPDeviceLicence(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testVPPDeviceLicence(t, db(t))
		})
	}
}

func testVPPDeviceLicence(t *testing.T, dsn string) {
	fake := appletest.NewVPP(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "361309726", Total: 10},
		appletest.VPPAsset{AdamID: "1040297390", Total: 10}))
	caFile := filepath.Join(t.TempDir(), "vpp-ca.pem")
	if err := os.WriteFile(caFile, fake.CACertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	var complete atomic.Bool
	complete.Store(true)
	sleep := func(ctx context.Context, d time.Duration) error {
		if complete.Load() {
			fake.CompleteEvents()
		}
		return ctx.Err()
	}
	e := startWith(t, dsn, func(c *server.Config) { c.VPPURL, c.VPPCA = fake.URL(), caFile },
		server.WithVPPOptions(vpp.WithSleeper(sleep), vpp.WithPollInterval(time.Millisecond, 2), vpp.WithRateLimit(-1)))
	ctx := context.Background()
	if code, body := e.raw("POST", "/api/v1/vpp/tokens", "application/octet-stream", fake.ContentToken()); code != http.StatusCreated {
		t.Fatalf("import: %d %s", code, body)
	}
	d := e.device()
	if err := d.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	if d.SerialNumber == "" {
		t.Fatal("the simulated device has no serial number")
	}

	for name, tc := range map[string]struct {
		body map[string]string
		want int
	}{
		"unknown device": {map[string]string{"device_id": "no-such-device", "adam_id": "361309726"}, http.StatusNotFound},
		"user channel":   {map[string]string{"device_id": d.UDID + ":user", "adam_id": "361309726"}, http.StatusBadRequest},
		"both":           {map[string]string{"device_id": d.UDID, "username": "alice", "adam_id": "361309726"}, http.StatusBadRequest},
		"neither":        {map[string]string{"adam_id": "361309726"}, http.StatusBadRequest},
	} {
		if code := e.api("POST", "/api/v1/vpp/assignments", tc.body, nil); code != tc.want {
			t.Errorf("%s: %d, want %d", name, code, tc.want)
		}
	}

	assign := func() vppPlanView {
		t.Helper()
		var p vppPlanView
		if code := e.api("POST", "/api/v1/vpp/assignments", map[string]string{"device_id": d.UDID, "adam_id": "361309726", "kind": "app"}, &p); code != http.StatusOK {
			t.Fatalf("assigning to the device: %d %+v", code, p)
		}
		return p
	}
	p := assign()
	if p.Status != "assigned" || p.EventID == "" || p.DeviceID != d.UDID || p.Username != "" || len(p.Installs) != 1 || p.Installs[0].DeviceID != d.UDID {
		t.Fatalf("device assignment: %+v", p)
	}
	if h := fake.Holders("361309726"); !slices.Equal(h, []string{d.SerialNumber}) {
		t.Fatalf("holders: %v, want the serial number %s", h, d.SerialNumber)
	}
	before := fake.CountRequests("POST", "/assets/associate")
	if again := assign(); again.Status != "assigned" || len(again.Installs) != 1 {
		t.Fatalf("repeated device assignment: %+v", again)
	}
	if n := fake.CountRequests("POST", "/assets/associate"); n != before {
		t.Errorf("repeated assignment asked Apple again (%d → %d)", before, n)
	}
	got := 0
	for range 2 {
		if err := d.TokenUpdate(ctx); err != nil {
			t.Fatal(err)
		}
		handled, err := d.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range handled {
			if h.RequestType != "InstallApplication" || h.CommandUUID != p.Installs[0].CommandUUID {
				t.Errorf("unexpected %s %s", h.RequestType, h.CommandUUID)
			}
			got++
		}
	}
	if got != 1 {
		t.Fatalf("InstallApplication received %d times, want 1", got)
	}

	// A book Apple has not carried out yet: pending, nothing queued, until
	// the sync finds the event completed.
	complete.Store(false)
	var book vppPlanView
	if code := e.api("POST", "/api/v1/vpp/assignments", map[string]string{"device_id": d.UDID, "adam_id": "1040297390", "kind": "book"}, &book); code != http.StatusOK || book.Status != "pending" || len(book.Installs) != 0 {
		t.Fatalf("pending device assignment: %d %+v", code, book)
	}
	fake.CompleteEvents()
	if code, body := e.raw("POST", "/api/v1/vpp/sync", "", nil); code != http.StatusOK {
		t.Fatalf("sync: %d %s", code, body)
	}
	handled, err := d.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(handled) != 1 || handled[0].RequestType != "InstallMedia" {
		t.Fatalf("after the sync: %+v, want one InstallMedia", handled)
	}
	var plans struct {
		Assignments []vppPlanView `json:"assignments"`
	}
	e.api("GET", "/api/v1/vpp/assignments", nil, &plans)
	if len(plans.Assignments) != 2 {
		t.Fatalf("assignments: %+v", plans.Assignments)
	}
	for _, p := range plans.Assignments {
		if p.Status != "assigned" || p.DeviceID != d.UDID || len(p.Installs) != 1 {
			t.Errorf("plan %+v", p)
		}
	}
}
