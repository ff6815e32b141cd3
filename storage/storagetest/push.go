package storagetest

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/push"
	"github.com/bramley-mdm/bramley/storage"
)

// targetOf is the Target of an enrollment enrolled by enrollDevice.
func targetOf(id string) push.Target {
	return push.Target{EnrollmentID: id, Token: []byte("token-" + id), PushMagic: "magic-" + id, Topic: topic}
}

// pushTargets returns PushTargets' answer ordered by enrollment ID.
func pushTargets(t *testing.T, s Store, ids ...string) []push.Target {
	t.Helper()
	ts, err := s.PushTargets(t.Context(), ids)
	must(t, err, "PushTargets %v", ids)
	slices.SortFunc(ts, func(a, b push.Target) int { return cmp.Compare(a.EnrollmentID, b.EnrollmentID) })
	return ts
}

func record(t *testing.T, s Store, records ...push.PushRecord) {
	t.Helper()
	must(t, s.RecordPushResults(t.Context(), records), "RecordPushResults")
}

// pushed is the record of a push of the enrollment's token at pushedAt,
// due again at next.
func pushed(id string, pushedAt time.Time, attempts int, next time.Time) push.PushRecord {
	return push.PushRecord{EnrollmentID: id, Token: []byte("token-" + id), PushedAt: pushedAt, Status: 200,
		Attempts: attempts, NextPushAt: next}
}

// claimAt claims at now what was queued up to queuedBefore, leasing for
// five minutes.
func claimAt(now, queuedBefore time.Time, limit int) push.PushClaim {
	return push.PushClaim{Now: now, QueuedBefore: queuedBefore, LeaseUntil: now.Add(5 * time.Minute), Limit: limit}
}

func claim(t *testing.T, s Store, c push.PushClaim) []push.PendingPush {
	t.Helper()
	due, err := s.ClaimPendingPushes(t.Context(), c)
	must(t, err, "ClaimPendingPushes %+v", c)
	return due
}

// claimedIDs returns the enrollment IDs of a claim, sorted, and each one's
// Attempts.
func claimedIDs(t *testing.T, s Store, c push.PushClaim) ([]string, map[string]int) {
	t.Helper()
	ids := []string{}
	attempts := map[string]int{}
	for _, p := range claim(t, s, c) {
		ids = append(ids, p.Target.EnrollmentID)
		attempts[p.Target.EnrollmentID] = p.Attempts
	}
	slices.Sort(ids)
	return ids, attempts
}

func testPushTargets(t *testing.T, s Store) {
	ctx := t.Context()
	ts, err := s.PushTargets(ctx, nil)
	must(t, err, "PushTargets of nothing")
	equal(t, len(ts), 0, "targets of nothing")

	enrollDevice(t, s, t0, "D", "U")
	enrollDevice(t, s, t0, "OFF")
	must(t, s.CheckOut(ctx, "OFF", t0), "CheckOut")
	must(t, s.StoreAuthenticate(ctx, authMsg("NEW"), hash("NEW"), t0), "Authenticate without TokenUpdate")
	enrollDevice(t, s, t0, "EMPTY")
	empty := tokenMsg("EMPTY")
	empty.Token = []byte{}
	must(t, s.StoreTokenUpdate(ctx, empty, nil, t0), "TokenUpdate without a token")

	equal(t, pushTargets(t, s, "D:U", "D", "NOPE", "OFF", "NEW", "EMPTY", "D", "D:U"),
		[]push.Target{targetOf("D"), targetOf("D:U")}, "targets")
	equal(t, pushTargets(t, s, "NOPE"), []push.Target(nil), "targets of an unknown enrollment")

	// The latest TokenUpdate's token and topic.
	tu := tokenMsg("D")
	tu.Token, tu.PushMagic, tu.Topic = []byte("token-2"), "magic-2", topic+".2"
	must(t, s.StoreTokenUpdate(ctx, tu, nil, at(time.Hour)), "second TokenUpdate")
	equal(t, pushTargets(t, s, "D"), []push.Target{{EnrollmentID: "D", Token: []byte("token-2"),
		PushMagic: "magic-2", Topic: topic + ".2"}}, "target after a new TokenUpdate")
}

