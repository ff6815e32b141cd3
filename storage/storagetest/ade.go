package storagetest

import (
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/storage"
)

func adeToken(id, consumerKey string, created time.Time) ade.Token {
	return ade.Token{ID: id, ConsumerKey: consumerKey, AccessTokenExpiry: created.Add(365 * 24 * time.Hour),
		ServerName: "server " + id, CreatedAt: created, UpdatedAt: created, Sealed: []byte("sealed " + id)}
}

func putToken(t *testing.T, s Store, tok ade.Token) ade.Token {
	t.Helper()
	stored, err := s.PutToken(t.Context(), tok)
	must(t, err, "PutToken %s", tok.ID)
	return stored
}

func testADETokens(t *testing.T, s Store) {
	ctx := t.Context()
	tokens, err := s.Tokens(ctx)
	must(t, err, "Tokens of an empty store")
	equal(t, len(tokens), 0, "tokens of an empty store")
	_, err = s.Token(ctx, "nope")
	wantErr(t, err, storage.ErrNotFound, "Token of an unknown ID")

	a := putToken(t, s, adeToken("A", "CK_a", t0))
	equal(t, a, adeToken("A", "CK_a", t0), "stored token A")
	b := putToken(t, s, adeToken("B", "CK_b", at(time.Minute)))
	got, err := s.Token(ctx, "B")
	must(t, err, "Token B")
	equal(t, got, b, "token B")

	// A renewed token of the same MDM server keeps the first one's ID.
	renewed := adeToken("A2", "CK_a", at(time.Hour))
	renewed.ServerName, renewed.Sealed = "renamed", []byte("new secrets")
	stored := putToken(t, s, renewed)
	want := a
	want.AccessTokenExpiry, want.ServerName, want.Sealed, want.UpdatedAt =
		renewed.AccessTokenExpiry, "renamed", []byte("new secrets"), at(time.Hour)
	equal(t, stored, want, "renewed token")
	equal(t, putToken(t, s, renewed), want, "renewed token again")
	_, err = s.Token(ctx, "A2")
	wantErr(t, err, storage.ErrNotFound, "Token under the renewal's own ID")

	tokens, err = s.Tokens(ctx)
	must(t, err, "Tokens")
	equal(t, tokens, []ade.Token{want, b}, "tokens, oldest first")
}

func testADECursor(t *testing.T, s Store) {
	ctx := t.Context()
	_, err := s.Cursor(ctx, "A")
	wantErr(t, err, storage.ErrNotFound, "Cursor of an unknown token")
	wantErr(t, s.SetCursor(ctx, "A", "c1"), storage.ErrNotFound, "SetCursor of an unknown token")
	putToken(t, s, adeToken("A", "CK_a", t0))
	c, err := s.Cursor(ctx, "A")
	must(t, err, "Cursor")
	equal(t, c, "", "cursor of a new token")
	must(t, s.SetCursor(ctx, "A", "c1"), "SetCursor")
	must(t, s.SetCursor(ctx, "A", "c2"), "SetCursor")
	must(t, s.SetCursor(ctx, "A", "c2"), "SetCursor again")
	c, err = s.Cursor(ctx, "A")
	must(t, err, "Cursor")
	equal(t, c, "c2", "cursor")
	// A renewal of the token keeps its cursor.
	putToken(t, s, adeToken("A2", "CK_a", at(time.Hour)))
	c, err = s.Cursor(ctx, "A")
	must(t, err, "Cursor after renewal")
	equal(t, c, "c2", "cursor after renewal")
}

