package server

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"

	"github.com/bramley-mdm/bramley/directory"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/webui"
)

// signInUsers is who may sign in, to the portal and with HTTP Basic: local
// accounts first, then the LDAP directory when --ldap-url is set.
func (s *Server) signInUsers() enroll.Authenticator {
	accounts := enroll.NewAccounts(s.store, enroll.WithAccountsClock(s.now))
	if s.cfg.LDAP.URL == "" {
		return accounts
	}
	return directory.Chain(accounts, directory.NewLDAP(s.cfg.LDAP, directory.WithLogger(s.logger)))
}

// portalHandler builds the enrollment portal (/portal/). Its cookie key is
// made on the first start, kept sealed in the database, and so the same on
// every replica.
func (s *Server) portalHandler(ctx context.Context, sealer *pki.Sealer, users enroll.Authenticator, payloads webui.ProfileServices) (http.Handler, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	sealed, err := sealer.Seal(fresh)
	if err != nil {
		return nil, fmt.Errorf("sealing portal key: %w", err)
	}
	stored, err := s.store.CreateSetting(ctx, "portal.cookie_key", sealed)
	if err != nil {
		return nil, fmt.Errorf("storing portal key: %w", err)
	}
	key, err := sealer.Open(stored)
	if err != nil {
		return nil, fmt.Errorf("opening portal key: %w", err)
	}
	// Browsers see https even behind a TLS-terminating proxy (--http).
	secure := strings.HasPrefix(s.cfg.publicURL(s.cfg.Listen), "https://")
	portal, err := webui.New(users, payloads, key,
		webui.WithLogger(s.logger), webui.WithClock(s.now), webui.WithSecureCookies(secure),
		webui.WithOrganization(s.cfg.Organization))
	if err != nil {
		return nil, err
	}
	return portal.Handler(), nil
}