func testRecordPushResults(t *testing.T, s Store) {
	must(t, s.RecordPushResults(t.Context(), nil), "RecordPushResults of nothing")
	enrollDevice(t, s, t0, "D")
	enqueue(t, s, command("c1", 0, t0), "D")

	// Records of unknown enrollments are skipped, the others stored.
	record(t, s, pushed("NOPE", at(time.Minute), 1, t0), pushed("D", at(time.Minute), 2, at(3*time.Minute)))
	ids, _ := claimedIDs(t, s, claimAt(at(3*time.Minute-time.Microsecond), at(3*time.Minute), 10))
	equal(t, ids, []string{}, "claimed before the recorded NextPushAt")
	ids, attempts := claimedIDs(t, s, claimAt(at(3*time.Minute), at(3*time.Minute), 10))
	equal(t, ids, []string{"D"}, "claimed at the recorded NextPushAt")
	equal(t, attempts["D"], 2, "attempts as recorded")

	// The claim leased D until 8m. A record of an older push changes
	// nothing: not the attempts, not when D is due.
	record(t, s, pushed("D", at(30*time.Second), 9, t0))
	ids, _ = claimedIDs(t, s, claimAt(at(4*time.Minute), at(4*time.Minute), 10))
	equal(t, ids, []string{}, "claimed after an older push's record")
	ids, attempts = claimedIDs(t, s, claimAt(at(8*time.Minute), at(8*time.Minute), 10))
	equal(t, ids, []string{"D"}, "claimed at the lease's end")
	equal(t, attempts["D"], 2, "attempts after an older push's record")

	// A newer record replaces the state, and writing it again changes
	// nothing.
	newer := pushed("D", at(9*time.Minute), 3, at(20*time.Minute))
	newer.Status, newer.Reason, newer.Retry = 503, "ServiceUnavailable", true
	for range 2 {
		record(t, s, newer)
		ids, _ = claimedIDs(t, s, claimAt(at(20*time.Minute-time.Microsecond), at(20*time.Minute), 10))
		equal(t, ids, []string{}, "claimed before the newer record's NextPushAt")
	}
	ids, attempts = claimedIDs(t, s, claimAt(at(20*time.Minute), at(20*time.Minute), 10))
	equal(t, ids, []string{"D"}, "claimed at the newer record's NextPushAt")
	equal(t, attempts["D"], 3, "attempts of the newer record")

	// A record of the same time replaces the state too.
	same := pushed("D", at(9*time.Minute), 4, at(21*time.Minute))
	record(t, s, same)
	_, attempts = claimedIDs(t, s, claimAt(at(time.Hour), at(time.Hour), 10))
	equal(t, attempts["D"], 4, "attempts after a record of the same push time")

	// Retry makes an enrollment without open commands due; without it,
	// the enrollment rests.
	enrollDevice(t, s, t0, "R")
	failed := pushed("R", at(time.Minute), 1, at(2*time.Minute))
	failed.Status, failed.Retry = 0, true
	record(t, s, failed)
	ids, attempts = claimedIDs(t, s, claimAt(at(2*time.Minute), at(2*time.Minute), 10))
	equal(t, ids, []string{"R"}, "claimed for a retry")
	equal(t, attempts["R"], 1, "attempts of the retry")
	record(t, s, pushed("R", at(3*time.Minute), 2, at(4*time.Minute)))
	ids, _ = claimedIDs(t, s, claimAt(at(time.Hour), at(time.Hour), 10))
	equal(t, ids, []string{}, "claimed without open commands or retry")
}

func testPushTokenInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	enrollDevice(t, s, t0, "D", "U")
	enqueue(t, s, command("c1", 0, t0), "D", "D:U")
	gone := pushed("D:U", at(time.Minute), 1, at(2*time.Minute))
	gone.Status, gone.Reason, gone.TokenInvalid = 410, "Unregistered", true
	record(t, s, gone)
	equal(t, pushTargets(t, s, "D", "D:U"), []push.Target{targetOf("D")}, "targets after a token was refused")
	ids, _ := claimedIDs(t, s, claimAt(at(time.Hour), at(time.Hour), 10))
	equal(t, ids, []string{"D"}, "claimed after a token was refused")

	// The mark stays until the next TokenUpdate, whatever is recorded.
	record(t, s, pushed("D:U", at(2*time.Minute), 1, at(3*time.Minute)))
	equal(t, pushTargets(t, s, "D:U"), []push.Target(nil), "targets after a later record")
	must(t, s.StoreTokenUpdate(ctx, tokenMsg("D:U"), nil, at(3*time.Minute)), "TokenUpdate")
	equal(t, pushTargets(t, s, "D:U"), []push.Target{targetOf("D:U")}, "targets after the TokenUpdate")

	// A refusal of a token the enrollment no longer has marks nothing: a
	// TokenUpdate brought a new one while the push was in flight.
	tu := tokenMsg("D")
	tu.Token = []byte("new-token")
	must(t, s.StoreTokenUpdate(ctx, tu, nil, at(4*time.Minute)), "TokenUpdate with a new token")
	stale := pushed("D", at(4*time.Minute), 1, at(5*time.Minute)) // pushed the old token
	stale.Status, stale.TokenInvalid = 410, true
	record(t, s, stale)
	equal(t, len(pushTargets(t, s, "D")), 1, "targets after the refusal of an old token")

	// Nor does the refusal of an older push than the one recorded.
	record(t, s, push.PushRecord{EnrollmentID: "D", Token: []byte("new-token"), PushedAt: at(10 * time.Minute),
		Status: 200, Attempts: 1, NextPushAt: at(11 * time.Minute)})
	older := push.PushRecord{EnrollmentID: "D", Token: []byte("new-token"), PushedAt: at(9 * time.Minute),
		Status: 410, TokenInvalid: true, Attempts: 1, NextPushAt: at(11 * time.Minute)}
	record(t, s, older)
	equal(t, len(pushTargets(t, s, "D")), 1, "targets after an older push's refusal")

	// The refusal of the current token, from the latest push, marks it.
	older.PushedAt = at(10 * time.Minute)
	record(t, s, older)
	equal(t, pushTargets(t, s, "D"), []push.Target(nil), "targets after the current token was refused")
}

