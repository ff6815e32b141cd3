package directory_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/bramley-mdm/bramley/directory"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
)

// TestOTAGroupPolicy: directory users in the group pass, others and local
// accounts get a 403, and a directory that cannot answer is a 503.
func TestOTAGroupPolicy(t *testing.T) {
	s := startSlapd(t)
	d := directory.NewLDAP(s.Config())
	locals := func(names ...string) directory.LocalAccounts {
		return func(_ context.Context, u string) (bool, error) {
			for _, n := range names {
				if n == u {
					return true, nil
				}
			}
			return false, nil
		}
	}
	tests := []struct {
		name   string
		group  string
		local  directory.LocalAccounts
		user   string
		status int // 0: allowed
	}{
		{"member", groupDN, locals(), "alice", 0},
		{"memberUid of a posixGroup", "cn=mdm-posix,ou=groups," + base, locals(), "dora", 0},
		{"not a member", groupDN, locals(), "bob", http.StatusForbidden},
		{"unknown user", groupDN, locals(), "mallory", http.StatusForbidden},
		{"filter injection is escaped", groupDN, locals(), "*", http.StatusForbidden},
		{"local account, even with a directory namesake in the group", groupDN, locals("alice"), "alice", http.StatusForbidden},
		{"missing group", "cn=gone," + base, locals(), "alice", http.StatusServiceUnavailable},
		{"local accounts unreadable", groupDN, func(context.Context, string) (bool, error) { return false, errors.New("db down") }, "alice", http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.OTAGroupPolicy(tt.group, tt.local)(context.Background(), tt.user, enroll.OTAAttributes{Serial: "S1"})
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if status, _ := handler.Status(err); err == nil || status != tt.status {
				t.Fatalf("policy = %v (status %d), want %d", err, status, tt.status)
			}
		})
	}
}
