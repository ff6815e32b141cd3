package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestADEEnrollment: a device Apple assigned to bramley's ADE token comes
// out of Setup Assistant enrolled. It fetches /ade/enroll with its
// MachineInfo signed by its Apple identity (a simulated Apple device CA
// whose intermediate has expired, as Apple's has), enrolls over SCEP,
// says AwaitingConfiguration, gets the operator's setup commands first
// and DeviceConfigured last, and reports itself supervised with an MDM
// profile it cannot remove. Foreign signatures and serial numbers Apple
// did not assign are refused.
func TestADEEnrollment(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			fake := appletest.NewADE(t)
			apple, err := appletest.NewDeviceCA()
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			adeCA, appleCA := filepath.Join(dir, "ade-ca.pem"), filepath.Join(dir, "apple-device-ca.pem")
			if err := os.WriteFile(adeCA, fake.CACertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(appleCA, apple.RootCertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			e := start(t, db(t), func(c *server.Config) {
				c.ADEURL, c.ADECA, c.AppleDeviceCA, c.PushTopic = fake.URL(), adeCA, appleCA, testTopic
			})

			// The token, and a sync that makes the serials known.
			_, certPEM := e.raw(http.MethodGet, "/api/v1/ade/certificate", "", nil)
			cert, err := pki.ParseCertificatePEM(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			p7m, err := fake.ServerTokenP7M(cert)
			if err != nil {
				t.Fatal(err)
			}
			var tok struct {
				ID string `json:"id"`
			}
			code, body := e.raw(http.MethodPost, "/api/v1/ade/tokens", "application/pkcs7-mime", p7m)
			if code != http.StatusCreated {
				t.Fatalf("POST /ade/tokens: %d %s", code, body)
			}
			if err := json.Unmarshal(body, &tok); err != nil {
				t.Fatal(err)
			}
			fake.AddDevices(appletest.ADEDevice{SerialNumber: "DMPADE0001"}, appletest.ADEDevice{SerialNumber: "DMPADE0002"},
				appletest.ADEDevice{SerialNumber: "DMPGONE001"})
			fake.RemoveDevice("DMPGONE001")
			e.adeSync(tok.ID)

			identity := func(ca *appletest.DeviceCA) sim.AppleIdentity {
				c, k, chain, err := ca.Issue("sim")
				if err != nil {
					t.Fatal(err)
				}
				return sim.AppleIdentity{Certificate: c, Key: k, Chain: chain}
			}
			cc := sim.CloudConfig{URL: e.url + "/ade/enroll", Supervised: true, AwaitDeviceConfigured: true}
			pin := sim.WithProfileRoots(e.srv.CA().Root())

			dev, err := sim.EnrollADE(ctx, cc, identity(apple), "DMPADE0001", pin)
			if err != nil {
				t.Fatalf("EnrollADE: %v", err)
			}
			if !dev.AwaitingConfiguration() {
				t.Fatal("the device does not wait for DeviceConfigured")
			}
			// The operator's setup commands, queued now, still go first.
			info := e.enqueue(dev.UDID, map[string]any{"request_type": "DeviceInformation", "queries": []string{"IsSupervised"}})
			profiles := e.enqueue(dev.UDID, map[string]any{"request_type": "ProfileList"})
			handled, err := dev.Connect(ctx)
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			var order []string
			for _, h := range handled {
				order = append(order, h.RequestType)
			}
			if len(handled) != 3 || handled[0].CommandUUID != info || handled[1].CommandUUID != profiles ||
				handled[2].RequestType != "DeviceConfigured" || handled[2].Status != "Acknowledged" {
				t.Fatalf("commands %v (%+v), want DeviceInformation, ProfileList, then DeviceConfigured", order, handled)
			}
			if dev.AwaitingConfiguration() {
				t.Error("the device still waits after DeviceConfigured")
			}
			qr, _ := e.command(info).Targets[0].Result["QueryResponses"].(map[string]any)
			if qr["IsSupervised"] != true {
				t.Errorf("DeviceInformation %v, want IsSupervised", qr)
			}
			list, _ := e.command(profiles).Targets[0].Result["ProfileList"].([]any)
			if len(list) != 1 || list[0].(map[string]any)["PayloadRemovalDisallowed"] != true {
				t.Errorf("ProfileList %v, want a non-removable MDM profile", list)
			}
			if handled, err := dev.Connect(ctx); err != nil || len(handled) != 0 {
				t.Errorf("second session: %v %v, want nothing more", handled, err)
			}

			// The web view's GET with x-apple-aspen-deviceinfo works too.
			web := cc
			web.WebView = true
			if _, err := sim.EnrollADE(ctx, web, identity(apple), "DMPADE0002", pin); err != nil {
				t.Fatalf("EnrollADE with GET: %v", err)
			}

			foreign, err := appletest.NewDeviceCA()
			if err != nil {
				t.Fatal(err)
			}
			refusals := []struct {
				name   string
				ca     *appletest.DeviceCA
				serial string
			}{
				{"signed by a foreign device CA", foreign, "DMPADE0001"},
				{"a serial Apple did not assign", apple, "C02UNKNOWN"},
				{"a serial Apple unassigned", apple, "DMPGONE001"},
			}
			for _, r := range refusals {
				if _, err := sim.EnrollADE(ctx, cc, identity(r.ca), r.serial, pin); statusOf(err) != http.StatusForbidden {
					t.Errorf("%s: %v, want 403", r.name, err)
				}
			}
			for _, bad := range [][]byte{[]byte("not CMS"), nil} {
				req, _ := http.NewRequest(http.MethodPost, cc.URL, bytes.NewReader(bad))
				req.Header.Set("Content-Type", "application/pkcs7-signature")
				resp, err := e.http.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("POST %q: %d, want 400", bad, resp.StatusCode)
				}
			}
			var devices struct {
				Devices []map[string]any `json:"devices"`
			}
			if e.api(http.MethodGet, "/api/v1/devices", nil, &devices); len(devices.Devices) != 2 {
				t.Errorf("%d devices enrolled, want the 2 ADE devices", len(devices.Devices))
			}
		})
	}
}