func testClaimPendingPushes(t *testing.T, s Store) {
	ctx := t.Context()
	now := at(time.Minute)
	equal(t, claim(t, s, claimAt(now, now, 10)), []push.PendingPush(nil), "claim of an empty store")

	// Each device is one case; its name says whether it is due now (DUE),
	// only later (LATER) or not at all (NOT).
	open := func(id string, created time.Time) {
		t.Helper()
		enrollDevice(t, s, t0, id)
		enqueue(t, s, command("cmd-"+id, 0, created), id)
	}
	open("DUE-NEVER-PUSHED", t0)
	open("LATER-QUEUED-TOO-RECENTLY", at(time.Microsecond))
	enrollDevice(t, s, t0, "NOT-NOTHING-QUEUED")
	open("NOT-ACKNOWLEDGED", t0)
	answer(t, s, "NOT-ACKNOWLEDGED", "cmd-NOT-ACKNOWLEDGED", mdm.StatusAcknowledged, at(time.Second))
	open("DUE-NOTNOW", t0)
	answer(t, s, "DUE-NOTNOW", "cmd-DUE-NOTNOW", mdm.StatusNotNow, at(time.Second))
	open("NOT-CANCELLED", t0)
	_, err := s.CancelCommand(ctx, "cmd-NOT-CANCELLED", at(time.Second))
	must(t, err, "CancelCommand")
	enrollDevice(t, s, t0, "NOT-EXPIRED")
	expiring := command("cmd-NOT-EXPIRED", 0, t0)
	expiring.ExpiresAt = now
	enqueue(t, s, expiring, "NOT-EXPIRED")
	open("NOT-CHECKED-OUT", t0)
	must(t, s.CheckOut(ctx, "NOT-CHECKED-OUT", t0), "CheckOut")
	open("NOT-TOKEN-INVALID", t0)
	invalid := pushed("NOT-TOKEN-INVALID", t0, 1, t0)
	invalid.TokenInvalid = true
	record(t, s, invalid)
	open("LATER-BACKING-OFF", t0)
	record(t, s, pushed("LATER-BACKING-OFF", t0, 1, now.Add(time.Microsecond)))
	open("DUE-BACKED-OFF", t0)
	record(t, s, pushed("DUE-BACKED-OFF", t0, 2, now))
	open("DUE-QUEUED-AFTER-PUSH", now) // QueuedBefore is for enrollments never pushed
	record(t, s, pushed("DUE-QUEUED-AFTER-PUSH", t0, 1, t0))
	retry := pushed("DUE-RETRY", t0, 3, now)
	retry.Retry = true
	enrollDevice(t, s, t0, "DUE-RETRY")
	record(t, s, retry)
	retry = pushed("LATER-RETRY", t0, 3, now.Add(time.Microsecond))
	retry.Retry = true
	enrollDevice(t, s, t0, "LATER-RETRY")
	record(t, s, retry)
	enrollDevice(t, s, t0, "NOT-NO-RETRY")
	record(t, s, pushed("NOT-NO-RETRY", t0, 1, t0))
	enrollDevice(t, s, t0, "NOT-EXPIRED-AFTER-PUSH")
	record(t, s, pushed("NOT-EXPIRED-AFTER-PUSH", t0, 1, t0))
	expiring = command("cmd-NOT-EXPIRED-AFTER-PUSH", 0, t0)
	expiring.ExpiresAt = now
	enqueue(t, s, expiring, "NOT-EXPIRED-AFTER-PUSH")

	c := push.PushClaim{Now: now, QueuedBefore: t0, LeaseUntil: at(10 * time.Minute), Limit: 100}
	due := claim(t, s, c)
	got := map[string]push.PendingPush{}
	for _, p := range due {
		got[p.Target.EnrollmentID] = p
	}
	want := map[string]push.PendingPush{}
	for id, attempts := range map[string]int{"DUE-NEVER-PUSHED": 0, "DUE-NOTNOW": 0, "DUE-BACKED-OFF": 2,
		"DUE-QUEUED-AFTER-PUSH": 1, "DUE-RETRY": 3} {
		want[id] = push.PendingPush{Target: targetOf(id), Attempts: attempts}
	}
	equal(t, got, want, "claimed enrollments")
	equal(t, len(due), len(got), "enrollments claimed (repeats included)")

	// Claimed means leased: not due again until the lease ends, and then
	// with a push state of their own.
	equal(t, claim(t, s, c), []push.PendingPush(nil), "a second claim at once")
	ids, attempts := claimedIDs(t, s, claimAt(at(10*time.Minute-time.Microsecond), t0, 100))
	equal(t, ids, []string{"LATER-BACKING-OFF", "LATER-RETRY"}, "claimed before the lease ends")
	equal(t, attempts, map[string]int{"LATER-BACKING-OFF": 1, "LATER-RETRY": 3}, "attempts before the lease ends")
	ids, attempts = claimedIDs(t, s, claimAt(at(10*time.Minute), at(time.Microsecond), 100))
	equal(t, ids, []string{"DUE-BACKED-OFF", "DUE-NEVER-PUSHED", "DUE-NOTNOW", "DUE-QUEUED-AFTER-PUSH", "DUE-RETRY",
		"LATER-QUEUED-TOO-RECENTLY"}, "claimed when the lease ends")
	equal(t, attempts, map[string]int{"DUE-NEVER-PUSHED": 0, "DUE-NOTNOW": 0, "DUE-BACKED-OFF": 2,
		"DUE-QUEUED-AFTER-PUSH": 1, "DUE-RETRY": 3, "LATER-QUEUED-TOO-RECENTLY": 0}, "attempts when the lease ends")
}

func testClaimPendingPushesOrder(t *testing.T, s Store) {
	for _, id := range []string{"A", "B", "C", "D", "E"} {
		enrollDevice(t, s, t0, id)
		enqueue(t, s, command("cmd-"+id, 0, t0), id)
	}
	record(t, s, pushed("A", t0, 1, at(3*time.Minute)), pushed("B", t0, 1, at(time.Minute)),
		pushed("D", t0, 1, at(2*time.Minute)))
	ids := func(due []push.PendingPush) []string {
		out := []string{}
		for _, p := range due {
			out = append(out, p.Target.EnrollmentID)
		}
		return out
	}
	c := claimAt(at(5*time.Minute), at(5*time.Minute), 3)
	// Never pushed first, then the longest waiting.
	equal(t, ids(claim(t, s, c)), []string{"C", "E", "B"}, "first claim of 3")
	equal(t, ids(claim(t, s, c)), []string{"D", "A"}, "second claim of 3")
	equal(t, ids(claim(t, s, c)), []string{}, "third claim of 3")
}

