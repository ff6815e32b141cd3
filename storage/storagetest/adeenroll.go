package storagetest

import (
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/storage"
)

func testADEDeviceBySerial(t *testing.T, s Store) {
	ctx := t.Context()
	_, err := s.ADEDeviceBySerial(ctx, "S1")
	wantErr(t, err, storage.ErrNotFound, "ADEDeviceBySerial of an empty store")
	putToken(t, s, adeToken("A", "CK_a", t0))
	putToken(t, s, adeToken("B", "CK_b", t0))
	must(t, s.UpsertDevices(ctx, "A", []ade.Device{{SerialNumber: "S1", Model: "iPhone 16", OS: "iOS"}, {SerialNumber: "S2"}}), "UpsertDevices A")

	got, err := s.ADEDeviceBySerial(ctx, "S1")
	must(t, err, "ADEDeviceBySerial S1")
	equal(t, got, ade.DeviceRecord{TokenID: "A", SerialNumber: "S1", Model: "iPhone 16", OS: "iOS"}, "S1")

	// Moved from A to B: B's, the newer record, wins; once A's record is
	// deleted, only B's counts.
	must(t, s.UpsertDevices(ctx, "B", []ade.Device{{SerialNumber: "S1", OpType: ade.OpAdded, OpDate: at(time.Minute)}}), "UpsertDevices B")
	got, err = s.ADEDeviceBySerial(ctx, "S1")
	must(t, err, "ADEDeviceBySerial S1 moved")
	equal(t, got.TokenID, "B", "token of a moved device")
	must(t, s.UpsertDevices(ctx, "A", []ade.Device{{SerialNumber: "S1", OpType: ade.OpDeleted, OpDate: at(2 * time.Minute)}}), "UpsertDevices A deleted")
	got, err = s.ADEDeviceBySerial(ctx, "S1")
	must(t, err, "ADEDeviceBySerial S1 after A's deletion")
	equal(t, got.TokenID, "B", "token after A's deletion")

	// A deleted device is not found.
	must(t, s.UpsertDevices(ctx, "A", []ade.Device{{SerialNumber: "S2", OpType: ade.OpDeleted, OpDate: at(3 * time.Minute)}}), "UpsertDevices S2 deleted")
	_, err = s.ADEDeviceBySerial(ctx, "S2")
	wantErr(t, err, storage.ErrNotFound, "ADEDeviceBySerial of a deleted device")
	_, err = s.ADEDeviceBySerial(ctx, "s1")
	wantErr(t, err, storage.ErrNotFound, "ADEDeviceBySerial is exact")
}
