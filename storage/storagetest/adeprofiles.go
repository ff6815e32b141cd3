package storagetest

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/storage"
)

func adeProfileDef(id string, created time.Time) ade.ProfileDefinition {
	p := ade.NewProfile("Profile "+id, "https://mdm.example.com/ade/enroll")
	p.IsSupervised, p.IsMDMRemovable, p.AwaitDeviceConfigured = true, false, true
	p.SkipSetupItems, p.Department = []string{"Siri", "TOS"}, "IT"
	return ade.ProfileDefinition{ID: id, Name: "name " + id, Profile: *p, CreatedAt: created, UpdatedAt: created}
}

func testADEProfiles(t *testing.T, s Store) {
	ctx := t.Context()
	ps, err := s.ADEProfiles(ctx)
	must(t, err, "ADEProfiles of an empty store")
	equal(t, len(ps), 0, "profiles of an empty store")
	_, err = s.ADEProfile(ctx, "P1")
	wantErr(t, err, storage.ErrNotFound, "ADEProfile of an unknown ID")

	p1, p2 := adeProfileDef("P1", t0), adeProfileDef("P2", at(time.Minute))
	must(t, s.CreateADEProfile(ctx, p2), "CreateADEProfile P2")
	must(t, s.CreateADEProfile(ctx, p1), "CreateADEProfile P1")
	wantErr(t, s.CreateADEProfile(ctx, p1), storage.ErrConflict, "CreateADEProfile P1 again")
	p1.ProfileUUIDs, p2.ProfileUUIDs = map[string]string{}, map[string]string{}
	got, err := s.ADEProfile(ctx, "P1")
	must(t, err, "ADEProfile P1")
	equal(t, got, p1, "profile P1")

	wantErr(t, s.SetADEProfileUUID(ctx, "P1", "A", "UUID-1", at(time.Hour)), storage.ErrNotFound, "SetADEProfileUUID of an unknown token")
	putToken(t, s, adeToken("A", "CK_a", t0))
	putToken(t, s, adeToken("B", "CK_b", t0))
	wantErr(t, s.SetADEProfileUUID(ctx, "P9", "A", "UUID-1", at(time.Hour)), storage.ErrNotFound, "SetADEProfileUUID of an unknown profile")
	must(t, s.SetADEProfileUUID(ctx, "P1", "A", "UUID-0", at(time.Hour)), "SetADEProfileUUID")
	must(t, s.SetADEProfileUUID(ctx, "P1", "A", "UUID-1", at(time.Hour)), "SetADEProfileUUID replaced")
	must(t, s.SetADEProfileUUID(ctx, "P1", "A", "UUID-1", at(time.Hour)), "SetADEProfileUUID again")
	must(t, s.SetADEProfileUUID(ctx, "P1", "B", "UUID-2", at(time.Hour)), "SetADEProfileUUID B")
	p1.ProfileUUIDs = map[string]string{"A": "UUID-1", "B": "UUID-2"}
	ps, err = s.ADEProfiles(ctx)
	must(t, err, "ADEProfiles")
	equal(t, ps, []ade.ProfileDefinition{p1, p2}, "profiles, oldest first")
}

