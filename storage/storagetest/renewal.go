package storagetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

const day = 24 * time.Hour

// issued records the certificate hash(certName) as issued by bramley,
// expiring at notAfter.
func issued(t *testing.T, s Store, certName string, notAfter time.Time, revoked bool) {
	t.Helper()
	must(t, s.RecordCertificate(t.Context(), storage.Certificate{Serial: fmt.Sprintf("%x", hash(certName)[:8]),
		SHA256: hash(certName), Subject: "CN=" + certName + ",O=bramley", NotAfter: notAfter, Revoked: revoked,
		CreatedAt: t0}), "RecordCertificate %s", certName)
}

// expiringDevice enrolls the device with the certificate named by its ID,
// issued by bramley and expiring at notAfter.
func expiringDevice(t *testing.T, s Store, id string, notAfter time.Time) {
	t.Helper()
	enrollDevice(t, s, t0, id)
	issued(t, s, id, notAfter, false)
}

// renewalClaim claims at now what expires within 30 days, retrying
// attempts made a day before now, leasing for 15 minutes.
func renewalClaim(now time.Time, limit int) enroll.RenewalClaim {
	return enroll.RenewalClaim{Now: now, ExpiresBefore: now.Add(30 * day), RetryBefore: now.Add(-day),
		LeaseUntil: now.Add(15 * time.Minute), Limit: limit}
}

func claimExpiring(t *testing.T, s Store, c enroll.RenewalClaim) []enroll.ExpiringIdentity {
	t.Helper()
	due, err := s.ExpiringIdentities(t.Context(), c)
	must(t, err, "ExpiringIdentities %+v", c)
	return due
}

// expiringIDs returns the device IDs of a claim in the order returned, and
// each one's Attempts.
func expiringIDs(t *testing.T, s Store, c enroll.RenewalClaim) ([]string, map[string]int) {
	t.Helper()
	ids := []string{}
	attempts := map[string]int{}
	for _, id := range claimExpiring(t, s, c) {
		ids = append(ids, id.DeviceID)
		attempts[id.DeviceID] = id.Attempts
	}
	return ids, attempts
}

func recordAttempt(t *testing.T, s Store, deviceID, uuid, certName string, now time.Time) {
	t.Helper()
	must(t, s.RecordRenewalAttempt(t.Context(), deviceID, uuid, hash(certName), now),
		"RecordRenewalAttempt %s %s", deviceID, uuid)
}