// testClaimPendingPushesRace is replicas sweeping at once: every due
// enrollment is claimed, by one of them. Each round starts when the
// previous round's leases end, so every enrollment is due again.
func testClaimPendingPushesRace(t *testing.T, s Store) {
	const enrollments, sweepers, rounds = 30, 8, 4
	var want []string
	for i := range enrollments {
		id := fmt.Sprintf("D%02d", i)
		enrollDevice(t, s, t0, id)
		enqueue(t, s, command("cmd-"+id, 0, t0), id)
		want = append(want, id)
	}
	for round := range rounds {
		c := claimAt(at(time.Minute+time.Duration(round)*5*time.Minute), t0, 3)
		claimed := make([][]string, sweepers)
		errs := make([]error, sweepers)
		var wg sync.WaitGroup
		for i := range sweepers {
			wg.Go(func() {
				for {
					due, err := s.ClaimPendingPushes(t.Context(), c)
					if err != nil || len(due) == 0 {
						errs[i] = err
						return
					}
					for _, p := range due {
						claimed[i] = append(claimed[i], p.Target.EnrollmentID)
					}
				}
			})
		}
		wg.Wait()
		var all []string
		for i := range sweepers {
			must(t, errs[i], "round %d: sweeper %d", round, i)
			all = append(all, claimed[i]...)
		}
		slices.Sort(all)
		equal(t, all, want, "round %d: enrollments claimed by all sweepers (each once)", round)
	}
}

func testTokenUpdateResetsPushState(t *testing.T, s Store) {
	ctx := t.Context()
	enrollDevice(t, s, t0, "D")
	enqueue(t, s, command("c1", 0, t0), "D")
	record(t, s, pushed("D", at(time.Minute), 4, at(time.Hour)))
	ids, _ := claimedIDs(t, s, claimAt(at(2*time.Minute), at(time.Minute), 10))
	equal(t, ids, []string{}, "claimed while backing off")

	must(t, s.StoreTokenUpdate(ctx, tokenMsg("D"), nil, at(2*time.Minute)), "TokenUpdate")
	ids, attempts := claimedIDs(t, s, claimAt(at(2*time.Minute), at(time.Minute), 10))
	equal(t, ids, []string{"D"}, "claimed after a TokenUpdate")
	equal(t, attempts["D"], 0, "attempts after a TokenUpdate")
}

func testPushCertificates(t *testing.T, s Store) {
	ctx := t.Context()
	certs, err := s.PushCertificates(ctx)
	must(t, err, "PushCertificates of an empty store")
	equal(t, certs, []push.StoredCertificate(nil), "certificates of an empty store")

	b := push.StoredCertificate{Topic: "com.apple.mgmt.B", CertPEM: []byte("cert B"), SealedKey: []byte("key B"),
		NotAfter: at(365 * 24 * time.Hour), UpdatedAt: t0}
	a := push.StoredCertificate{Topic: "com.apple.mgmt.A", CertPEM: []byte("cert A"), SealedKey: []byte("key A"),
		NotAfter: at(24 * time.Hour), UpdatedAt: t0}
	for _, c := range []push.StoredCertificate{b, a, b} {
		must(t, s.PutPushCertificate(ctx, c), "PutPushCertificate %s", c.Topic)
	}
	certs, err = s.PushCertificates(ctx)
	must(t, err, "PushCertificates")
	equal(t, certs, []push.StoredCertificate{a, b}, "certificates by topic")

	// A renewal replaces the certificate of its topic.
	renewed := push.StoredCertificate{Topic: a.Topic, CertPEM: []byte("cert A2"), SealedKey: []byte("key A2"),
		NotAfter: at(2 * 365 * 24 * time.Hour), UpdatedAt: at(time.Hour)}
	must(t, s.PutPushCertificate(ctx, renewed), "PutPushCertificate renewed")
	certs, err = s.PushCertificates(ctx)
	must(t, err, "PushCertificates")
	equal(t, certs, []push.StoredCertificate{renewed, b}, "certificates after a renewal")

	if err := s.PutPushCertificate(ctx, push.StoredCertificate{CertPEM: []byte("x"), SealedKey: []byte("y")}); err == nil {
		t.Error("PutPushCertificate stored a certificate without a topic")
	}
}