func testADEAssignmentRules(t *testing.T, s Store) {
	ctx := t.Context()
	rules, err := s.AssignmentRules(ctx)
	must(t, err, "AssignmentRules of an empty store")
	equal(t, len(rules), 0, "rules of an empty store")
	must(t, s.CreateADEProfile(ctx, adeProfileDef("P1", t0)), "CreateADEProfile")
	must(t, s.CreateADEProfile(ctx, adeProfileDef("P2", t0)), "CreateADEProfile")
	want := []ade.AssignmentRule{
		{ProfileID: "P2", Match: ade.Match{Serials: []string{"S1", "S2"}}},
		{ProfileID: "P2", Match: ade.Match{Family: "iPad"}},
		{ProfileID: "P1", Match: ade.Match{Model: "MacBook Air"}},
		{ProfileID: "P1", Match: ade.Match{Default: true}},
	}
	must(t, s.SetAssignmentRules(ctx, want), "SetAssignmentRules")
	must(t, s.SetAssignmentRules(ctx, want), "SetAssignmentRules again")
	rules, err = s.AssignmentRules(ctx)
	must(t, err, "AssignmentRules")
	equal(t, rules, want, "rules in order")

	// A rule naming an unknown profile changes nothing.
	wantErr(t, s.SetAssignmentRules(ctx, []ade.AssignmentRule{{ProfileID: "P1", Match: ade.Match{Default: true}},
		{ProfileID: "P9", Match: ade.Match{Default: true}}}), storage.ErrNotFound, "SetAssignmentRules with an unknown profile")
	rules, err = s.AssignmentRules(ctx)
	must(t, err, "AssignmentRules")
	equal(t, rules, want, "rules after a refused change")

	must(t, s.SetAssignmentRules(ctx, nil), "SetAssignmentRules to none")
	rules, err = s.AssignmentRules(ctx)
	must(t, err, "AssignmentRules")
	equal(t, len(rules), 0, "rules after clearing")
}

func testADERecordAssignments(t *testing.T, s Store) {
	ctx := t.Context()
	putToken(t, s, adeToken("A", "CK_a", t0))
	must(t, s.UpsertDevices(ctx, "A", []ade.Device{
		{SerialNumber: "S1", ProfileStatus: "empty"},
		{SerialNumber: "S2", ProfileStatus: "empty"},
	}), "UpsertDevices")
	results := []ade.Assignment{
		{SerialNumber: "S1", ProfileID: "P1", ProfileUUID: "UUID-1", Result: ade.StatusSuccess, At: at(time.Hour)},
		{SerialNumber: "S2", ProfileID: "P1", ProfileUUID: "UUID-1", Result: ade.StatusNotAccessible, At: at(time.Hour)},
		{SerialNumber: "S9", ProfileID: "P1", ProfileUUID: "UUID-1", Result: ade.StatusSuccess, At: at(time.Hour)},
	}
	must(t, s.RecordAssignments(ctx, "A", results), "RecordAssignments")
	must(t, s.RecordAssignments(ctx, "A", results), "RecordAssignments again")
	devices, err := s.ADEDevices(ctx, "A")
	must(t, err, "ADEDevices")
	equal(t, devices, []ade.DeviceRecord{
		{TokenID: "A", SerialNumber: "S1", ProfileStatus: "assigned", ProfileUUID: "UUID-1", ProfileAssignTime: at(time.Hour),
			AssignProfileID: "P1", AssignResult: ade.StatusSuccess, AssignTime: at(time.Hour)},
		{TokenID: "A", SerialNumber: "S2", ProfileStatus: "empty",
			AssignProfileID: "P1", AssignResult: ade.StatusNotAccessible, AssignTime: at(time.Hour)},
	}, "devices after assignment (the unknown S9 skipped)")

	// Apple's next sync replaces the profile fields and keeps the outcome.
	must(t, s.UpsertDevices(ctx, "A", []ade.Device{{SerialNumber: "S1", ProfileStatus: "pushed", ProfileUUID: "UUID-1",
		ProfileAssignTime: at(time.Hour), OpType: ade.OpModified, OpDate: at(2 * time.Hour)}}), "UpsertDevices sync")
	devices, err = s.ADEDevices(ctx, "A")
	must(t, err, "ADEDevices")
	equal(t, devices[0], ade.DeviceRecord{TokenID: "A", SerialNumber: "S1", ProfileStatus: "pushed", ProfileUUID: "UUID-1",
		ProfileAssignTime: at(time.Hour), OpType: ade.OpModified, OpDate: at(2 * time.Hour),
		AssignProfileID: "P1", AssignResult: ade.StatusSuccess, AssignTime: at(time.Hour)}, "device after the next sync")

	unlock, ok, err := s.Lock(ctx, "storagetest."+rand.Text())
	must(t, err, "Lock")
	equal(t, ok, true, "Lock of a free lock")
	unlock()
}
