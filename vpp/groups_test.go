package vpp_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/storage"
	"github.com/bramley-mdm/bramley/storage/sqlite"
	"github.com/bramley-mdm/bramley/vpp"
)

// plainSealer keeps tokens as they are: sealing is pki's business.
type plainSealer struct{}

func (plainSealer) Seal(p []byte) ([]byte, error) { return p, nil }
func (plainSealer) Open(p []byte) ([]byte, error) { return p, nil }

// noInstaller: no person in this test has a device.
type noInstaller struct{}

func (noInstaller) Install(context.Context, string, string, vpp.Plan) error { return nil }

// fakeDirectory lists groups' members as *directory.LDAP.Members would.
type fakeDirectory map[string][]string

func (d fakeDirectory) members(_ context.Context, groupDN string) ([]string, error) {
	m, ok := d[groupDN]
	if !ok {
		return nil, fmt.Errorf("group %q: %w", groupDN, storage.ErrNotFound)
	}
	return m, nil
}

// TestAssignGroup: a group's members who are bramley users are registered
// and assigned the item, two on one Apple Account spend one licence, a
// member bramley cannot register is reported and skipped; an unknown
// group and a server without a directory are refused.
func TestAssignGroup(t *testing.T) {
	ctx := context.Background()
	const adamID, staff = "361309726", "cn=staff,ou=groups,dc=example,dc=com"
	fake := appletest.NewVPP(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: adamID, Total: 10}))
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "bramley.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	users := map[string]bool{"alice": true, "bob": true, "dana": true}
	dir := fakeDirectory{staff: {"alice", "bob", "carol", "dana"}}
	svcOpts := func(extra ...vpp.ServiceOption) []vpp.ServiceOption {
		return append([]vpp.ServiceOption{
			vpp.WithServiceClientOptions(vpp.WithURL(fake.URL()), vpp.WithRootCAs(fake.RootCAs()),
				vpp.WithMDMInfo(vpp.MDMInfo{ID: "bramley-test", Name: "bramley", Metadata: "test"}),
				vpp.WithSleeper(func(ctx context.Context, _ time.Duration) error { fake.CompleteEvents(); return ctx.Err() }),
				vpp.WithPollInterval(time.Millisecond, 2), vpp.WithRateLimit(-1)),
			vpp.WithUserCheck(func(_ context.Context, u string) error {
				if users[u] {
					return nil
				}
				return storage.ErrNotFound
			}),
		}, extra...)
	}
	svc := vpp.NewService(store, plainSealer{}, noInstaller{}, svcOpts(vpp.WithGroupMembers(dir.members))...)
	if _, err := svc.ImportToken(ctx, fake.ContentToken(), false); err != nil {
		t.Fatal(err)
	}
	// Alice and bob accept with one Apple Account before the group
	// assignment; dana is registered by it.
	for _, u := range []string{"alice", "bob"} {
		p, err := svc.RegisterUser(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if err := fake.AcceptInvitation(p.ClientUserID, "family@icloud.example"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	for name, tc := range map[string]struct {
		svc   *vpp.Service
		group string
		want  error
	}{
		"unknown group": {svc, "cn=nobody,ou=groups,dc=example,dc=com", vpp.ErrUnknownGroup},
		"no directory":  {vpp.NewService(store, plainSealer{}, noInstaller{}, svcOpts()...), staff, vpp.ErrNoDirectory},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := tc.svc.AssignGroup(ctx, tc.group, adamID, vpp.KindApp); !errors.Is(err, tc.want) {
				t.Fatalf("AssignGroup = %v, want %v", err, tc.want)
			}
		})
	}

	for round := range 2 { // the second asks Apple nothing new
		outs, err := svc.AssignGroup(ctx, staff, adamID, vpp.KindApp)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]vpp.GroupOutcome{}
		for _, o := range outs {
			got[o.Username] = o
		}
		if len(outs) != 4 {
			t.Fatalf("round %d: outcomes %+v, want one per member", round, outs)
		}
		for _, u := range []string{"alice", "bob", "dana"} {
			if o := got[u]; o.Err != nil || o.Plan.Status != vpp.PlanAssigned || o.Plan.Username != u {
				t.Errorf("round %d: %s: %+v, want an assigned plan", round, u, o)
			}
		}
		if o := got["carol"]; !errors.Is(o.Err, vpp.ErrUnknownUser) || o.Plan.ID != "" {
			t.Errorf("round %d: carol: %+v, want ErrUnknownUser and no plan", round, o)
		}
		// One licence for alice and bob's shared account, one for dana.
		if assigned, _ := fake.Counts(adamID); assigned != 2 {
			t.Errorf("round %d: %d licences assigned, want 2", round, assigned)
		}
	}
}
