package sim_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestFleetWokenByPush: devices enrolled for real sleep until the push
// bramley sends through the fake APNs wakes them, then answer with what
// real devices send.
func TestFleetWokenByPush(t *testing.T) {
	for name, db := range backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			apns := appletest.NewAPNs(t)
			caFile := filepath.Join(t.TempDir(), "apns-ca.pem")
			if err := os.WriteFile(caFile, apns.CACertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			e := start(t, db(t), func(c *server.Config) {
				c.PushTopic = ""
				c.APNsURL, c.APNsCA = apns.URL(), caFile
			})
			certPEM, keyPEM := apns.PushCertificate(testTopic)
			if code := e.api("PUT", "/api/v1/push-certificates", map[string]any{
				"certificate": string(certPEM), "private_key": string(keyPEM),
			}, nil); code != http.StatusOK {
				t.Fatalf("uploading the push certificate: %d", code)
			}

			// One pooled key serves every device.
			pool, err := sim.NewKeyPool(2048, 1)
			if err != nil {
				t.Fatal(err)
			}
			link := e.token(3)
			var devices []*sim.Device
			for range 3 {
				d, err := sim.EnrollDirect(context.Background(), link, sim.WithProfileRoots(e.ca), sim.WithKeyPool(pool))
				if err != nil {
					t.Fatalf("EnrollDirect: %v", err)
				}
				devices = append(devices, d)
			}
			fleet, err := sim.NewFleet(devices) // no polling: only pushes wake them
			if err != nil {
				t.Fatal(err)
			}
			apns.OnPush(fleet.Push)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- fleet.Run(ctx) }()

			type queued struct{ info, apps string }
			cmds := make([]queued, len(devices))
			for i, d := range devices {
				cmds[i] = queued{
					info: e.enqueue(d.UDID, map[string]any{"request_type": "DeviceInformation", "queries": []string{"DeviceName", "OSVersion"}}),
					apps: e.enqueue(d.UDID, map[string]any{"request_type": "InstalledApplicationList"}),
				}
			}
			for i, d := range devices {
				res := e.waitStatus(cmds[i].info, "Acknowledged")
				qr, _ := res["QueryResponses"].(map[string]any)
				if qr["DeviceName"] != d.DeviceName || qr["OSVersion"] != d.OSVersion {
					t.Errorf("DeviceInformation of %s: %v", d.UDID, res)
				}
				res = e.waitStatus(cmds[i].apps, "Acknowledged")
				if apps, _ := res["InstalledApplicationList"].([]any); len(apps) == 0 {
					t.Errorf("InstalledApplicationList of %s: %v", d.UDID, res)
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			s := fleet.Stats()
			if s.Devices != 3 || s.Pushes < 3 || s.Answered["DeviceInformation"]["Acknowledged"] != 3 ||
				s.Answered["InstalledApplicationList"]["Acknowledged"] != 3 || s.Commands() != 6 || s.Errors != 0 {
				t.Fatalf("stats = %+v", s)
			}
		})
	}
}

// TestFleetPolls: where no push reaches them, devices poll, and one that
// always may defer answers NotNow to what may be deferred.
func TestFleetPolls(t *testing.T) {
	e := start(t, "", nil)
	link := e.token(2)
	var devices []*sim.Device
	for _, notNow := range []float64{0, 1} {
		d, err := sim.EnrollDirect(context.Background(), link, sim.WithProfileRoots(e.ca),
			sim.WithDeviceOptions(sim.WithNotNow(notNow)))
		if err != nil {
			t.Fatal(err)
		}
		devices = append(devices, d)
	}
	fleet, err := sim.NewFleet(devices, sim.WithPoll(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fleet.Run(ctx) }()

	// The server pushes nothing here (no push certificate); the polls find the commands.
	ok := e.enqueue(devices[0].UDID, map[string]any{"request_type": "SecurityInfo"})
	deferred := e.enqueue(devices[1].UDID, map[string]any{"request_type": "SecurityInfo"})
	never := e.enqueue(devices[1].UDID, map[string]any{"request_type": "ProfileList"}) // never NotNow
	e.waitStatus(ok, "Acknowledged")
	e.waitStatus(deferred, "NotNow")
	e.waitStatus(never, "Acknowledged")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := fleet.Stats()
	if s.Sessions < 4 || s.Answered["SecurityInfo"]["Acknowledged"] != 1 || s.Answered["SecurityInfo"]["NotNow"] < 1 || s.Errors != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestFleetBounds(t *testing.T) {
	if _, err := sim.NewFleet(make([]*sim.Device, sim.MaxFleet+1)); err == nil {
		t.Error("a fleet above MaxFleet was made")
	}
	if _, err := sim.NewFleet(nil, sim.WithPoll(-time.Second)); err == nil {
		t.Error("a negative poll interval was accepted")
	}
}
