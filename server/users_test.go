package server_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestManagedUsers plays a Mac enrolled by hand (Apple's "MDM Protocol
// Extensions", macOS user channel): the local user who installed the
// profile becomes a managed user with its own channel, token and queue; a
// second local user is not managed. User and device profiles stay apart,
// device-only commands are refused for the user, and a push to the user
// reaches the user's token.
func TestManagedUsers(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			apns := appletest.NewAPNs(t)
			caFile := filepath.Join(t.TempDir(), "apns-ca.pem")
			if err := os.WriteFile(caFile, apns.CACertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			e := start(t, db(t), func(c *server.Config) { c.APNsURL = apns.URL(); c.APNsCA = caFile })
			certPEM, keyPEM := apns.PushCertificate(testTopic)
			if code := e.api("PUT", "/api/v1/push-certificates", map[string]any{
				"certificate": string(certPEM), "private_key": string(keyPEM),
			}, nil); code != http.StatusOK {
				t.Fatalf("push certificate upload: %d", code)
			}

			mac := e.device(sim.WithTopic(testTopic), sim.WithMac())
			if err := mac.Enroll(ctx); err != nil {
				t.Fatal(err)
			}
			alice := sim.NewUser("alice", "Alice Installer") // installed the profile
			bob := sim.NewUser("bob", "Bob Other")           // never managed
			if err := mac.UserTokenUpdate(ctx, alice); err != nil {
				t.Fatalf("user TokenUpdate: %v", err)
			}
			aliceID := mac.UDID + ":" + alice.UserID

			type user struct {
				ID            string `json:"id"`
				UserID        string `json:"user_id"`
				UserShortName string `json:"user_short_name"`
				UserLongName  string `json:"user_long_name"`
				Topic         string `json:"topic"`
				Enabled       bool   `json:"enabled"`
				LastSeen      string `json:"last_seen"`
			}
			users := func() []user {
				t.Helper()
				var out struct{ Users []user }
				if code := e.api("GET", "/api/v1/devices/"+mac.UDID+"/users", nil, &out); code != http.StatusOK {
					t.Fatalf("GET users: %d", code)
				}
				return out.Users
			}
			want := user{ID: aliceID, UserID: alice.UserID, UserShortName: "alice", UserLongName: "Alice Installer",
				Topic: testTopic, Enabled: true}
			got := users()
			if len(got) != 1 || got[0].LastSeen == "" {
				t.Fatalf("users = %+v, want alice only", got)
			}
			if got[0].LastSeen = ""; got[0] != want {
				t.Fatalf("user = %+v, want %+v", got[0], want)
			}
			if code := e.api("GET", "/api/v1/devices/NO-SUCH-MAC/users", nil, nil); code != http.StatusNotFound {
				t.Fatalf("users of an unknown device: %d, want 404", code)
			}

			// Bad input, nothing stored: another UserID under alice's
			// short name, and a user channel of a device never enrolled.
			forged := bob
			forged.ShortName = "alice"
			if err := mac.UserTokenUpdate(ctx, forged); !isStatus(err, http.StatusForbidden) ||
				!strings.Contains(err.Error(), "another UserID") {
				t.Fatalf("changed UserID: %v, want 403 with the reason", err)
			}
			if got := users(); len(got) != 1 || got[0].UserID != alice.UserID {
				t.Fatalf("users after a changed UserID = %+v", got)
			}
			stranger := e.device(sim.WithTopic(testTopic), sim.WithMac())
			if err := stranger.UserTokenUpdate(ctx, bob); !isStatus(err, http.StatusForbidden) {
				t.Fatalf("user channel of an unknown device: %v, want 403", err)
			}
			if code := e.api("GET", "/api/v1/devices/"+stranger.UDID, nil, nil); code != http.StatusNotFound {
				t.Fatalf("unknown device after its user's TokenUpdate: %d, want 404", code)
			}

			// A user profile goes to the user channel, and only its
			// connect delivers it.
			p := profile.New("com.example.alice.dock")
			p.PayloadScope = "User"
			p.Add(&profile.Raw{Header: profile.Header{PayloadType: "com.apple.dock"}, Keys: map[string]any{"orientation": "left"}})
			userProfile, err := p.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			install := map[string]any{"request_type": "InstallProfile", "profile": userProfile, "no_push": true}
			uuid := e.enqueue(aliceID, install)
			if handled, err := mac.Connect(ctx); err != nil || len(handled) != 0 {
				t.Fatalf("device channel connect: %+v, %v; want nothing", handled, err)
			}
			handled, err := mac.ConnectUser(ctx, alice)
			if err != nil || len(handled) != 1 || handled[0].CommandUUID != uuid || handled[0].Status != "Acknowledged" {
				t.Fatalf("user channel connect: %+v, %v", handled, err)
			}
			if cmd := e.command(uuid); len(cmd.Targets) != 1 || cmd.Targets[0].EnrollmentID != aliceID || cmd.Targets[0].Status != "Acknowledged" {
				t.Fatalf("command = %+v", cmd)
			}

			var refusal struct{ Error string }
			if code := e.api("POST", "/api/v1/devices/"+mac.UDID+"/commands", install, &refusal); code != http.StatusBadRequest ||
				!strings.Contains(refusal.Error, "PayloadScope User") {
				t.Fatalf("user profile to the device channel: %d %q, want 400 with the reason", code, refusal.Error)
			}
			if code := e.api("POST", "/api/v1/devices/"+aliceID+"/commands", map[string]any{"request_type": "DeviceLock"}, &refusal); code != http.StatusBadRequest ||
				!strings.Contains(refusal.Error, "DeviceLock is not allowed on a user channel") {
				t.Fatalf("DeviceLock to a user: %d %q, want 400 with the reason", code, refusal.Error)
			}

			// A push to the user carries the user's token and PushMagic.
			before := len(apns.Received())
			var res struct {
				Results []struct {
					Status int `json:"status"`
				} `json:"results"`
			}
			if code := e.api("POST", "/api/v1/devices/"+aliceID+"/push", nil, &res); code != http.StatusOK ||
				len(res.Results) != 1 || res.Results[0].Status != http.StatusOK {
				t.Fatalf("push to the user: %d %+v", code, res)
			}
			pushes := apns.Received()[before:]
			if len(pushes) != 1 || !bytes.Equal(pushes[0].Token, alice.Token) || string(pushes[0].Body) != `{"mdm":"`+alice.PushMagic+`"}` {
				t.Fatalf("pushes to the user = %+v", pushes)
			}
			if bytes.Equal(alice.Token, mac.Token) || alice.PushMagic == mac.PushMagic {
				t.Fatal("the user shares the device's push identity")
			}
		})
	}
}
