package storagetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

func testUpdateDeviceInfo(t *testing.T, s Store) {
	ctx := t.Context()
	wantErr(t, s.UpdateDeviceInfo(ctx, "D", storage.Device{DeviceName: "x"}, t0), storage.ErrNotFound,
		"UpdateDeviceInfo of an unknown device")
	enrollDevice(t, s, t0, "D")
	before := *device(t, s, "D")

	info := storage.Device{
		DeviceName: "Renamed", OSVersion: "15.1", BuildVersion: "24B83", HostName: "renamed.local",
		// Not device information: ignored.
		ID: "OTHER", Topic: "other.topic", Enrolled: false,
	}
	must(t, s.UpdateDeviceInfo(ctx, "D", info, at(time.Hour)), "UpdateDeviceInfo")
	want := before
	want.DeviceName, want.OSVersion, want.BuildVersion, want.HostName = "Renamed", "15.1", "24B83", "renamed.local"
	want.UpdatedAt = at(time.Hour)
	equal(t, *device(t, s, "D"), want, "device after UpdateDeviceInfo")

	all := storage.Device{
		SerialNumber: "S2", Model: "M2", ModelName: "MN2", ProductName: "P2", DeviceName: "DN2",
		OSVersion: "O2", BuildVersion: "B2", IMEI: "I2", MEID: "ME2", HostName: "H2",
	}
	must(t, s.UpdateDeviceInfo(ctx, "D", all, at(2*time.Hour)), "UpdateDeviceInfo")
	d := device(t, s, "D")
	equal(t, []string{d.SerialNumber, d.Model, d.ModelName, d.ProductName, d.DeviceName, d.OSVersion,
		d.BuildVersion, d.IMEI, d.MEID, d.HostName},
		[]string{"S2", "M2", "MN2", "P2", "DN2", "O2", "B2", "I2", "ME2", "H2"}, "every attribute")
}

func deviceIDs(t *testing.T, s Store, f storage.DeviceFilter) []string {
	t.Helper()
	ds, err := s.Devices(t.Context(), f)
	must(t, err, "Devices %+v", f)
	ids := []string{}
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids
}

func testDevices(t *testing.T, s Store) {
	ctx := t.Context()
	equal(t, deviceIDs(t, s, storage.DeviceFilter{}), []string{}, "devices of an empty store")
	for _, id := range []string{"C1", "A2", "B1", "A1", "B2"} {
		enrollDevice(t, s, t0, id)
	}
	ue := authMsg("")
	ue.UDID, ue.EnrollmentID, ue.SerialNumber = "", "BYOD", ""
	must(t, s.StoreAuthenticate(ctx, ue, hash("byod"), t0), "Authenticate BYOD")

	equal(t, deviceIDs(t, s, storage.DeviceFilter{}), []string{"A1", "A2", "B1", "B2", "BYOD", "C1"}, "all devices")
	var pages [][]string
	after := ""
	for range 5 {
		page := deviceIDs(t, s, storage.DeviceFilter{After: after, Limit: 4})
		pages = append(pages, page)
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1]
	}
	equal(t, pages, [][]string{{"A1", "A2", "B1", "B2"}, {"BYOD", "C1"}, {}}, "pages of 4")
	equal(t, deviceIDs(t, s, storage.DeviceFilter{SerialNumber: "SER-B1"}), []string{"B1"}, "by serial number")
	equal(t, deviceIDs(t, s, storage.DeviceFilter{UDID: "B2"}), []string{"B2"}, "by UDID")
	equal(t, deviceIDs(t, s, storage.DeviceFilter{UDID: "BYOD"}), []string{}, "by UDID of a device without one")
	equal(t, deviceIDs(t, s, storage.DeviceFilter{SerialNumber: "SER-B1", UDID: "B2"}), []string{}, "by serial and another UDID")
	equal(t, deviceIDs(t, s, storage.DeviceFilter{SerialNumber: "SER-B1", After: "B1"}), []string{}, "by serial after it")

	ds, err := s.Devices(ctx, storage.DeviceFilter{UDID: "A1"})
	must(t, err, "Devices")
	equal(t, ds, []storage.Device{*device(t, s, "A1")}, "listed device")

	_, err = s.Device(ctx, "NOPE")
	wantErr(t, err, storage.ErrNotFound, "Device of an unknown ID")
}

func testDevicesLimit(t *testing.T, s Store) {
	ctx := t.Context()
	const n = 1001
	for i := range n {
		id := fmt.Sprintf("D%04d", i)
		must(t, s.StoreAuthenticate(ctx, authMsg(id), hash(id), t0), "Authenticate %s", id)
	}
	for _, tc := range []struct {
		limit, want int
	}{{0, 100}, {-1, 100}, {7, 7}, {101, 101}, {1000, 1000}, {5000, 1000}} {
		ds, err := s.Devices(ctx, storage.DeviceFilter{Limit: tc.limit})
		must(t, err, "Devices")
		equal(t, len(ds), tc.want, "devices listed with limit %d", tc.limit)
	}
}

