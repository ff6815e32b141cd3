package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeUserStore keeps local accounts in memory.
type fakeUserStore struct {
	mu    sync.Mutex
	users map[string]enroll.User
}

func (s *fakeUserStore) CreateUser(_ context.Context, u enroll.User) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[u.Username]; ok {
		return storage.ErrConflict
	}
	s.users[u.Username] = u
	return nil
}

func (s *fakeUserStore) UserByName(_ context.Context, name string) (*enroll.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[name]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return &u, nil
}

// usersAPI runs the real admin API creating users with the real Accounts
// (cheap hashing) over an in-memory store.
func usersAPI(t *testing.T) (map[string]string, *enroll.Accounts) {
	t.Helper()
	accounts := enroll.NewAccounts(&fakeUserStore{users: map[string]enroll.User{}},
		enroll.WithHashParams(enroll.HashParams{Memory: 64, Time: 1, Threads: 1}))
	a := api.New(nil, nil, fakeKeys{api.HashKey(testAPIKey)}, nil, api.WithAccounts(accounts))
	return fakeAPI(t, a.Handler()), accounts
}

func TestUserAdd(t *testing.T) {
	env, accounts := usersAPI(t)
	env["ALICE_PW"] = "correct horse battery"
	out, err := bramley(t, envOf(env), "user", "add", "--username", "alice", "--password-env", "ALICE_PW")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Created user alice.") {
		t.Errorf("output: %q", out)
	}
	if _, err := accounts.Authenticate(t.Context(), "alice", "correct horse battery"); err != nil {
		t.Fatalf("alice cannot sign in: %v", err)
	}
	_, err = bramley(t, envOf(env), "user", "add", "--username", "alice", "--password-env", "ALICE_PW")
	if err == nil || !strings.Contains(err.Error(), "(HTTP 409)") {
		t.Fatalf("taken username: err = %v", err)
	}
}

func TestUserAddStdin(t *testing.T) {
	env, accounts := usersAPI(t)
	cmd := userCommand(envOf(env), new(bytes.Buffer))
	cmd.SetIn(strings.NewReader("a password from stdin\nignored\n"))
	cmd.SetArgs([]string{"add", "--username", "bob"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := accounts.Authenticate(t.Context(), "bob", "a password from stdin"); err != nil {
		t.Fatalf("bob cannot sign in: %v", err)
	}
}

func TestUserAddRefused(t *testing.T) {
	env, _ := usersAPI(t)
	env["SHORT"] = "short"
	for _, tt := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"no username", []string{"--password-env", "SHORT"}, "", "--username is required"},
		{"unset variable", []string{"--username", "a", "--password-env", "NOPE"}, "", "NOPE is empty or not set"},
		{"empty stdin", []string{"--username", "a"}, "", "no password"},
		{"short", []string{"--username", "a", "--password-env", "SHORT"}, "", "at least 12 characters"},
		{"server refuses", []string{"--username", "a:b"}, "long enough password\n", "(HTTP 400)"},
		{"password flag", []string{"--username", "a", "--password", "x"}, "", "unknown flag"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := userCommand(envOf(env), new(bytes.Buffer))
			cmd.SetIn(strings.NewReader(tt.stdin))
			cmd.SetArgs(append([]string{"add"}, tt.args...))
			cmd.SilenceErrors, cmd.SilenceUsage = true, true
			err := cmd.ExecuteContext(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
