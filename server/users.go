package server

import (
	"fmt"
	"net/http"

	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/enroll"
)

// How GET /enroll lets people download the enrollment profile
// (--enroll-auth).
const (
	// EnrollAuthToken: an enrollment link with a token an administrator minted.
	EnrollAuthToken = "token"
	// EnrollAuthBasic: a sign-in (HTTP Basic) with a local account;
	// links with a token keep working besides.
	EnrollAuthBasic = "basic"
)

func validateEnrollAuth(mode string) error {
	if mode != EnrollAuthToken && mode != EnrollAuthBasic {
		return fmt.Errorf("--enroll-auth %q: want token or basic", mode)
	}
	return nil
}

// setUpAccounts builds local accounts: the admin API creates them in
// either mode; with --enroll-auth basic GET /enroll signs them in.
func (s *Server) setUpAccounts(enrollment *enroll.Service, users enroll.Authenticator) (api.Option, http.Handler) {
	accounts := enroll.NewAccounts(s.store, enroll.WithAccountsClock(s.now))
	if s.cfg.EnrollAuth == EnrollAuthBasic {
		return api.WithAccounts(accounts), enrollment.SignInHandler(users)
	}
	return api.WithAccounts(accounts), enrollment.Handler()
}