func testADEDevices(t *testing.T, s Store) {
	ctx := t.Context()
	putToken(t, s, adeToken("A", "CK_a", t0))
	putToken(t, s, adeToken("B", "CK_b", t0))
	devices, err := s.ADEDevices(ctx, "")
	must(t, err, "ADEDevices of an empty store")
	equal(t, len(devices), 0, "devices of an empty store")

	fetched := ade.Device{SerialNumber: "S1", Model: "iPhone 16", Description: "IPHONE 16 BLACK", Color: "BLACK",
		AssetTag: "tag", OS: "iOS", DeviceFamily: "iPhone", ProfileStatus: "empty",
		DeviceAssignedDate: t0, DeviceAssignedBy: "admin@example.com"}
	must(t, s.UpsertDevices(ctx, "A", []ade.Device{fetched, {SerialNumber: "S2", OS: "OSX", DeviceFamily: "Mac"}}), "UpsertDevices fetch")
	must(t, s.UpsertDevices(ctx, "A", []ade.Device{fetched}), "UpsertDevices fetch again")
	must(t, s.UpsertDevices(ctx, "B", []ade.Device{{SerialNumber: "S3", OpType: ade.OpAdded, OpDate: at(time.Minute)}}), "UpsertDevices B")

	rec1 := ade.DeviceRecord{TokenID: "A", SerialNumber: "S1", Model: "iPhone 16", Description: "IPHONE 16 BLACK",
		Color: "BLACK", AssetTag: "tag", OS: "iOS", DeviceFamily: "iPhone", ProfileStatus: "empty",
		DeviceAssignedDate: t0, DeviceAssignedBy: "admin@example.com"}
	rec2 := ade.DeviceRecord{TokenID: "A", SerialNumber: "S2", OS: "OSX", DeviceFamily: "Mac"}
	rec3 := ade.DeviceRecord{TokenID: "B", SerialNumber: "S3", OpType: ade.OpAdded, OpDate: at(time.Minute)}
	devices, err = s.ADEDevices(ctx, "")
	must(t, err, "ADEDevices")
	equal(t, devices, []ade.DeviceRecord{rec1, rec2, rec3}, "all devices")

	// A modification replaces the record; a deletion keeps it, marked.
	modified := fetched
	modified.ProfileStatus, modified.ProfileUUID, modified.ProfileAssignTime = "assigned", "P1", at(2*time.Minute)
	modified.OpType, modified.OpDate = ade.OpModified, at(2*time.Minute)
	deleted := ade.Device{SerialNumber: "S2", OpType: ade.OpDeleted, OpDate: at(3 * time.Minute)}
	must(t, s.UpsertDevices(ctx, "A", []ade.Device{modified, deleted}), "UpsertDevices sync")
	must(t, s.UpsertDevices(ctx, "A", []ade.Device{modified, deleted}), "UpsertDevices sync replayed")
	rec1.ProfileStatus, rec1.ProfileUUID, rec1.ProfileAssignTime = "assigned", "P1", at(2*time.Minute)
	rec1.OpType, rec1.OpDate = ade.OpModified, at(2*time.Minute)
	rec2.OpType, rec2.OpDate, rec2.Deleted = ade.OpDeleted, at(3*time.Minute), true
	devices, err = s.ADEDevices(ctx, "A")
	must(t, err, "ADEDevices A")
	equal(t, devices, []ade.DeviceRecord{rec1, rec2}, "devices of A after sync")

	// Assigned again: no longer deleted.
	must(t, s.UpsertDevices(ctx, "A", []ade.Device{{SerialNumber: "S2", OS: "OSX", DeviceFamily: "Mac",
		OpType: ade.OpAdded, OpDate: at(4 * time.Minute)}}), "UpsertDevices re-added")
	devices, err = s.ADEDevices(ctx, "A")
	must(t, err, "ADEDevices A")
	equal(t, devices[1], ade.DeviceRecord{TokenID: "A", SerialNumber: "S2", OS: "OSX", DeviceFamily: "Mac",
		OpType: ade.OpAdded, OpDate: at(4 * time.Minute)}, "re-added device")

	// A device deleted before bramley knew it is recorded deleted.
	must(t, s.UpsertDevices(ctx, "B", []ade.Device{{SerialNumber: "S9", OpType: ade.OpDeleted, OpDate: at(time.Hour)}}), "UpsertDevices unknown deleted")
	devices, err = s.ADEDevices(ctx, "B")
	must(t, err, "ADEDevices B")
	equal(t, devices, []ade.DeviceRecord{rec3, {TokenID: "B", SerialNumber: "S9", OpType: ade.OpDeleted,
		OpDate: at(time.Hour), Deleted: true}}, "devices of B")
	devices, err = s.ADEDevices(ctx, "unknown")
	must(t, err, "ADEDevices of an unknown token")
	equal(t, len(devices), 0, "devices of an unknown token")
}
