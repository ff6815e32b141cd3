package server_test

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
	"github.com/bramley-mdm/bramley/vpp"
)

// TestVPPOwnerFromOTA: a person gets an app and a book before having a
// device, enrolls one over the air, and it receives an InstallApplication
// and an InstallMedia without anyone setting its owner.
func TestVPPOwnerFromOTA(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testVPPOwnerFromOTA(t, db(t))
		})
	}
}

func testVPPOwnerFromOTA(t *testing.T, dsn string) {
	fake := appletest.NewVPP(t, appletest.WithVPPAssets(
		appletest.VPPAsset{AdamID: "361309726", Total: 10},
		appletest.VPPAsset{AdamID: "1040297390", Total: 10}))
	dir := t.TempDir()
	vppCA := filepath.Join(dir, "vpp-ca.pem")
	if err := os.WriteFile(vppCA, fake.CACertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	apple, err := appletest.NewDeviceCA()
	if err != nil {
		t.Fatal(err)
	}
	deviceCA := filepath.Join(dir, "apple-device-ca.pem")
	if err := os.WriteFile(deviceCA, apple.RootCertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	sleep := func(ctx context.Context, d time.Duration) error {
		fake.CompleteEvents()
		return ctx.Err()
	}
	e := startWith(t, dsn, func(c *server.Config) {
		c.VPPURL, c.VPPCA = fake.URL(), vppCA
		c.PushTopic, c.AppleDeviceCA = testTopic, deviceCA
	}, server.WithVPPOptions(vpp.WithSleeper(sleep), vpp.WithPollInterval(time.Millisecond, 2), vpp.WithRateLimit(-1)))
	ctx := context.Background()

	if code, body := e.raw("POST", "/api/v1/vpp/tokens", "application/octet-stream", fake.ContentToken()); code != http.StatusCreated {
		t.Fatalf("import: %d %s", code, body)
	}
	const password = "correct horse battery"
	if code := e.api("POST", "/api/v1/users", map[string]string{"username": "carol", "password": password}, nil); code != http.StatusCreated {
		t.Fatalf("creating carol: %d", code)
	}
	var carol vppUserView
	if code := e.api("POST", "/api/v1/vpp/users", map[string]string{"username": "carol"}, &carol); code != http.StatusOK {
		t.Fatalf("registering carol: %d", code)
	}
	if err := fake.AcceptInvitation(carol.ClientUserID, "carol@icloud.example"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct{ adamID, kind string }{{"361309726", "app"}, {"1040297390", "book"}} {
		var p vppPlanView
		if code := e.api("POST", "/api/v1/vpp/assignments", map[string]string{"username": "carol", "adam_id": a.adamID, "kind": a.kind}, &p); code != http.StatusOK || p.Status != "assigned" {
			t.Fatalf("assigning %s %s: %d %+v", a.kind, a.adamID, code, p)
		}
	}

	cert, key, chain, err := apple.Issue("OTA-VPP-1")
	if err != nil {
		t.Fatal(err)
	}
	d, err := sim.EnrollOTA(ctx, e.url, "carol", password, sim.WithAppleIdentity(cert, key, chain...),
		sim.WithExtraRoots(e.srv.CA().Certificate()))
	if err != nil {
		t.Fatalf("EnrollOTA: %v", err)
	}
	got := map[string]int{}
	for range 2 {
		handled, err := d.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range handled {
			got[h.RequestType]++
		}
	}
	if got["InstallApplication"] != 1 || got["InstallMedia"] != 1 {
		t.Fatalf("commands received: %v, want one InstallApplication and one InstallMedia", got)
	}
	var plans struct {
		Assignments []vppPlanView `json:"assignments"`
	}
	e.api("GET", "/api/v1/vpp/assignments?username=carol", nil, &plans)
	for _, p := range plans.Assignments {
		if len(p.Installs) != 1 || p.Installs[0].DeviceID != d.UDID {
			t.Errorf("plan %+v not installed on %s", p, d.UDID)
		}
	}
}