func testExpiringIdentities(t *testing.T, s Store) {
	ctx := t.Context()
	now := t0
	_, err := s.ExpiringIdentities(ctx, renewalClaim(now, 0))
	if err == nil {
		t.Error("ExpiringIdentities with limit 0: no error")
	}
	equal(t, claimExpiring(t, s, renewalClaim(now, 10)), []enroll.ExpiringIdentity(nil), "claim of an empty store")

	// Each device is one case; DUE ones are due, the others not.
	expiringDevice(t, s, "DUE-LATE", at(10*day))
	expiringDevice(t, s, "DUE-SOON", at(4*day))
	expiringDevice(t, s, "LATER", at(60*day)) // not within the window
	expiringDevice(t, s, "EXPIRED", now)      // expired at now: it cannot fetch commands
	enrollDevice(t, s, t0, "REVOKED")
	issued(t, s, "REVOKED", at(day), true)
	enrollDevice(t, s, t0, "FOREIGN") // its certificate is not one bramley issued
	expiringDevice(t, s, "OFF", at(day))
	must(t, s.CheckOut(ctx, "OFF", t0), "CheckOut")
	must(t, s.StoreAuthenticate(ctx, authMsg("NEW"), hash("NEW"), t0), "Authenticate without TokenUpdate")
	issued(t, s, "NEW", at(day), false)
	issued(t, s, "UNBOUND", at(day), false) // bound to no device

	// Soonest expiry first; Limit caps a claim.
	first := claimExpiring(t, s, renewalClaim(now, 1))
	equal(t, first, []enroll.ExpiringIdentity{{DeviceID: "DUE-SOON", CertSHA256: hash("DUE-SOON"),
		Subject: "CN=DUE-SOON,O=bramley", NotAfter: at(4 * day), Topic: topic}}, "first claim, limit 1")
	// The claimed identity is leased: the next claim passes it over.
	ids, _ := expiringIDs(t, s, renewalClaim(now, 10))
	equal(t, ids, []string{"DUE-LATE"}, "second claim")
	ids, _ = expiringIDs(t, s, renewalClaim(now.Add(15*time.Minute-time.Microsecond), 10))
	equal(t, ids, []string{}, "claim during the leases")
	// A lease that ends without an attempt makes the identity due again.
	ids, attempts := expiringIDs(t, s, renewalClaim(now.Add(15*time.Minute), 10))
	equal(t, ids, []string{"DUE-SOON", "DUE-LATE"}, "claim at the leases' end")
	equal(t, attempts, map[string]int{"DUE-SOON": 0, "DUE-LATE": 0}, "attempts before any")

	// An attempt ends the lease and holds the identity until RetryBefore
	// passes it.
	recordAttempt(t, s, "DUE-LATE", "cmd-1", "DUE-LATE", at(20*time.Minute))
	ids, _ = expiringIDs(t, s, renewalClaim(at(day+20*time.Minute-time.Microsecond), 10))
	equal(t, ids, []string{"DUE-SOON"}, "claim before the attempt's retry") // DUE-SOON's lease ended
	ids, attempts = expiringIDs(t, s, renewalClaim(at(day+20*time.Minute), 10))
	equal(t, ids, []string{"DUE-LATE"}, "claim at the attempt's retry")
	equal(t, attempts["DUE-LATE"], 1, "attempts after one")

	// A repeated record of one command counts once; another command counts.
	recordAttempt(t, s, "DUE-LATE", "cmd-2", "DUE-LATE", at(2*day))
	recordAttempt(t, s, "DUE-LATE", "cmd-2", "DUE-LATE", at(2*day+time.Hour))
	_, attempts = expiringIDs(t, s, renewalClaim(at(3*day), 10))
	equal(t, attempts["DUE-LATE"], 2, "attempts after a repeated record")

	// A device bound to a new certificate since its attempts is due at
	// once, its count started over.
	recordAttempt(t, s, "DUE-LATE", "cmd-3", "DUE-LATE", at(3*day))
	issued(t, s, "DUE-LATE-2", at(5*day), false)
	must(t, s.RebindCert(ctx, "DUE-LATE", hash("DUE-LATE-2"), at(3*day)), "RebindCert")
	got := claimExpiring(t, s, renewalClaim(at(3*day), 10))
	equal(t, got, []enroll.ExpiringIdentity{{DeviceID: "DUE-LATE", CertSHA256: hash("DUE-LATE-2"),
		Subject: "CN=DUE-LATE-2,O=bramley", NotAfter: at(5 * day), Topic: topic}}, "claim after a new certificate")

	// NotAfter must be before ExpiresBefore.
	edge := renewalClaim(at(3*day), 10)
	edge.ExpiresBefore = at(60 * day)
	ids, _ = expiringIDs(t, s, edge)
	equal(t, ids, []string{}, "claim with ExpiresBefore at a NotAfter")
	edge.ExpiresBefore = at(60*day + time.Microsecond)
	ids, _ = expiringIDs(t, s, edge)
	equal(t, ids, []string{"LATER"}, "claim with ExpiresBefore just after a NotAfter")

	// An unknown device records nothing, without error.
	recordAttempt(t, s, "NOPE", "cmd-x", "NOPE", t0)
	statuses, err := s.RenewalStatuses(ctx, enroll.RenewalQuery{Now: at(3 * day), FailBefore: at(3 * day)})
	must(t, err, "RenewalStatuses")
	for _, st := range statuses {
		if st.DeviceID == "NOPE" {
			t.Error("an attempt was recorded for an unknown device")
		}
	}
}

