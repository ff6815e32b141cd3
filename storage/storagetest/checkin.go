package storagetest

import (
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

func testAuthenticateNewDevice(t *testing.T, s Store) {
	ctx := t.Context()
	msg := authMsg("UDID-1")
	must(t, s.StoreAuthenticate(ctx, msg, hash("cert-1"), t0), "StoreAuthenticate")

	equal(t, *device(t, s, "UDID-1"), storage.Device{
		ID: "UDID-1", UDID: "UDID-1", SerialNumber: msg.SerialNumber, Model: msg.Model,
		ModelName: msg.ModelName, ProductName: msg.ProductName, DeviceName: msg.DeviceName,
		OSVersion: msg.OSVersion, BuildVersion: msg.BuildVersion, IMEI: msg.IMEI, MEID: msg.MEID,
		Topic: topic, Enrolled: false, HasBootstrap: false,
		LastSeen: t0, CreatedAt: t0, UpdatedAt: t0,
	}, "device after Authenticate")

	// The device channel exists, disabled until its TokenUpdate.
	e := enrollment(t, s, "UDID-1")
	equal(t, *e, storage.Enrollment{
		ID: "UDID-1", DeviceID: "UDID-1", Topic: topic, Enabled: false, LastSeen: t0, UpdatedAt: t0,
	}, "device channel after Authenticate")

	h, boundAt, err := s.CertBinding(ctx, "UDID-1")
	must(t, err, "CertBinding")
	equal(t, h, hash("cert-1"), "bound certificate")
	equal(t, boundAt, t0, "bound at")
	id, err := s.CertDevice(ctx, hash("cert-1"))
	must(t, err, "CertDevice")
	equal(t, id, "UDID-1", "CertDevice")

	// User Enrollment: no UDID, the EnrollmentID is the device ID.
	ue := authMsg("")
	ue.UDID, ue.EnrollmentID = "", "ENROLLMENT-ID-1"
	must(t, s.StoreAuthenticate(ctx, ue, hash("cert-ue"), t0), "StoreAuthenticate with EnrollmentID")
	d := device(t, s, "ENROLLMENT-ID-1")
	equal(t, d.UDID, "", "UDID of a User Enrollment device")
	enrollment(t, s, "ENROLLMENT-ID-1")
}

func testAuthenticateKeepsOmittedAttributes(t *testing.T, s Store) {
	ctx := t.Context()
	first := authMsg("UDID-1")
	must(t, s.StoreAuthenticate(ctx, first, hash("cert-1"), t0), "first Authenticate")
	// Old iOS sends no DeviceName, Model or ModelName.
	again := &mdm.Authenticate{Topic: topic + ".new", OSVersion: "16.0", DeviceName: "Renamed"}
	again.UDID = "UDID-1"
	must(t, s.StoreAuthenticate(ctx, again, hash("cert-1"), at(time.Hour)), "second Authenticate")

	d := device(t, s, "UDID-1")
	want := storage.Device{
		ID: "UDID-1", UDID: "UDID-1", SerialNumber: first.SerialNumber, Model: first.Model,
		ModelName: first.ModelName, ProductName: first.ProductName, DeviceName: "Renamed",
		OSVersion: "16.0", BuildVersion: first.BuildVersion, IMEI: first.IMEI, MEID: first.MEID,
		Topic: topic + ".new", LastSeen: at(time.Hour), CreatedAt: t0, UpdatedAt: at(time.Hour),
	}
	equal(t, *d, want, "device after a sparse Authenticate")

	sparse := &mdm.Authenticate{Topic: topic}
	sparse.UDID = "UDID-1"
	must(t, s.StoreAuthenticate(ctx, sparse, hash("cert-1"), at(2*time.Hour)), "third Authenticate")
	want.Topic, want.LastSeen, want.UpdatedAt = topic, at(2*time.Hour), at(2*time.Hour)
	equal(t, *device(t, s, "UDID-1"), want, "device after an Authenticate with no attributes")
}

func testAuthenticateStartsFresh(t *testing.T, s Store) {
	ctx := t.Context()
	enrollDevice(t, s, t0, "D", "U")
	enrollDevice(t, s, t0, "OTHER")
	enqueue(t, s, command("both", 0, t0), "D", "D:U")
	enqueue(t, s, command("acked", 0, t0), "D")
	enqueue(t, s, command("notnow", 0, t0), "D")
	enqueue(t, s, command("cancelled", 0, t0), "D")
	enqueue(t, s, command("other", 0, t0), "OTHER")
	answer(t, s, "D", "acked", mdm.StatusAcknowledged, at(time.Second))
	answer(t, s, "D", "notnow", mdm.StatusNotNow, at(time.Second))
	_, err := s.CancelCommand(ctx, "cancelled", at(time.Second))
	must(t, err, "CancelCommand")

	// The device was erased and enrolls again with a new certificate.
	must(t, s.StoreAuthenticate(ctx, authMsg("D"), hash("new-cert"), at(time.Hour)), "re-Authenticate")

	equal(t, queueUUIDs(t, s, "D", at(time.Hour)), []string{}, "device channel queue")
	equal(t, queueUUIDs(t, s, "D:U", at(time.Hour)), []string{}, "user channel queue")
	equal(t, next(t, s, "D", false, at(time.Hour)), "", "next command of the device channel")
	equal(t, next(t, s, "D:U", false, at(time.Hour)), "", "next command of the user channel")
	both, err := s.Command(ctx, "both", at(time.Hour))
	must(t, err, "Command")
	equal(t, len(both.Targets), 0, "targets left of a dropped command")
	// Answered and cancelled entries are history and stay.
	equal(t, target(t, s, "acked", "D", at(time.Hour)).Status, mdm.StatusAcknowledged, "answered entry")
	equal(t, target(t, s, "cancelled", "D", at(time.Hour)).Status, storage.StatusCancelled, "cancelled entry")
	equal(t, queueUUIDs(t, s, "OTHER", at(time.Hour)), []string{"other"}, "another device's queue")

	for _, id := range []string{"D", "D:U"} {
		e := enrollment(t, s, id)
		if e.Enabled || len(e.PushToken) != 0 || e.PushMagic != "" {
			t.Errorf("enrollment %s after re-Authenticate: enabled %v, token %q, magic %q; want disabled and cleared",
				id, e.Enabled, e.PushToken, e.PushMagic)
		}
	}
	if e := enrollment(t, s, "OTHER"); !e.Enabled || len(e.PushToken) == 0 {
		t.Errorf("another device's enrollment was reset: %+v", e)
	}
	d := device(t, s, "D")
	equal(t, d.Enrolled, false, "enrolled after re-Authenticate")
	equal(t, d.LastSeen, at(time.Hour), "last seen")
	h, boundAt, err := s.CertBinding(ctx, "D")
	must(t, err, "CertBinding")
	equal(t, h, hash("new-cert"), "binding after re-Authenticate")
	equal(t, boundAt, at(time.Hour), "bound at")
	_, err = s.CertDevice(ctx, hash("D"))
	wantErr(t, err, storage.ErrNotFound, "CertDevice of the replaced certificate")

	must(t, s.StoreTokenUpdate(ctx, tokenMsg("D"), nil, at(2*time.Hour)), "TokenUpdate")
	equal(t, device(t, s, "D").Enrolled, true, "enrolled after TokenUpdate")
	equal(t, enrollment(t, s, "D").Enabled, true, "device channel enabled after TokenUpdate")
	equal(t, enrollment(t, s, "D:U").Enabled, false, "user channel still waiting for its TokenUpdate")
}

// testAuthenticateRenewal: a device that installs its renewed enrollment
// profile authenticates with the certificate bramley issued it; its
// enrollment goes on, queue and tokens intact. A fresh certificate for the
// same device still starts afresh.
func testAuthenticateRenewal(t *testing.T, s Store) {
	ctx := t.Context()
	enrollDevice(t, s, t0, "D")
	enqueue(t, s, command("queued", 0, t0), "D")
	must(t, s.RecordCertificate(ctx, storage.Certificate{
		Serial: "0a", SHA256: hash("renewed"), Subject: "CN=D", DeviceID: "D", NotAfter: at(24 * time.Hour), CreatedAt: t0,
	}), "RecordCertificate")
	before := enrollment(t, s, "D")

	must(t, s.StoreAuthenticate(ctx, authMsg("D"), hash("renewed"), at(time.Hour)), "Authenticate with the renewal")
	equal(t, queueUUIDs(t, s, "D", at(time.Hour)), []string{"queued"}, "queue after a renewal")
	after := enrollment(t, s, "D")
	if !after.Enabled || string(after.PushToken) != string(before.PushToken) || after.PushMagic != before.PushMagic {
		t.Errorf("enrollment after a renewal = %+v, want it enabled with its push token", after)
	}
	equal(t, device(t, s, "D").Enrolled, true, "enrolled after a renewal")
	h, _, err := s.CertBinding(ctx, "D")
	must(t, err, "CertBinding")
	equal(t, h, hash("renewed"), "binding after a renewal")

	// A certificate issued to another device is no renewal for this one.
	must(t, s.RecordCertificate(ctx, storage.Certificate{
		Serial: "0b", SHA256: hash("for-other"), Subject: "CN=X", DeviceID: "OTHER", NotAfter: at(24 * time.Hour), CreatedAt: t0,
	}), "RecordCertificate")
	must(t, s.StoreAuthenticate(ctx, authMsg("D"), hash("for-other"), at(2*time.Hour)), "Authenticate with another device's certificate")
	equal(t, queueUUIDs(t, s, "D", at(2*time.Hour)), []string{}, "queue after a fresh enrollment")
	equal(t, device(t, s, "D").Enrolled, false, "enrolled after a fresh Authenticate")
}

func testAuthenticateIdempotent(t *testing.T, s Store) {
	ctx := t.Context()
	for range 2 {
		must(t, s.StoreAuthenticate(ctx, authMsg("D"), hash("cert"), t0), "StoreAuthenticate")
	}
	d := device(t, s, "D")
	equal(t, d.CreatedAt, t0, "created at")
	es, err := s.Enrollments(ctx, "D")
	must(t, err, "Enrollments")
	equal(t, len(es), 1, "enrollments after two Authenticates")
	h, _, err := s.CertBinding(ctx, "D")
	must(t, err, "CertBinding")
	equal(t, h, hash("cert"), "binding")
}

func testCertificateBoundToOneDevice(t *testing.T, s Store) {
	ctx := t.Context()
	must(t, s.StoreAuthenticate(ctx, authMsg("D1"), hash("shared"), t0), "Authenticate D1")
	err := s.StoreAuthenticate(ctx, authMsg("D2"), hash("shared"), t0)
	wantErr(t, err, storage.ErrConflict, "Authenticate D2 with D1's certificate")
	if _, err := s.Device(ctx, "D2"); err == nil {
		t.Errorf("a refused Authenticate created the device")
	}
	must(t, s.StoreAuthenticate(ctx, authMsg("D2"), hash("d2"), t0), "Authenticate D2")
	wantErr(t, s.RebindCert(ctx, "D2", hash("shared"), t0), storage.ErrConflict, "RebindCert to D1's certificate")
	id, err := s.CertDevice(ctx, hash("shared"))
	must(t, err, "CertDevice")
	equal(t, id, "D1", "device bound to the certificate")

	// Once D1 moves on, the certificate is free.
	must(t, s.RebindCert(ctx, "D1", hash("d1-renewed"), t0), "RebindCert D1")
	must(t, s.RebindCert(ctx, "D2", hash("shared"), t0), "RebindCert D2")
	id, err = s.CertDevice(ctx, hash("shared"))
	must(t, err, "CertDevice")
	equal(t, id, "D2", "device bound to the certificate")
}

func testTokenUpdate(t *testing.T, s Store) {
	ctx := t.Context()
	wantErr(t, s.StoreTokenUpdate(ctx, tokenMsg("D"), nil, t0), storage.ErrNotFound, "TokenUpdate of an unknown device")
	wantErr(t, s.StoreTokenUpdate(ctx, tokenMsg("D:U"), nil, t0), storage.ErrNotFound, "TokenUpdate of an unknown device's user")
	if _, err := s.Enrollment(ctx, "D"); err == nil {
		t.Errorf("a refused TokenUpdate created the enrollment")
	}

	must(t, s.StoreAuthenticate(ctx, authMsg("D"), hash("D"), t0), "Authenticate")
	tu := tokenMsg("D")
	tu.AwaitingConfiguration = true
	must(t, s.StoreTokenUpdate(ctx, tu, []byte("sealed-unlock"), at(time.Minute)), "TokenUpdate")
	equal(t, *enrollment(t, s, "D"), storage.Enrollment{
		ID: "D", DeviceID: "D", Topic: topic, PushToken: tu.Token, PushMagic: tu.PushMagic,
		AwaitingConfiguration: true, Enabled: true, LastSeen: at(time.Minute), UpdatedAt: at(time.Minute),
	}, "enrollment after TokenUpdate")
	d := device(t, s, "D")
	equal(t, d.Enrolled, true, "enrolled")
	equal(t, d.LastSeen, at(time.Minute), "device last seen")

	// A later TokenUpdate overwrites (here: setup done, new token).
	tu2 := tokenMsg("D")
	tu2.Token, tu2.PushMagic, tu2.Topic = []byte("token-2"), "magic-2", topic+".2"
	must(t, s.StoreTokenUpdate(ctx, tu2, nil, at(time.Hour)), "second TokenUpdate")
	equal(t, *enrollment(t, s, "D"), storage.Enrollment{
		ID: "D", DeviceID: "D", Topic: topic + ".2", PushToken: []byte("token-2"), PushMagic: "magic-2",
		AwaitingConfiguration: false, Enabled: true, LastSeen: at(time.Hour), UpdatedAt: at(time.Hour),
	}, "enrollment after second TokenUpdate")
}

func testTokenUpdateUserChannel(t *testing.T, s Store) {
	ctx := t.Context()
	enrollDevice(t, s, t0, "D")
	tu := tokenMsg("D:USER-1")
	must(t, s.StoreTokenUpdate(ctx, tu, nil, at(time.Minute)), "user TokenUpdate")
	equal(t, *enrollment(t, s, "D:USER-1"), storage.Enrollment{
		ID: "D:USER-1", DeviceID: "D", UserID: "USER-1", UserShortName: "short-USER-1", UserLongName: "Long USER-1",
		Topic: topic, PushToken: tu.Token, PushMagic: tu.PushMagic, Enabled: true,
		LastSeen: at(time.Minute), UpdatedAt: at(time.Minute),
	}, "user channel")

	// A Shared iPad user is told apart by short name.
	ipad := tokenMsg("D")
	ipad.UserID, ipad.UserShortName, ipad.UserLongName = mdm.SharedIPadUserID, "bob", "Bob"
	must(t, s.StoreTokenUpdate(ctx, ipad, nil, at(time.Minute)), "Shared iPad TokenUpdate")
	e := enrollment(t, s, "D:bob")
	equal(t, []string{e.DeviceID, e.UserID, e.UserShortName, e.UserLongName},
		[]string{"D", mdm.SharedIPadUserID, "bob", "Bob"}, "Shared iPad user channel")

	// User Enrollment names its user by EnrollmentUserID.
	ue := tokenMsg("D")
	ue.EnrollmentUserID = "ENROLLMENT-USER"
	must(t, s.StoreTokenUpdate(ctx, ue, nil, at(time.Minute)), "User Enrollment TokenUpdate")
	equal(t, enrollment(t, s, "D:ENROLLMENT-USER").UserID, "ENROLLMENT-USER", "User Enrollment user ID")

	// A Mac user keeps its UserID: another one under the same short name
	// is refused and stores nothing, while that user is managed.
	forged := tokenMsg("D:USER-2")
	forged.UserShortName = "short-USER-1"
	wantErr(t, s.StoreTokenUpdate(ctx, forged, nil, at(time.Hour)), storage.ErrConflict, "TokenUpdate with a changed UserID")
	_, err := s.Enrollment(ctx, "D:USER-2")
	wantErr(t, err, storage.ErrNotFound, "enrollment of a refused UserID")
	equal(t, enrollment(t, s, "D:USER-1").LastSeen, at(time.Minute), "known user after a refused UserID")
	must(t, s.StoreTokenUpdate(ctx, tu, nil, at(time.Hour)), "repeated user TokenUpdate")
	must(t, s.CheckOut(ctx, "D:USER-1", at(time.Hour)), "CheckOut of the user")
	must(t, s.StoreTokenUpdate(ctx, forged, nil, at(time.Hour)), "TokenUpdate of a new user after the old one checked out")
}

func testCheckOut(t *testing.T, s Store) {
	ctx := t.Context()
	wantErr(t, s.CheckOut(ctx, "D", t0), storage.ErrNotFound, "CheckOut of an unknown enrollment")
	enrollDevice(t, s, t0, "D", "U1", "U2")
	wantErr(t, s.CheckOut(ctx, "D:NOBODY", t0), storage.ErrNotFound, "CheckOut of an unknown user channel")

	must(t, s.CheckOut(ctx, "D:U1", at(time.Minute)), "CheckOut of a user channel")
	equal(t, enrollment(t, s, "D:U1").Enabled, false, "checked-out user channel enabled")
	equal(t, enrollment(t, s, "D:U1").LastSeen, at(time.Minute), "checked-out user channel last seen")
	equal(t, enrollment(t, s, "D:U2").Enabled, true, "other user channel enabled")
	equal(t, enrollment(t, s, "D").Enabled, true, "device channel enabled")
	equal(t, device(t, s, "D").Enrolled, true, "device enrolled after a user CheckOut")

	must(t, s.CheckOut(ctx, "D", at(time.Hour)), "CheckOut of the device channel")
	for _, id := range []string{"D", "D:U1", "D:U2"} {
		equal(t, enrollment(t, s, id).Enabled, false, "%s enabled after the device's CheckOut", id)
	}
	d := device(t, s, "D")
	equal(t, d.Enrolled, false, "device enrolled after CheckOut")
	equal(t, d.LastSeen, at(time.Hour), "device last seen")
	must(t, s.CheckOut(ctx, "D", at(2*time.Hour)), "repeated CheckOut")
	equal(t, device(t, s, "D").Enrolled, false, "device enrolled after a repeated CheckOut")
}

func testBootstrapToken(t *testing.T, s Store) {
	ctx := t.Context()
	wantErr(t, s.StoreBootstrapToken(ctx, "D", []byte("x"), t0), storage.ErrNotFound, "StoreBootstrapToken of an unknown device")
	_, err := s.BootstrapToken(ctx, "D")
	wantErr(t, err, storage.ErrNotFound, "BootstrapToken of an unknown device")

	enrollDevice(t, s, t0, "D")
	_, err = s.BootstrapToken(ctx, "D")
	wantErr(t, err, storage.ErrNotFound, "BootstrapToken before one was escrowed")
	equal(t, device(t, s, "D").HasBootstrap, false, "HasBootstrap before escrow")

	for _, tok := range []string{"sealed-1", "sealed-2"} {
		must(t, s.StoreBootstrapToken(ctx, "D", []byte(tok), at(time.Minute)), "StoreBootstrapToken")
		got, err := s.BootstrapToken(ctx, "D")
		must(t, err, "BootstrapToken")
		equal(t, string(got), tok, "escrowed token")
	}
	d := device(t, s, "D")
	equal(t, d.HasBootstrap, true, "HasBootstrap after escrow")
	equal(t, d.LastSeen, at(time.Minute), "last seen after escrow")

	must(t, s.StoreBootstrapToken(ctx, "D", nil, at(time.Hour)), "deleting the bootstrap token")
	_, err = s.BootstrapToken(ctx, "D")
	wantErr(t, err, storage.ErrNotFound, "BootstrapToken after deletion")
	equal(t, device(t, s, "D").HasBootstrap, false, "HasBootstrap after deletion")
}

func testCertBinding(t *testing.T, s Store) {
	ctx := t.Context()
	_, _, err := s.CertBinding(ctx, "D")
	wantErr(t, err, storage.ErrNotFound, "CertBinding of an unknown device")
	_, err = s.CertDevice(ctx, hash("nobody's"))
	wantErr(t, err, storage.ErrNotFound, "CertDevice of an unbound certificate")
	wantErr(t, s.RebindCert(ctx, "D", hash("x"), t0), storage.ErrNotFound, "RebindCert of an unknown device")

	must(t, s.StoreAuthenticate(ctx, authMsg("D"), hash("old"), t0), "Authenticate")
	must(t, s.RebindCert(ctx, "D", hash("renewed"), at(time.Hour)), "RebindCert")
	h, boundAt, err := s.CertBinding(ctx, "D")
	must(t, err, "CertBinding")
	equal(t, h, hash("renewed"), "binding after RebindCert")
	equal(t, boundAt, at(time.Hour), "bound at")
	id, err := s.CertDevice(ctx, hash("renewed"))
	must(t, err, "CertDevice of the new certificate")
	equal(t, id, "D", "CertDevice of the new certificate")
	_, err = s.CertDevice(ctx, hash("old"))
	wantErr(t, err, storage.ErrNotFound, "CertDevice of the replaced certificate")

	// A repeat changes nothing, not even the time of binding.
	must(t, s.RebindCert(ctx, "D", hash("renewed"), at(2*time.Hour)), "repeated RebindCert")
	_, boundAt, err = s.CertBinding(ctx, "D")
	must(t, err, "CertBinding")
	equal(t, boundAt, at(time.Hour), "bound at after a repeated RebindCert")
}

func testIssuedTo(t *testing.T, s Store) {
	ctx := t.Context()
	_, err := s.IssuedTo(ctx, hash("unknown"))
	wantErr(t, err, storage.ErrNotFound, "IssuedTo of an unknown certificate")

	renewal := storage.Certificate{
		Serial: "0a1b", SHA256: hash("renewal"), Subject: "CN=D", DeviceID: "D",
		NotAfter: at(365 * 24 * time.Hour), CreatedAt: t0,
	}
	must(t, s.RecordCertificate(ctx, renewal), "RecordCertificate")
	id, err := s.IssuedTo(ctx, hash("renewal"))
	must(t, err, "IssuedTo")
	equal(t, id, "D", "IssuedTo")

	// Recording is idempotent by serial: the first record stands.
	again := renewal
	again.DeviceID = "SOMEONE-ELSE"
	must(t, s.RecordCertificate(ctx, again), "repeated RecordCertificate")
	id, err = s.IssuedTo(ctx, hash("renewal"))
	must(t, err, "IssuedTo")
	equal(t, id, "D", "IssuedTo after a repeated RecordCertificate")

	// A certificate issued to no known device (a first enrollment) is no
	// renewal.
	first := storage.Certificate{Serial: "0c", SHA256: hash("first"), Subject: "CN=new", NotAfter: at(time.Hour), CreatedAt: t0}
	must(t, s.RecordCertificate(ctx, first), "RecordCertificate without device")
	_, err = s.IssuedTo(ctx, hash("first"))
	wantErr(t, err, storage.ErrNotFound, "IssuedTo of a certificate issued to no device")

	revoked := storage.Certificate{Serial: "0d", SHA256: hash("revoked"), DeviceID: "D", Revoked: true, NotAfter: at(time.Hour), CreatedAt: t0}
	must(t, s.RecordCertificate(ctx, revoked), "RecordCertificate revoked")
	_, err = s.IssuedTo(ctx, hash("revoked"))
	wantErr(t, err, storage.ErrNotFound, "IssuedTo of a revoked certificate")
}
