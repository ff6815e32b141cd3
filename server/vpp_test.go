package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/vpp"
)

type vppUserView struct {
	Username           string   `json:"username"`
	ClientUserID       string   `json:"client_user_id"`
	Status             string   `json:"status"`
	IDHash             string   `json:"id_hash"`
	InviteCode         string   `json:"invite_code"`
	InvitationURL      string   `json:"invitation_url"`
	Accepted           bool     `json:"accepted"`
	SharedAppleAccount bool     `json:"shared_apple_account"`
	SharedWith         []string `json:"shared_with"`
}

type vppPlanView struct {
	Username string `json:"username"`
	DeviceID string `json:"device_id"`
	AdamID   string `json:"adam_id"`
	Status   string `json:"status"`
	Result   string `json:"result"`
	EventID  string `json:"event_id"`
	Installs []struct {
		DeviceID    string `json:"device_id"`
		CommandUUID string `json:"command_uuid"`
	} `json:"installs"`
}

// TestVPPPeopleBeforeDevices: a person is registered and invited, accepts,
// gets two apps before having a device; their device enrolls and gets one
// InstallApplication per app, only once Apple's assignment completed. A
// second person accepting with the same Apple Account is shown as shared,
// and an assignment Apple answers 9616 leaves one licence and a
// consistent plan.
func TestVPPPeopleBeforeDevices(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			testVPPPeopleBeforeDevices(t, db(t))
		})
	}
}

