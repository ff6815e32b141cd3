// Package storagetest is the conformance suite every storage backend runs:
// one test per documented behaviour of the consumer interfaces
// (checkin.Store, queue.Store, api.Store …), against a real database.
//
// A backend's test is one line:
//
//	func TestStore(t *testing.T) { storagetest.Run(t, openTestStore) }
//
// and its benchmarks another:
//
//	func BenchmarkStore(b *testing.B) { storagetest.Benchmark(b, openBenchStore) }
package storagetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/checkin"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/push"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage"
	"github.com/bramley-mdm/bramley/vpp"
)

// Store is everything a storage backend implements.
type Store interface {
	checkin.Store
	checkin.BootstrapStore
	identity.Store
	queue.Store
	queue.DeviceInfoStore
	api.Store
	api.CommandStore
	api.KeyStore
	pki.SettingStore
	pki.CertificateStore
	enroll.Store
	enroll.ADEDeviceFinder
	enroll.RenewalStore
	enroll.UserStore
	scep.ChallengeStore
	scep.RenewalStore
	push.Store
	push.CertStore
	pki.SettingWriter
	ade.TokenStore
	ade.CursorStore
	ade.DeviceSink
	ade.DeviceLister
	vpp.ServiceStore
	ade.ProfileStore
	ade.AssignmentStore
	ade.Locker

	// PutSetting stores one value as PutSettings does.
	PutSetting(ctx context.Context, name string, value []byte) error

	// QueueDepth counts the queue entries still to be answered (Pending or
	// NotNow) whose command has not expired.
	QueueDepth(ctx context.Context) (int64, error)
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Close releases the database.
	Close() error
}

