package storagetest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage"
)

func token(id string, maxUses int, expires time.Time) enroll.Token {
	return enroll.Token{ID: id, Hash: hash("secret-" + id), Label: "label " + id, MaxUses: maxUses,
		ExpiresAt: expires, CreatedAt: t0}
}

func testEnrollmentTokens(t *testing.T, s Store) {
	ctx := t.Context()
	_, err := s.UseEnrollmentToken(ctx, hash("secret-NOPE"), t0)
	wantErr(t, err, storage.ErrNotFound, "UseEnrollmentToken of an unknown token")

	twice := token("TWICE", 2, at(time.Hour))
	must(t, s.CreateEnrollmentToken(ctx, twice), "CreateEnrollmentToken")
	sameID := token("TWICE", 1, at(time.Hour))
	sameID.Hash = hash("another secret")
	wantErr(t, s.CreateEnrollmentToken(ctx, sameID), storage.ErrConflict, "CreateEnrollmentToken with a taken ID")
	sameHash := token("OTHER", 1, at(time.Hour))
	sameHash.Hash = twice.Hash
	wantErr(t, s.CreateEnrollmentToken(ctx, sameHash), storage.ErrConflict, "CreateEnrollmentToken with a taken hash")

	for i := 1; i <= 2; i++ {
		got, err := s.UseEnrollmentToken(ctx, twice.Hash, at(time.Minute))
		must(t, err, "use %d", i)
		want := twice
		want.Uses = i
		equal(t, *got, want, "token after use %d", i)
	}
	_, err = s.UseEnrollmentToken(ctx, twice.Hash, at(time.Minute))
	wantErr(t, err, enroll.ErrTokenUsedUp, "third use of a two-use token")

	// Refused uses change nothing: an expired attempt does not count.
	once := token("ONCE", 1, at(time.Hour))
	must(t, s.CreateEnrollmentToken(ctx, once), "CreateEnrollmentToken")
	_, err = s.UseEnrollmentToken(ctx, once.Hash, at(time.Hour))
	wantErr(t, err, enroll.ErrTokenExpired, "use at expiry")
	got, err := s.UseEnrollmentToken(ctx, once.Hash, at(59*time.Minute))
	must(t, err, "use before expiry")
	equal(t, got.Uses, 1, "uses after a refused and an accepted use")

	unlimited := token("UNLIMITED", 0, time.Time{})
	must(t, s.CreateEnrollmentToken(ctx, unlimited), "CreateEnrollmentToken")
	for i := 1; i <= 3; i++ {
		got, err := s.UseEnrollmentToken(ctx, unlimited.Hash, at(1000*time.Hour))
		must(t, err, "use %d of an unlimited token", i)
		equal(t, got.Uses, i, "uses of an unlimited token")
		equal(t, got.ExpiresAt.IsZero(), true, "expiry of a token that never expires")
	}
}

// testEnrollmentTokenRace is several people opening a one-use link at once.
func testEnrollmentTokenRace(t *testing.T, s Store) {
	const racers = 8
	ctx := t.Context()
	tok := token("ONCE", 1, at(time.Hour))
	must(t, s.CreateEnrollmentToken(ctx, tok), "CreateEnrollmentToken")
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() { _, errs[i] = s.UseEnrollmentToken(ctx, tok.Hash, t0) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, enroll.ErrTokenUsedUp):
			t.Errorf("racing use: %v", err)
		}
	}
	equal(t, won, 1, "uses granted of a one-use token")
}

func testChallenges(t *testing.T, s Store) {
	ctx := t.Context()
	create := func(secret string, c scep.Challenge) {
		t.Helper()
		h := sha256.Sum256([]byte(secret))
		must(t, s.CreateChallenge(ctx, h[:], c, t0), "CreateChallenge")
	}
	_, err := s.ConsumeChallenge(ctx, "unknown", t0)
	wantErr(t, err, storage.ErrNotFound, "ConsumeChallenge of an unknown challenge")

	c := scep.Challenge{Subject: "bramley 1234", EnrollmentID: "D", Source: "token T", ExpiresAt: at(time.Hour)}
	create("one-time", c)
	h := sha256.Sum256([]byte("one-time"))
	wantErr(t, s.CreateChallenge(ctx, h[:], c, t0), storage.ErrConflict, "CreateChallenge of a taken hash")
	got, err := s.ConsumeChallenge(ctx, "one-time", at(time.Minute))
	must(t, err, "ConsumeChallenge")
	equal(t, got, c, "consumed challenge")
	_, err = s.ConsumeChallenge(ctx, "one-time", at(time.Minute))
	wantErr(t, err, storage.ErrNotFound, "ConsumeChallenge of a used challenge")

	create("late", scep.Challenge{Subject: "late", ExpiresAt: at(time.Hour)})
	_, err = s.ConsumeChallenge(ctx, "late", at(time.Hour))
	wantErr(t, err, storage.ErrNotFound, "ConsumeChallenge at expiry")
	_, err = s.ConsumeChallenge(ctx, "LATE", at(time.Minute))
	wantErr(t, err, storage.ErrNotFound, "ConsumeChallenge of a near miss")
	got, err = s.ConsumeChallenge(ctx, "late", at(59*time.Minute))
	must(t, err, "ConsumeChallenge before expiry, after a refused attempt")
	equal(t, got.Subject, "late", "subject")

	create("forever", scep.Challenge{Subject: "forever"})
	got, err = s.ConsumeChallenge(ctx, "forever", at(10000*time.Hour))
	must(t, err, "ConsumeChallenge of a challenge without expiry")
	equal(t, got, scep.Challenge{Subject: "forever"}, "challenge without expiry")
}

// testChallengeRace is one challenge replayed at once by several clients.
func testChallengeRace(t *testing.T, s Store) {
	const racers = 8
	ctx := t.Context()
	h := sha256.Sum256([]byte("contested"))
	must(t, s.CreateChallenge(ctx, h[:], scep.Challenge{Subject: "x", ExpiresAt: at(time.Hour)}, t0), "CreateChallenge")
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() { _, errs[i] = s.ConsumeChallenge(ctx, "contested", t0) })
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, storage.ErrNotFound):
			t.Errorf("racer %d: %v", i, fmt.Errorf("consuming: %w", err))
		}
	}
	equal(t, won, 1, "racers that got the challenge")
}
