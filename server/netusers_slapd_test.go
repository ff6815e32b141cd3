package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/directory/directorytest"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestNetworkUsersFromSlapd plays a Mac with local and network accounts
// against a real OpenLDAP directory (Apple's "MDM Protocol Extensions",
// UserAuthenticate): the local user who installed the profile is managed,
// a second local user is not, a network user the directory knows by its
// GUID (entryUUID here; apple-generateduid in Open Directory) is accepted
// without an AuthToken and managed, and one it does not know is declined
// with 410 while the device goes on checking in.
func TestNetworkUsersFromSlapd(t *testing.T) {
	dir := directorytest.StartSlapd(t, directorytest.User{UID: "carol", Password: "carol password"})
	// Macs send GUIDs in upper case; entryUUID matching ignores case.
	carolGUID := strings.ToUpper(dir.EntryUUID(t, directorytest.UserDN("carol")))
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := start(t, db(t), func(c *server.Config) {
				c.LDAP = dir.Config()
				c.LDAP.GUIDAttr = "entryUUID"
			})
			mac := e.device(sim.WithTopic(testTopic), sim.WithMac())
			if err := mac.Enroll(ctx); err != nil {
				t.Fatal(err)
			}
			// alice installed the profile; a second local user's agent
			// never speaks, so only the users list can show it unmanaged.
			alice := sim.NewUser("alice", "Alice Installer")
			if err := mac.UserTokenUpdate(ctx, alice); err != nil {
				t.Fatalf("installing user's TokenUpdate: %v", err)
			}

			userAuthenticate := func(u sim.User) ([]byte, error) {
				return mac.Send(ctx, "/mdm/checkin", checkinType, plistDict(t, map[string]any{
					"MessageType": mdm.MessageUserAuthenticate, "UDID": mac.UDID,
					"UserID": u.UserID, "UserShortName": u.ShortName, "UserLongName": u.LongName,
				}))
			}
			carol := sim.NewUser("carol", "Carol Network")
			carol.UserID = carolGUID
			body, err := userAuthenticate(carol)
			if err != nil {
				t.Fatalf("network user's UserAuthenticate: %v", err)
			}
			var challenge map[string]any
			if err := plist.Unmarshal(body, &challenge); err != nil {
				t.Fatalf("UserAuthenticate answer %q: %v", body, err)
			}
			if v, ok := challenge["DigestChallenge"]; !ok || v != "" || len(challenge) != 1 {
				t.Fatalf("UserAuthenticate answer = %v, want an empty DigestChallenge", challenge)
			}
			if err := mac.UserTokenUpdate(ctx, carol); err != nil {
				t.Fatalf("network user's TokenUpdate: %v", err)
			}

			mallory := sim.NewUser("mallory", "Not In The Directory")
			if _, err := userAuthenticate(mallory); statusOf(err) != http.StatusGone {
				t.Fatalf("unknown network user's UserAuthenticate: %v (status %d), want 410", err, statusOf(err))
			}
			if err := mac.TokenUpdate(ctx); err != nil {
				t.Fatalf("device TokenUpdate after a declined user: %v", err)
			}

			var out struct {
				Users []struct {
					UserID        string `json:"user_id"`
					UserShortName string `json:"user_short_name"`
					Enabled       bool   `json:"enabled"`
				}
			}
			if code := e.api("GET", "/api/v1/devices/"+mac.UDID+"/users", nil, &out); code != http.StatusOK {
				t.Fatalf("GET users: %d", code)
			}
			managed := map[string]bool{}
			for _, u := range out.Users {
				if !u.Enabled {
					t.Errorf("user %s (%s) not enabled", u.UserShortName, u.UserID)
				}
				managed[u.UserID] = true
			}
			if len(out.Users) != 2 || !managed[alice.UserID] || !managed[carolGUID] {
				t.Fatalf("users = %+v, want alice and carol (%s) only", out.Users, carolGUID)
			}
		})
	}
}
