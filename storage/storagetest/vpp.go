package storagetest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/storage"
	"github.com/bramley-mdm/bramley/vpp"
)

func testVPPUsers(t *testing.T, s Store) {
	ctx := t.Context()
	_, err := s.VPPUser(ctx, "L", "alice")
	wantErr(t, err, storage.ErrNotFound, "VPPUser of an unknown user")
	a := vpp.UserRecord{Location: "L", UserID: "alice", ClientUserID: "c-a", Email: "a@example.com", CreatedAt: t0,
		UserState: vpp.UserState{Status: vpp.StatusRegistered, InviteCode: "INV-A"}}
	got, err := s.CreateVPPUser(ctx, a)
	must(t, err, "CreateVPPUser alice")
	equal(t, got, a, "created alice")
	// A second registration of the same person keeps the first clientUserId.
	again := a
	again.ClientUserID, again.CreatedAt = "c-other", at(time.Minute)
	got, err = s.CreateVPPUser(ctx, again)
	must(t, err, "CreateVPPUser alice again")
	equal(t, got, a, "alice registered twice")
	b := vpp.UserRecord{Location: "L", UserID: "bob", ClientUserID: "c-b", CreatedAt: at(time.Hour)}
	_, err = s.CreateVPPUser(ctx, b)
	must(t, err, "CreateVPPUser bob")

	rec, prev, err := s.UpdateVPPUser(ctx, "L", "c-a", vpp.UserState{Status: vpp.StatusAssociated, IDHash: "H"})
	must(t, err, "UpdateVPPUser alice")
	equal(t, prev, a.UserState, "alice before")
	equal(t, rec.UserState, vpp.UserState{Status: vpp.StatusAssociated, IDHash: "H", InviteCode: "INV-A"},
		"alice accepted keeps her invite code")
	_, _, err = s.UpdateVPPUser(ctx, "L", "c-b", vpp.UserState{Status: vpp.StatusAssociated, IDHash: "H"})
	must(t, err, "UpdateVPPUser bob")
	_, _, err = s.UpdateVPPUser(ctx, "other", "c-b", vpp.UserState{})
	wantErr(t, err, storage.ErrNotFound, "UpdateVPPUser at another location")

	shared, err := s.VPPUsersByIDHash(ctx, "L", "H")
	must(t, err, "VPPUsersByIDHash")
	equal(t, len(shared), 2, "users sharing H")
	none, err := s.VPPUsersByIDHash(ctx, "L", "nobody")
	must(t, err, "VPPUsersByIDHash none")
	equal(t, len(none), 0, "users of an unknown hash")
	all, err := s.VPPUsers(ctx, "L")
	must(t, err, "VPPUsers")
	equal(t, []string{all[0].UserID, all[1].UserID}, []string{"alice", "bob"}, "users oldest first")

	toks, err := s.ContentTokens(ctx)
	must(t, err, "ContentTokens empty")
	equal(t, len(toks), 0, "tokens of an empty store")
	tok := vpp.TokenRecord{Location: "L", LocationName: "Main", OrgName: "Org", Sealed: []byte("sealed"),
		ExpiresAt: at(365 * 24 * time.Hour), Claimed: true, CreatedAt: t0, UpdatedAt: t0}
	must(t, s.PutContentToken(ctx, tok), "PutContentToken")
	renewed := tok
	renewed.Sealed, renewed.CreatedAt, renewed.UpdatedAt = []byte("renewed"), at(time.Hour), at(time.Hour)
	must(t, s.PutContentToken(ctx, renewed), "PutContentToken renewed")
	toks, err = s.ContentTokens(ctx)
	must(t, err, "ContentTokens")
	renewed.CreatedAt = t0
	equal(t, toks, []vpp.TokenRecord{renewed}, "renewed token replaces the location's")
}

func testVPPPlans(t *testing.T, s Store) {
	ctx := t.Context()
	p := vpp.Plan{ID: "P1", Location: "L", Username: "alice", AdamID: "100", Kind: vpp.KindApp,
		Status: vpp.PlanPending, CreatedAt: t0, UpdatedAt: t0}
	got, err := s.CreatePlan(ctx, p)
	must(t, err, "CreatePlan")
	equal(t, got, p, "created plan")
	dup := p
	dup.ID = "P2"
	got, err = s.CreatePlan(ctx, dup)
	must(t, err, "CreatePlan again")
	equal(t, got.ID, "P1", "one plan per person and item")

	p.Status, p.Result, p.EventID, p.UpdatedAt = vpp.PlanAssigned, vpp.Assigned, "E1", at(time.Minute)
	must(t, s.UpdatePlan(ctx, p), "UpdatePlan")
	wantErr(t, s.UpdatePlan(ctx, vpp.Plan{ID: "nope"}), storage.ErrNotFound, "UpdatePlan unknown")

	// Racing deliveries record one install.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Go(func() {
			ok, err := s.RecordInstall(ctx, "P1", vpp.Install{DeviceID: "D1", CommandUUID: string(rune('A' + i)), CreatedAt: at(time.Hour)})
			if err != nil {
				t.Errorf("RecordInstall: %v", err)
			}
			if ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	equal(t, wins, 1, "installs recorded by racing callers")
	plans, err := s.Plans(ctx, "alice")
	must(t, err, "Plans")
	equal(t, len(plans), 1, "plans of alice")
	equal(t, plans[0].Status, vpp.PlanAssigned, "plan status")
	equal(t, len(plans[0].Installs), 1, "installs of the plan")
	must(t, s.DeleteInstall(ctx, "P1", "D1"), "DeleteInstall")
	must(t, s.DeleteInstall(ctx, "P1", "D1"), "DeleteInstall again")
	plans, err = s.Plans(ctx, "")
	must(t, err, "Plans all")
	equal(t, len(plans[0].Installs), 0, "installs after DeleteInstall")
	none, err := s.Plans(ctx, "bob")
	must(t, err, "Plans of bob")
	equal(t, len(none), 0, "plans of bob")

	_, err = s.DeviceOwner(ctx, "D1")
	wantErr(t, err, storage.ErrNotFound, "DeviceOwner without one")
	must(t, s.SetDeviceOwner(ctx, "D1", "bob", t0), "SetDeviceOwner")
	must(t, s.SetDeviceOwner(ctx, "D1", "alice", t0), "SetDeviceOwner again")
	must(t, s.SetDeviceOwner(ctx, "D2", "alice", t0), "SetDeviceOwner D2")
	owner, err := s.DeviceOwner(ctx, "D1")
	must(t, err, "DeviceOwner")
	equal(t, owner, "alice", "owner replaced")
	devs, err := s.OwnedDevices(ctx, "alice")
	must(t, err, "OwnedDevices")
	equal(t, slices.Equal(devs, []string{"D1", "D2"}), true, "devices of alice")
}