// testExpiringIdentitiesRace is several replicas sweeping at once: each
// identity is claimed by one of them.
func testExpiringIdentitiesRace(t *testing.T, s Store) {
	const devices, racers = 40, 6
	for i := range devices {
		expiringDevice(t, s, fmt.Sprintf("D%02d", i), at(day+time.Duration(i%5)*time.Hour))
	}
	// Half the devices have a stale attempt, so claims update rows as well
	// as insert them.
	for i := 0; i < devices; i += 2 {
		recordAttempt(t, s, fmt.Sprintf("D%02d", i), fmt.Sprintf("old-%d", i), "an older certificate", t0)
	}
	got := make([][]string, racers)
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for r := range racers {
		wg.Go(func() {
			for {
				due, err := s.ExpiringIdentities(t.Context(), renewalClaim(at(time.Minute), 3))
				if err != nil {
					errs[r] = err
					return
				}
				if len(due) == 0 {
					return
				}
				for _, d := range due {
					got[r] = append(got[r], d.DeviceID)
				}
			}
		})
	}
	wg.Wait()
	var all []string
	for r := range racers {
		must(t, errs[r], "racer %d", r)
		all = append(all, got[r]...)
	}
	slices.Sort(all)
	want := make([]string, devices)
	for i := range want {
		want[i] = fmt.Sprintf("D%02d", i)
	}
	equal(t, all, want, "identities claimed, over all racers")
}

