package storagetest

import (
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/storage"
)

func testUsers(t *testing.T, s Store) {
	ctx := t.Context()
	_, err := s.UserByName(ctx, "nobody")
	wantErr(t, err, storage.ErrNotFound, "UserByName of an unknown user")

	alice := enroll.User{Username: "alice", PasswordHash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", CreatedAt: t0}
	must(t, s.CreateUser(ctx, alice), "CreateUser")
	got, err := s.UserByName(ctx, "alice")
	must(t, err, "UserByName")
	equal(t, *got, alice, "user read back")

	again := alice
	again.PasswordHash, again.CreatedAt = "$argon2id$other", at(time.Hour)
	wantErr(t, s.CreateUser(ctx, again), storage.ErrConflict, "CreateUser with a taken username")
	got, err = s.UserByName(ctx, "alice")
	must(t, err, "UserByName after a refused create")
	equal(t, *got, alice, "user after a refused create")

	// Usernames match exactly: no case folding, no trimming.
	for _, name := range []string{"Alice", "alice ", "alic"} {
		_, err := s.UserByName(ctx, name)
		wantErr(t, err, storage.ErrNotFound, "UserByName %q", name)
	}
	unicode := enroll.User{Username: "Zoë Ångström", PasswordHash: "$argon2id$x", CreatedAt: at(time.Minute)}
	must(t, s.CreateUser(ctx, unicode), "CreateUser with a non-ASCII name")
	got, err = s.UserByName(ctx, unicode.Username)
	must(t, err, "UserByName of a non-ASCII name")
	equal(t, *got, unicode, "non-ASCII user read back")
}
