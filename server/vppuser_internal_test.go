package server

import (
	"context"
	"errors"
	"testing"

	"github.com/bramley-mdm/bramley/storage"
)

// TestCheckVPPUser: a person for Apps and Books is a local account or a
// directory user; neither is storage.ErrNotFound, and a directory that
// cannot be asked is an error, not an unknown user.
func TestCheckVPPUser(t *testing.T) {
	local := func(_ context.Context, u string) error {
		if u == "alice" {
			return nil
		}
		return storage.ErrNotFound
	}
	down := errors.New("ldap down")
	dir := func(_ context.Context, u string) (bool, error) {
		switch u {
		case "dana":
			return true, nil
		case "broken":
			return false, down
		}
		return false, nil
	}
	check := checkVPPUser(local, dir)
	for name, tc := range map[string]struct {
		username string
		want     error
	}{
		"local account":  {"alice", nil},
		"directory user": {"dana", nil},
		"nobody":         {"nobody", storage.ErrNotFound},
		"directory down": {"broken", down},
	} {
		t.Run(name, func(t *testing.T) {
			err := check(context.Background(), tc.username)
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("check(%q) = %v, want %v", tc.username, err, tc.want)
			}
		})
	}
}
