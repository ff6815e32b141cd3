package enroll_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/storage"
)

type fakeUsers struct {
	mu    sync.Mutex
	users map[string]enroll.User
}

func (s *fakeUsers) CreateUser(_ context.Context, u enroll.User) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[u.Username]; ok {
		return storage.ErrConflict
	}
	s.users[u.Username] = u
	return nil
}

func (s *fakeUsers) UserByName(_ context.Context, name string) (*enroll.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[name]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return &u, nil
}

const alicePassword = "correct horse battery"

func signInHarness(t *testing.T) (*harness, http.Handler) {
	t.Helper()
	ca, signer := testPKI(t)
	h := newHarness(ca, signer, defaultConfig())
	accounts := enroll.NewAccounts(&fakeUsers{users: map[string]enroll.User{}},
		enroll.WithHashParams(enroll.HashParams{Memory: 64, Time: 1, Threads: 1}))
	if _, err := accounts.CreateUser(t.Context(), "alice", alicePassword); err != nil {
		t.Fatal(err)
	}
	return h, h.svc.SignInHandler(accounts)
}

func signInGet(hd http.Handler, target, user, password, remote string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	if user != "" || password != "" {
		r.SetBasicAuth(user, password)
	}
	r.RemoteAddr = remote
	rec := httptest.NewRecorder()
	hd.ServeHTTP(rec, r)
	return rec
}

const wantChallenge = `Basic realm="bramley enrollment", charset="UTF-8"`

func TestSignIn(t *testing.T) {
	h, hd := signInHarness(t)
	for _, tc := range []struct {
		name, user, password string
		status               int
	}{
		{"no credentials", "", "", http.StatusUnauthorized},
		{"wrong password", "alice", "wrong horse battery", http.StatusUnauthorized},
		{"unknown user", "mallory", alicePassword, http.StatusUnauthorized},
		{"invalid username", "a:b", alicePassword, http.StatusUnauthorized},
		{"right", "alice", alicePassword, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.store.challengeCount()
			rec := signInGet(hd, "/enroll", tc.user, tc.password, "192.0.2.1:5000")
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status == http.StatusUnauthorized {
				if got := rec.Header().Get("WWW-Authenticate"); got != wantChallenge {
					t.Fatalf("WWW-Authenticate = %q", got)
				}
				if h.store.challengeCount() != before {
					t.Fatal("a failed sign-in created a SCEP challenge")
				}
				return
			}
			if rec.Header().Get("Content-Type") != "application/x-apple-aspen-config" || h.store.challengeCount() != before+1 {
				t.Fatalf("no profile: %s, %d challenges", rec.Header().Get("Content-Type"), h.store.challengeCount())
			}
			h.store.mu.Lock()
			defer h.store.mu.Unlock()
			for _, c := range h.store.challenges {
				if c.challenge.Source != "user alice" {
					t.Fatalf("challenge source %q, want it to name the user", c.challenge.Source)
				}
			}
		})
	}
	// A token link works in basic mode too.
	h.addToken(t, "tok-secret", 1, 0, testNow.Add(time.Hour))
	if rec := signInGet(hd, "/enroll?token=tok-secret", "", "", "192.0.2.1:5000"); rec.Code != http.StatusOK {
		t.Fatalf("token in basic mode: %d %s", rec.Code, rec.Body)
	}
	if rec := signInGet(hd, "/enroll?token=nope", "", "", "192.0.2.1:5000"); rec.Code != http.StatusForbidden {
		t.Fatalf("unknown token in basic mode: %d", rec.Code)
	}
}

func TestSignInRateLimit(t *testing.T) {
	_, hd := signInHarness(t)
	// The clock stands still, so nothing refills: ten failures per
	// username, then 429, even with the right password, from anywhere.
	for i := range 10 {
		if rec := signInGet(hd, "/enroll", "alice", "wrong password!", "192.0.2.1:5000"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, rec.Code)
		}
	}
	rec := signInGet(hd, "/enroll", "alice", alicePassword, "198.51.100.7:5000")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("after 10 failures: %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	// Another user is not locked out by alice's failures…
	if rec := signInGet(hd, "/enroll", "bob", "wrong password!", "198.51.100.7:5000"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("another user: %d", rec.Code)
	}
	// …but one address trying many usernames is.
	codes := map[int]int{}
	for i := range 40 {
		rec := signInGet(hd, "/enroll", "user"+strings.Repeat("x", i%30+1), "wrong password!", "203.0.113.9:5000")
		codes[rec.Code]++
	}
	if codes[http.StatusUnauthorized] != 30 || codes[http.StatusTooManyRequests] != 10 {
		t.Fatalf("one address, many usernames: %v", codes)
	}
	// Successes cost nothing.
	_, hd = signInHarness(t)
	for i := range 15 {
		if rec := signInGet(hd, "/enroll", "alice", alicePassword, "192.0.2.1:5000"); rec.Code != http.StatusOK {
			t.Fatalf("success %d: %d", i+1, rec.Code)
		}
	}
}