func testTopicUsage(t *testing.T, s Store) {
	ctx := t.Context()
	usage, err := s.TopicUsage(ctx)
	must(t, err, "TopicUsage of an empty store")
	equal(t, len(usage), 0, "topics of an empty store")

	enrollDevice(t, s, t0, "D1", "U")
	enrollDevice(t, s, t0, "D2")
	must(t, s.StoreAuthenticate(ctx, authMsg("OTHER"), hash("OTHER"), t0), "Authenticate")
	other := tokenMsg("OTHER")
	other.Topic = "com.apple.mgmt.other"
	must(t, s.StoreTokenUpdate(ctx, other, nil, t0), "TokenUpdate")
	enrollDevice(t, s, t0, "OFF")
	must(t, s.CheckOut(ctx, "OFF", t0), "CheckOut")
	must(t, s.StoreAuthenticate(ctx, authMsg("NEW"), hash("NEW"), t0), "Authenticate without TokenUpdate")

	usage, err = s.TopicUsage(ctx)
	must(t, err, "TopicUsage")
	equal(t, usage, map[string]int{topic: 3, "com.apple.mgmt.other": 1}, "enabled enrollments by topic")
}

func testPutSettings(t *testing.T, s Store) {
	ctx := t.Context()
	setting := func(name string) string {
		t.Helper()
		v, err := s.Setting(ctx, name)
		must(t, err, "Setting %s", name)
		return string(v)
	}
	must(t, s.PutSettings(ctx, nil), "PutSettings of nothing")
	_, err := s.CreateSetting(ctx, "ca.key", []byte("old key"))
	must(t, err, "CreateSetting")

	for range 2 {
		must(t, s.PutSettings(ctx, map[string][]byte{"ca.key": []byte("new key"), "ca.cert": []byte("new cert"),
			"empty": nil}), "PutSettings")
		equal(t, []string{setting("ca.key"), setting("ca.cert"), setting("empty")},
			[]string{"new key", "new cert", ""}, "settings after PutSettings")
	}
	v, err := s.CreateSetting(ctx, "ca.key", []byte("racing replica's key"))
	must(t, err, "CreateSetting")
	equal(t, string(v), "new key", "CreateSetting of a replaced setting")

	must(t, s.PutSetting(ctx, "ca.cert", []byte("newer cert")), "PutSetting")
	equal(t, setting("ca.cert"), "newer cert", "setting after PutSetting")
	equal(t, setting("ca.key"), "new key", "other setting after PutSetting")
}

func testCertDeviceRevoked(t *testing.T, s Store) {
	ctx := t.Context()
	must(t, s.StoreAuthenticate(ctx, authMsg("D"), hash("cert-D"), t0), "Authenticate")
	must(t, s.RecordCertificate(ctx, storage.Certificate{Serial: "01", SHA256: hash("cert-D"), Subject: "CN=D",
		NotAfter: at(time.Hour), CreatedAt: t0}), "RecordCertificate")
	id, err := s.CertDevice(ctx, hash("cert-D"))
	must(t, err, "CertDevice of a recorded certificate")
	equal(t, id, "D", "CertDevice of a recorded certificate")

	must(t, s.StoreAuthenticate(ctx, authMsg("R"), hash("cert-R"), t0), "Authenticate")
	must(t, s.RecordCertificate(ctx, storage.Certificate{Serial: "02", SHA256: hash("cert-R"), Subject: "CN=R",
		NotAfter: at(time.Hour), Revoked: true, CreatedAt: t0}), "RecordCertificate revoked")
	_, err = s.CertDevice(ctx, hash("cert-R"))
	wantErr(t, err, storage.ErrNotFound, "CertDevice of a revoked certificate")
	h, _, err := s.CertBinding(ctx, "R")
	must(t, err, "CertBinding")
	equal(t, h, hash("cert-R"), "binding of a revoked certificate")
}
