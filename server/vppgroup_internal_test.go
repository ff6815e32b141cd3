package server

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/bramley-mdm/bramley/directory"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeGroups lists groups' members as *directory.LDAP.Members does.
type fakeGroups map[string][]string

var errDirectoryDown = errors.New("ldap down")

func (g fakeGroups) Members(_ context.Context, groupDN string) ([]string, error) {
	if groupDN == "cn=broken" {
		return nil, errDirectoryDown
	}
	m, ok := g[groupDN]
	if !ok {
		return nil, directory.ErrNoSuchGroup
	}
	return m, nil
}

// TestVPPGroupMembers: a group the directory lacks is storage.ErrNotFound
// (a 404), a directory that cannot be asked stays an error of its own.
func TestVPPGroupMembers(t *testing.T) {
	members := vppGroupMembers(fakeGroups{"cn=staff": {"alice", "bob"}})
	for name, tc := range map[string]struct {
		group   string
		want    []string
		wantErr error
	}{
		"members":        {"cn=staff", []string{"alice", "bob"}, nil},
		"unknown group":  {"cn=nobody", nil, storage.ErrNotFound},
		"directory down": {"cn=broken", nil, errDirectoryDown},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := members(context.Background(), tc.group)
			if (tc.wantErr == nil) != (err == nil) || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("members(%q) error = %v, want %v", tc.group, err, tc.wantErr)
			}
			if tc.wantErr == errDirectoryDown && errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("members(%q) = %v: a directory down is not a missing group", tc.group, err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("members(%q) = %v, want %v", tc.group, got, tc.want)
			}
		})
	}
}
