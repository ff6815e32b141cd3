package server_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/bramley-mdm/bramley/server"
)

// TestNetworkUserDirectoryWired checks that --ldap-url reaches the
// check-in service: with a directory that cannot answer, a network user's
// UserAuthenticate is 503 (never 401, and not the 410 of a server without
// a directory), and the device's own check-ins go on working. Lookups
// against a real slapd are TestNetworkUsersFromSlapd.
func TestNetworkUserDirectoryWired(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := fmt.Sprintf("ldap://%s", ln.Addr())
	ln.Close()
	tests := []struct {
		name string
		edit func(*server.Config)
		want int
	}{
		{"no directory", func(*server.Config) {}, http.StatusGone},
		{"directory down", func(c *server.Config) {
			c.LDAP.URL, c.LDAP.BaseDN, c.LDAP.GUIDAttr = down, "dc=example,dc=test", "entryUUID"
		}, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, "", tt.edit)
			ctx := context.Background()
			dev := e.device()
			if err := dev.Enroll(ctx); err != nil {
				t.Fatal(err)
			}
			_, err := dev.Send(ctx, "/mdm/checkin", checkinType, plistDict(t, map[string]any{
				"MessageType": "UserAuthenticate", "UDID": dev.UDID,
				"UserID": "A1B2C3D4-0000-4000-8000-00000000BEEF", "UserShortName": "alice",
			}))
			if got := statusOf(err); got != tt.want {
				t.Fatalf("UserAuthenticate: %v (status %d), want %d", err, got, tt.want)
			}
			if err := dev.TokenUpdate(ctx); err != nil {
				t.Fatalf("device TokenUpdate after UserAuthenticate: %v", err)
			}
		})
	}
}