// Run runs the conformance suite. open must return a new, empty store for
// each call and close it when the test ends; the tests run in parallel.
func Run(t *testing.T, open func(t *testing.T) Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"AuthenticateNewDevice", testAuthenticateNewDevice},
		{"AuthenticateKeepsOmittedAttributes", testAuthenticateKeepsOmittedAttributes},
		{"AuthenticateStartsFresh", testAuthenticateStartsFresh},
		{"AuthenticateRenewal", testAuthenticateRenewal},
		{"AuthenticateIdempotent", testAuthenticateIdempotent},
		{"CertificateBoundToOneDevice", testCertificateBoundToOneDevice},
		{"TokenUpdate", testTokenUpdate},
		{"TokenUpdateUserChannel", testTokenUpdateUserChannel},
		{"CheckOut", testCheckOut},
		{"BootstrapToken", testBootstrapToken},
		{"CertBinding", testCertBinding},
		{"IssuedTo", testIssuedTo},
		{"Enqueue", testEnqueue},
		{"NextCommandOrder", testNextCommandOrder},
		{"NextCommandDelivery", testNextCommandDelivery},
		{"NextCommandNotNow", testNextCommandNotNow},
		{"NextCommandExpiry", testNextCommandExpiry},
		{"StoreResult", testStoreResult},
		{"StoreResultStatuses", testStoreResultStatuses},
		{"CancelCommand", testCancelCommand},
		{"Queue", testQueue},
		{"QueueDepth", testQueueDepth},
		{"ConcurrentQueues", testConcurrentQueues},
		{"UpdateDeviceInfo", testUpdateDeviceInfo},
		{"Devices", testDevices},
		{"DevicesLimit", testDevicesLimit},
		{"Enrollments", testEnrollments},
		{"APIKeys", testAPIKeys},
		{"Settings", testSettings},
		{"SettingsRace", testSettingsRace},
		{"EnrollmentTokens", testEnrollmentTokens},
		{"EnrollmentTokenRace", testEnrollmentTokenRace},
		{"Challenges", testChallenges},
		{"ChallengeRace", testChallengeRace},
		{"CertDeviceRevoked", testCertDeviceRevoked},
		{"PutSettings", testPutSettings},
		{"PushTargets", testPushTargets},
		{"RecordPushResults", testRecordPushResults},
		{"PushTokenInvalid", testPushTokenInvalid},
		{"ClaimPendingPushes", testClaimPendingPushes},
		{"ClaimPendingPushesOrder", testClaimPendingPushesOrder},
		{"ClaimPendingPushesRace", testClaimPendingPushesRace},
		{"TokenUpdateResetsPushState", testTokenUpdateResetsPushState},
		{"PushCertificates", testPushCertificates},
		{"TopicUsage", testTopicUsage},
		{"ExpiringIdentities", testExpiringIdentities},
		{"ExpiringIdentitiesRace", testExpiringIdentitiesRace},
		{"RenewalStatuses", testRenewalStatuses},
		{"Users", testUsers},
		{"Times", testTimes},
		{"ADETokens", testADETokens},
		{"ADECursor", testADECursor},
		{"ADEDevices", testADEDevices},
		{"ADEProfiles", testADEProfiles},
		{"ADEAssignmentRules", testADEAssignmentRules},
		{"ADERecordAssignments", testADERecordAssignments},
		{"ADEDeviceBySerial", testADEDeviceBySerial},
		{"VPPUsers", testVPPUsers},
		{"VPPPlans", testVPPPlans},
		{"Ping", testPing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// t0 is the suite's clock: times are whole microseconds, the precision
// both backends keep.
var t0 = time.Date(2026, 3, 1, 9, 30, 0, 123456000, time.UTC)

// at returns t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

const topic = "com.apple.mgmt.External.2b7e3f8c-storagetest"

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// authMsg is a complete Authenticate from a device.
func authMsg(udid string) *mdm.Authenticate {
	m := &mdm.Authenticate{
		Topic:        topic,
		BuildVersion: "24A335",
		DeviceName:   "Mac of " + udid,
		IMEI:         "35 000000 000000 0",
		MEID:         "A0000000000000",
		Model:        "Mac14,2",
		ModelName:    "MacBook Air",
		OSVersion:    "15.0",
		ProductName:  "Mac14,2",
		SerialNumber: "SER-" + udid,
	}
	m.MessageType = mdm.MessageAuthenticate
	m.UDID = udid
	return m
}

// tokenMsg is a TokenUpdate of the enrollment ID (device or "device:user").
func tokenMsg(id string) *mdm.TokenUpdate {
	m := &mdm.TokenUpdate{
		Topic:     topic,
		Token:     []byte("token-" + id),
		PushMagic: "magic-" + id,
	}
	m.MessageType = mdm.MessageTokenUpdate
	m.Enrollment = enrollmentOf(id)
	return m
}

func enrollmentOf(id string) mdm.Enrollment {
	device, user := mdm.SplitID(id)
	e := mdm.Enrollment{UDID: device}
	if user != "" {
		e.UserID = user
		e.UserShortName = "short-" + user
		e.UserLongName = "Long " + user
	}
	return e
}

// resultMsg is a device's answer to a command.
func resultMsg(enrollmentID, uuid, status string) *mdm.CommandResults {
	r := &mdm.CommandResults{Enrollment: enrollmentOf(enrollmentID), CommandUUID: uuid, Status: status}
	r.Raw = fmt.Appendf(nil, "<plist><dict><key>CommandUUID</key><string>%s</string>"+
		"<key>Status</key><string>%s</string></dict></plist>", uuid, status)
	return r
}

// enrollDevice authenticates the device (certificate hash of its ID) and sends
// the TokenUpdate of each enrollment ID given, device channel first.
func enrollDevice(t testing.TB, s Store, now time.Time, deviceID string, users ...string) {
	t.Helper()
	ctx := context.Background()
	must(t, s.StoreAuthenticate(ctx, authMsg(deviceID), hash(deviceID), now), "StoreAuthenticate %s", deviceID)
	must(t, s.StoreTokenUpdate(ctx, tokenMsg(deviceID), nil, now), "StoreTokenUpdate %s", deviceID)
	for _, u := range users {
		id := deviceID + ":" + u
		must(t, s.StoreTokenUpdate(ctx, tokenMsg(id), nil, now), "StoreTokenUpdate %s", id)
	}
}

// command is a command to enqueue; its raw form names it, so a test can
// tell which one came back.
func command(uuid string, priority int, created time.Time) storage.NewCommand {
	return storage.NewCommand{
		UUID:        uuid,
		RequestType: "ProfileList",
		Raw:         []byte("<plist>" + uuid + "</plist>"),
		Priority:    priority,
		CreatedAt:   created,
	}
}

func enqueue(t testing.TB, s Store, cmd storage.NewCommand, ids ...string) {
	t.Helper()
	must(t, s.Enqueue(context.Background(), cmd, ids), "Enqueue %s to %v", cmd.UUID, ids)
}

// next returns the UUID of the next command, "" for none.
func next(t testing.TB, s Store, id string, skipNotNow bool, now time.Time) string {
	t.Helper()
	cmd, err := s.NextCommand(context.Background(), id, skipNotNow, now)
	must(t, err, "NextCommand %s", id)
	if cmd == nil {
		return ""
	}
	return cmd.CommandUUID
}

func answer(t testing.TB, s Store, id, uuid, status string, now time.Time) {
	t.Helper()
	_, err := s.StoreResult(context.Background(), id, resultMsg(id, uuid, status), now)
	must(t, err, "StoreResult %s %s %s", id, uuid, status)
}

// target returns the state of a command on one enrollment.
func target(t testing.TB, s Store, uuid, id string, now time.Time) storage.CommandTarget {
	t.Helper()
	c, err := s.Command(context.Background(), uuid, now)
	must(t, err, "Command %s", uuid)
	for _, tg := range c.Targets {
		if tg.EnrollmentID == id {
			return tg
		}
	}
	t.Fatalf("command %s has no target %s: %+v", uuid, id, c.Targets)
	return storage.CommandTarget{}
}

func must(t testing.TB, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}

func wantErr(t testing.TB, err, want error, format string, args ...any) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got error %v, want %v", fmt.Sprintf(format, args...), err, want)
	}
}

func equal[T any](t testing.TB, got, want T, format string, args ...any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %+v\n want %+v", fmt.Sprintf(format, args...), got, want)
	}
}

func device(t testing.TB, s Store, id string) *storage.Device {
	t.Helper()
	d, err := s.Device(context.Background(), id)
	must(t, err, "Device %s", id)
	return d
}

func enrollment(t testing.TB, s Store, id string) *storage.Enrollment {
	t.Helper()
	e, err := s.Enrollment(context.Background(), id)
	must(t, err, "Enrollment %s", id)
	return e
}

func queueUUIDs(t testing.TB, s Store, id string, now time.Time) []string {
	t.Helper()
	items, err := s.Queue(context.Background(), id, now)
	must(t, err, "Queue %s", id)
	uuids := []string{}
	for _, it := range items {
		uuids = append(uuids, it.CommandUUID)
	}
	return uuids
}
