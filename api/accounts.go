package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/storage"
)

// Accounts creates local accounts (enroll.Accounts does): people who sign
// in to download the enrollment profile with --enroll-auth basic.
type Accounts interface {
	// CreateUser validates, hashes and stores; a 400 *handler.Error when
	// the username or password is not acceptable, storage.ErrConflict
	// when the username is taken.
	CreateUser(ctx context.Context, username, password string) (*enroll.User, error)
}

// WithAccounts serves POST /users with accounts.
func WithAccounts(accounts Accounts) Option { return func(a *API) { a.accounts = accounts } }

type userRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type userResponse struct {
	Username  string    `json:"username"`
	CreatedAt time.Time `json:"created_at"`
}

// createUser creates a local account. The password is never logged nor
// echoed back.
func (a *API) createUser(w http.ResponseWriter, r *http.Request) error {
	if a.accounts == nil {
		return handler.Errorf(http.StatusServiceUnavailable, "local accounts are not configured")
	}
	if media, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || media != mediaJSON {
		return handler.Errorf(http.StatusUnsupportedMediaType, "send application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.maxBody))
	dec.DisallowUnknownFields()
	var req userRequest
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("malformed JSON: want {\"username\": …, \"password\": …}")
	}
	u, err := a.accounts.CreateUser(r.Context(), req.Username, req.Password)
	switch {
	case errors.Is(err, storage.ErrConflict):
		return handler.Wrap(http.StatusConflict, fmt.Sprintf("user %q already exists", req.Username), err)
	case err != nil:
		return err
	}
	a.logger.InfoContext(r.Context(), "user created", "username", u.Username)
	return writeJSON(w, http.StatusCreated, userResponse{Username: u.Username, CreatedAt: u.CreatedAt})
}