func testRenewalStatuses(t *testing.T, s Store) {
	ctx := t.Context()
	now := at(2 * time.Hour)
	query := enroll.RenewalQuery{Now: now, FailBefore: now.Add(7 * day)}
	none, err := s.RenewalStatuses(ctx, query)
	must(t, err, "RenewalStatuses of an empty store")
	equal(t, none, []enroll.RenewalStatus(nil), "statuses of an empty store")

	// attempted enrolls a device whose certificate expires at notAfter,
	// with one attempt, its command answered status ("" leaves it Pending;
	// "-" queues none).
	attempted := func(id string, notAfter time.Time, status string) {
		t.Helper()
		expiringDevice(t, s, id, notAfter)
		uuid := "cmd-" + id
		if status != "-" {
			cmd := command(uuid, 0, t0)
			if id == "EXPCMD" {
				cmd.ExpiresAt = at(time.Hour)
			}
			enqueue(t, s, cmd, id)
		}
		if status != "" && status != "-" {
			answer(t, s, id, uuid, status, at(time.Hour))
		}
		recordAttempt(t, s, id, uuid, id, at(time.Minute))
	}
	attempted("PEND", at(20*day), "")
	attempted("ACK", at(20*day), mdm.StatusAcknowledged) // answered, not yet checked in with the new identity
	attempted("NOTNOW", at(20*day), mdm.StatusNotNow)
	attempted("NOCMD", at(20*day), "-") // its command is no longer queued
	attempted("EXPCMD", at(20*day), "") // its command expired undelivered
	attempted("ERR", at(20*day), mdm.StatusError)
	attempted("CFE", at(20*day), mdm.StatusCommandFormatError)
	attempted("SOON", now.Add(7*day), "") // expires within the 7 days
	attempted("GONE", now, "")            // expired
	attempted("ERRGONE", now, mdm.StatusError)
	attempted("RENEWED", at(day), mdm.StatusError) // the device renewed anyway
	must(t, s.RebindCert(ctx, "RENEWED", hash("RENEWED-2"), at(time.Hour)), "RebindCert")
	attempted("OFF", at(day), mdm.StatusError)
	must(t, s.CheckOut(ctx, "OFF", at(time.Hour)), "CheckOut")
	expiringDevice(t, s, "CLAIMED", at(day)) // claimed, no attempt yet: not listed
	claimExpiring(t, s, renewalClaim(t0, 100))

	statuses, err := s.RenewalStatuses(ctx, query)
	must(t, err, "RenewalStatuses")
	type row struct{ id, state, reason, status string }
	var rows []row
	for _, st := range statuses {
		rows = append(rows, row{st.DeviceID, st.State, st.Reason, st.LastStatus})
	}
	equal(t, rows, []row{
		{"ACK", enroll.RenewalPending, "", mdm.StatusAcknowledged},
		{"CFE", enroll.RenewalFailed, enroll.ReasonCommandFailed, mdm.StatusCommandFormatError},
		{"ERR", enroll.RenewalFailed, enroll.ReasonCommandFailed, mdm.StatusError},
		{"ERRGONE", enroll.RenewalFailed, enroll.ReasonCommandFailed, mdm.StatusError},
		{"EXPCMD", enroll.RenewalPending, "", storage.StatusExpired},
		{"GONE", enroll.RenewalFailed, enroll.ReasonExpired, storage.StatusPending},
		{"NOCMD", enroll.RenewalPending, "", ""},
		{"NOTNOW", enroll.RenewalPending, "", mdm.StatusNotNow},
		{"OFF", enroll.RenewalUnenrolled, "", mdm.StatusError},
		{"PEND", enroll.RenewalPending, "", storage.StatusPending},
		{"RENEWED", enroll.RenewalRenewed, "", mdm.StatusError},
		{"SOON", enroll.RenewalFailed, enroll.ReasonExpiring, storage.StatusPending},
	}, "states, ordered by device ID")

	failed, err := s.RenewalStatuses(ctx, enroll.RenewalQuery{Now: now, FailBefore: now.Add(7 * day), FailedOnly: true})
	must(t, err, "RenewalStatuses of the failed")
	ids := []string{}
	for _, st := range failed {
		ids = append(ids, st.DeviceID)
	}
	equal(t, ids, []string{"CFE", "ERR", "ERRGONE", "GONE", "SOON"}, "failed renewals")
	equal(t, failed[1], enroll.RenewalStatus{DeviceID: "ERR", SerialNumber: "SER-ERR", NotAfter: at(20 * day),
		Attempts: 1, LastAttempt: at(time.Minute), LastCommandUUID: "cmd-ERR", LastStatus: mdm.StatusError,
		State: enroll.RenewalFailed, Reason: enroll.ReasonCommandFailed}, "a failed renewal, in full")

	// Attempts count the commands sent for one certificate, and start over
	// for the next.
	recordAttempt(t, s, "PEND", "cmd-PEND-2", "PEND", at(time.Hour))
	issued(t, s, "SOON-2", at(20*day), false)
	must(t, s.RebindCert(ctx, "SOON", hash("SOON-2"), at(time.Hour)), "RebindCert")
	recordAttempt(t, s, "SOON", "cmd-SOON-2", "SOON-2", at(time.Hour))
	for _, st := range renewalStatuses(t, s, query) {
		switch st.DeviceID {
		case "PEND":
			equal(t, [2]any{st.Attempts, st.LastCommandUUID}, [2]any{2, "cmd-PEND-2"}, "PEND after a second attempt")
			equal(t, st.LastAttempt, at(time.Hour), "PEND's last attempt")
		case "SOON":
			// An attempt for the device's new certificate.
			equal(t, [3]any{st.Attempts, st.State, st.NotAfter}, [3]any{1, enroll.RenewalPending, at(20 * day)},
				"SOON after an attempt for its next certificate")
		}
	}
}

func renewalStatuses(t *testing.T, s Store, q enroll.RenewalQuery) []enroll.RenewalStatus {
	t.Helper()
	statuses, err := s.RenewalStatuses(t.Context(), q)
	must(t, err, "RenewalStatuses")
	return statuses
}
