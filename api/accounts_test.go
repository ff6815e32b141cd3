package api

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeAccounts keeps usernames; it refuses short passwords as
// enroll.Accounts does.
type fakeAccounts struct{ users map[string]string }

func (f *fakeAccounts) CreateUser(_ context.Context, username, password string) (*enroll.User, error) {
	if err := enroll.ValidateUsername(username); err != nil {
		return nil, handler.Wrap(http.StatusBadRequest, err.Error(), err)
	}
	if err := enroll.ValidatePassword(password); err != nil {
		return nil, handler.Wrap(http.StatusBadRequest, err.Error(), err)
	}
	if _, ok := f.users[username]; ok {
		return nil, storage.ErrConflict
	}
	f.users[username] = password
	return &enroll.User{Username: username, PasswordHash: "$argon2id$…", CreatedAt: testNow}, nil
}

func TestCreateUser(t *testing.T) {
	accounts := &fakeAccounts{users: map[string]string{"taken": "whatever-password"}}
	e := newEnv(t, WithAccounts(accounts))
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
	}{
		{"created", mediaJSON, `{"username":"alice","password":"correct horse battery"}`, http.StatusCreated},
		{"taken", mediaJSON, `{"username":"taken","password":"correct horse battery"}`, http.StatusConflict},
		{"short password", mediaJSON, `{"username":"bob","password":"short"}`, http.StatusBadRequest},
		{"empty username", mediaJSON, `{"username":"","password":"correct horse battery"}`, http.StatusBadRequest},
		{"control character", mediaJSON, `{"username":"bo\u0007b","password":"correct horse battery"}`, http.StatusBadRequest},
		{"long username", mediaJSON, `{"username":"` + strings.Repeat("x", 65) + `","password":"correct horse battery"}`, http.StatusBadRequest},
		{"unknown field", mediaJSON, `{"username":"carol","password":"correct horse battery","admin":true}`, http.StatusBadRequest},
		{"malformed", mediaJSON, `{"username":`, http.StatusBadRequest},
		{"no body", mediaJSON, ``, http.StatusBadRequest},
		{"not JSON", "text/plain", `alice`, http.StatusUnsupportedMediaType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := e.serve(request(http.MethodPost, "/api/v1/users", tc.contentType, []byte(tc.body)))
			if tc.status != http.StatusCreated {
				decode[errorBody](t, rec, tc.status)
				return
			}
			got := decode[userResponse](t, rec, http.StatusCreated)
			if got.Username != "alice" || !got.CreatedAt.Equal(testNow) {
				t.Fatalf("answer = %+v", got)
			}
			if strings.Contains(rec.Body.String(), "password") || strings.Contains(rec.Body.String(), "argon2") {
				t.Fatalf("answer carries the password or its hash: %s", rec.Body)
			}
		})
	}
	if strings.Contains(e.logs.String(), "correct horse") {
		t.Fatal("a password is in the log")
	}
	unconfigured := newEnv(t)
	rec := unconfigured.serve(request(http.MethodPost, "/api/v1/users", mediaJSON, []byte(`{"username":"a","password":"correct horse battery"}`)))
	decode[errorBody](t, rec, http.StatusServiceUnavailable)
}