func testEnrollments(t *testing.T, s Store) {
	ctx := t.Context()
	es, err := s.Enrollments(ctx, "NOPE")
	must(t, err, "Enrollments of an unknown device")
	equal(t, len(es), 0, "enrollments of an unknown device")
	_, err = s.Enrollment(ctx, "NOPE")
	wantErr(t, err, storage.ErrNotFound, "Enrollment of an unknown ID")

	enrollDevice(t, s, t0, "D", "B", "A")
	enrollDevice(t, s, t0, "D2", "C")
	es, err = s.Enrollments(ctx, "D")
	must(t, err, "Enrollments")
	var ids []string
	for _, e := range es {
		ids = append(ids, e.ID)
		equal(t, e, *enrollment(t, s, e.ID), "listed enrollment %s", e.ID)
	}
	equal(t, ids, []string{"D", "D:A", "D:B"}, "enrollments, device channel first")
}

func testAPIKeys(t *testing.T, s Store) {
	ctx := t.Context()
	exists := func(h []byte) bool {
		t.Helper()
		ok, err := s.APIKeyExists(ctx, h)
		must(t, err, "APIKeyExists")
		return ok
	}
	equal(t, exists(hash("key")), false, "key before creation")
	must(t, s.CreateAPIKey(ctx, hash("key"), "admin", t0), "CreateAPIKey")
	must(t, s.CreateAPIKey(ctx, hash("key"), "admin again", t0), "repeated CreateAPIKey")
	equal(t, exists(hash("key")), true, "created key")
	equal(t, exists(hash("other")), false, "another key")
}

func testSettings(t *testing.T, s Store) {
	ctx := t.Context()
	_, err := s.Setting(ctx, "ca")
	wantErr(t, err, storage.ErrNotFound, "Setting before creation")
	v, err := s.CreateSetting(ctx, "ca", []byte("first"))
	must(t, err, "CreateSetting")
	equal(t, string(v), "first", "created value")
	v, err = s.CreateSetting(ctx, "ca", []byte("second"))
	must(t, err, "second CreateSetting")
	equal(t, string(v), "first", "value after a second CreateSetting")
	v, err = s.Setting(ctx, "ca")
	must(t, err, "Setting")
	equal(t, string(v), "first", "stored value")

	v, err = s.CreateSetting(ctx, "empty", nil)
	must(t, err, "CreateSetting of nothing")
	equal(t, len(v), 0, "empty value")
	_, err = s.Setting(ctx, "empty")
	must(t, err, "Setting of an empty value")
}

// testSettingsRace is replicas starting at once, each creating the CA.
func testSettingsRace(t *testing.T, s Store) {
	const racers = 8
	ctx := t.Context()
	got := make([]string, racers)
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			v, err := s.CreateSetting(ctx, "ca", fmt.Appendf(nil, "racer-%d", i))
			got[i], errs[i] = string(v), err
		})
	}
	wg.Wait()
	stored, err := s.Setting(ctx, "ca")
	must(t, err, "Setting")
	for i := range racers {
		must(t, errs[i], "CreateSetting of racer %d", i)
		equal(t, got[i], string(stored), "value racer %d got", i)
	}
}

// testTimes checks that times come back in UTC at microsecond precision,
// whatever zone and precision they went in with.
func testTimes(t *testing.T, s Store) {
	ctx := t.Context()
	local := t0.In(time.FixedZone("UTC+2", 2*60*60)).Add(789 * time.Nanosecond)
	must(t, s.StoreAuthenticate(ctx, authMsg("D"), hash("D"), local), "StoreAuthenticate")
	d := device(t, s, "D")
	equal(t, d.LastSeen, t0, "last seen")
	if d.LastSeen.Location() != time.UTC {
		t.Errorf("last seen in %v, want UTC", d.LastSeen.Location())
	}
	_, boundAt, err := s.CertBinding(ctx, "D")
	must(t, err, "CertBinding")
	equal(t, boundAt, t0, "bound at")

	must(t, s.StoreTokenUpdate(ctx, tokenMsg("D"), nil, local), "StoreTokenUpdate")
	cmd := command("X", 0, local)
	cmd.ExpiresAt = local.Add(time.Hour)
	enqueue(t, s, cmd, "D")
	c, err := s.Command(ctx, "X", t0)
	must(t, err, "Command")
	equal(t, []time.Time{c.CreatedAt, c.ExpiresAt}, []time.Time{t0, at(time.Hour)}, "command times")
	equal(t, next(t, s, "D", false, local), "X", "next command")
	equal(t, target(t, s, "X", "D", t0).DeliveredAt, t0, "delivered at")
	answer(t, s, "D", "X", mdm.StatusAcknowledged, local)
	equal(t, enrollment(t, s, "D").LastSeen, t0, "enrollment last seen")
}

func testPing(t *testing.T, s Store) {
	must(t, s.Ping(t.Context()), "Ping")
}