func testVPPPeopleBeforeDevices(t *testing.T, db string) {
	fake := appletest.NewVPP(t, appletest.WithVPPAssets(
		appletest.VPPAsset{AdamID: "361309726", Total: 10},
		appletest.VPPAsset{AdamID: "408709785", Total: 10}))
	caFile := filepath.Join(t.TempDir(), "vpp-ca.pem")
	if err := os.WriteFile(caFile, fake.CACertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	// Apple carries out events while the client waits, unless the test
	// holds them back.
	var complete atomic.Bool
	complete.Store(true)
	sleep := func(ctx context.Context, d time.Duration) error {
		if complete.Load() {
			fake.CompleteEvents()
		}
		return ctx.Err()
	}
	e := startWith(t, db, func(c *server.Config) { c.VPPURL, c.VPPCA = fake.URL(), caFile },
		server.WithVPPOptions(vpp.WithSleeper(sleep), vpp.WithPollInterval(time.Millisecond, 2), vpp.WithRateLimit(-1)))
	ctx := context.Background()

	// Another server holds the location: 409 naming it, then taken over.
	fake.ClaimAs("other-install", "OtherMDM")
	if code, body := e.raw("POST", "/api/v1/vpp/tokens", "application/octet-stream", fake.ContentToken()); code != http.StatusConflict || !strings.Contains(string(body), "OtherMDM") {
		t.Fatalf("import into a claimed location: %d %s", code, body)
	}
	if code, body := e.raw("POST", "/api/v1/vpp/tokens?force=true", "application/octet-stream", fake.ContentToken()); code != http.StatusCreated {
		t.Fatalf("import: %d %s", code, body)
	}
	var toks struct {
		Tokens []struct {
			Location string `json:"location"`
			DaysLeft int    `json:"days_left"`
			Expiring bool   `json:"expiring"`
		} `json:"tokens"`
	}
	e.api("GET", "/api/v1/vpp/tokens", nil, &toks)
	if len(toks.Tokens) != 1 || toks.Tokens[0].Location != fake.UID() || toks.Tokens[0].DaysLeft < 300 || toks.Tokens[0].Expiring {
		t.Fatalf("tokens: %+v", toks)
	}

	for _, u := range []string{"alice", "bob"} {
		if code := e.api("POST", "/api/v1/users", map[string]string{"username": u, "password": "correct horse battery"}, nil); code != http.StatusCreated {
			t.Fatalf("creating user %s: %d", u, code)
		}
	}
	register := func(u string) vppUserView {
		t.Helper()
		var v vppUserView
		if code := e.api("POST", "/api/v1/vpp/users", map[string]string{"username": u}, &v); code != http.StatusOK {
			t.Fatalf("registering %s: %d %+v", u, code, v)
		}
		return v
	}
	alice := register("alice")
	if alice.InviteCode == "" || alice.InvitationURL == "" || alice.Accepted {
		t.Fatalf("alice's invitation: %+v", alice)
	}
	if again := register("alice"); again.ClientUserID != alice.ClientUserID || again.InviteCode != alice.InviteCode {
		t.Fatalf("second registration of alice: %+v, want %+v", again, alice)
	}
	if code := e.api("POST", "/api/v1/vpp/users", map[string]string{"username": "nobody"}, nil); code != http.StatusNotFound {
		t.Fatalf("registering an unknown user: %d", code)
	}
	if err := fake.AcceptInvitation(alice.ClientUserID, "alice@icloud.example"); err != nil {
		t.Fatal(err)
	}
	sync := func() {
		t.Helper()
		if code, body := e.raw("POST", "/api/v1/vpp/sync", "", nil); code != http.StatusOK {
			t.Fatalf("sync: %d %s", code, body)
		}
	}
	sync()

	// Two apps before any device; Apple has not carried them out yet.
	complete.Store(false)
	assign := func(u, adamID string) vppPlanView {
		t.Helper()
		var p vppPlanView
		if code := e.api("POST", "/api/v1/vpp/assignments", map[string]string{"username": u, "adam_id": adamID, "kind": "app"}, &p); code != http.StatusOK {
			t.Fatalf("assigning %s to %s: %d %+v", adamID, u, code, p)
		}
		return p
	}
	for _, app := range []string{"361309726", "408709785"} {
		if p := assign("alice", app); p.Status != "pending" || p.EventID == "" {
			t.Fatalf("assignment before Apple completed: %+v", p)
		}
	}

	// Her device enrolls and is hers; nothing may be installed yet.
	d := e.device()
	if err := d.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	if code, body := e.raw("PUT", "/api/v1/devices/"+d.UDID+"/owner", "application/json", []byte(`{"username":"alice"}`)); code != http.StatusNoContent {
		t.Fatalf("setting owner: %d %s", code, body)
	}
	if err := d.TokenUpdate(ctx); err != nil {
		t.Fatal(err)
	}
	handled, err := d.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(handled) != 0 {
		t.Fatalf("commands before the assignment completed: %+v", handled)
	}

	// Apple completes; the sync finds it and queues the installs.
	fake.CompleteEvents()
	sync()
	installs := map[string]int{}
	for range 3 { // further check-ins and syncs add nothing
		handled, err := d.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range handled {
			if h.RequestType != "InstallApplication" {
				t.Errorf("unexpected %s", h.RequestType)
			}
			installs[h.CommandUUID]++
		}
		if err := d.TokenUpdate(ctx); err != nil {
			t.Fatal(err)
		}
		sync()
	}
	var plans struct {
		Assignments []vppPlanView `json:"assignments"`
	}
	e.api("GET", "/api/v1/vpp/assignments?username=alice", nil, &plans)
	if len(plans.Assignments) != 2 || len(installs) != 2 {
		t.Fatalf("plans %+v, installs received %v", plans.Assignments, installs)
	}
	for _, p := range plans.Assignments {
		if p.Status != "assigned" || len(p.Installs) != 1 || p.Installs[0].DeviceID != d.UDID || installs[p.Installs[0].CommandUUID] != 1 {
			t.Errorf("plan %+v; installs received %v", p, installs)
		}
		e.command(p.Installs[0].CommandUUID) // it exists
	}

	// Bob accepts his own invitation with Alice's Apple Account.
	complete.Store(true)
	bob := register("bob")
	if bob.InviteCode == "" || bob.InviteCode == alice.InviteCode {
		t.Fatalf("bob's invitation: %+v", bob)
	}
	if err := fake.AcceptInvitation(bob.ClientUserID, "alice@icloud.example"); err != nil {
		t.Fatal(err)
	}
	// Before bramley has heard of it, an assignment to Bob earns a 9616:
	// done, and no second licence.
	p := assign("bob", "361309726")
	if p.Status != "assigned" || p.Result != "already_assigned" {
		t.Fatalf("assignment answered 9616: %+v", p)
	}
	if h := fake.Holders("361309726"); !slices.Equal(h, []string{alice.ClientUserID}) {
		t.Fatalf("holders of 361309726: %v", h)
	}
	sync()
	var users struct {
		Users []vppUserView `json:"users"`
	}
	e.api("GET", "/api/v1/vpp/users", nil, &users)
	if len(users.Users) != 2 {
		t.Fatalf("users: %+v", users)
	}
	for _, u := range users.Users {
		if !u.Accepted || !u.SharedAppleAccount || u.IDHash != users.Users[0].IDHash || len(u.SharedWith) != 1 {
			t.Errorf("user %+v not shown as sharing an Apple Account", u)
		}
	}
	// Repeated: still one plan, one licence, no request to Apple.
	before := fake.CountRequests("POST", "/assets/associate")
	if again := assign("bob", "361309726"); again.Status != "assigned" {
		t.Fatalf("repeated assignment: %+v", again)
	}
	if n := fake.CountRequests("POST", "/assets/associate"); n != before {
		t.Errorf("repeated assignment asked Apple again (%d → %d)", before, n)
	}
	e.api("GET", "/api/v1/vpp/assignments?username=bob", nil, &plans)
	if len(plans.Assignments) != 1 {
		t.Errorf("bob's plans: %+v", plans.Assignments)
	}
	if assigned, _ := fake.Counts("361309726"); assigned != 1 {
		t.Errorf("361309726 assigned %d times, want 1", assigned)
	}
}
