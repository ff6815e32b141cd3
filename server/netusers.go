package server

import (
	"context"

	"github.com/bramley-mdm/bramley/checkin"
	"github.com/bramley-mdm/bramley/directory"
)

// networkUsers lets the Mac network users the directory knows be managed
// when they log in (UserAuthenticate, checkin.UserDirectory); without
// --ldap-url every such user is declined with 410, as before.
func (s *Server) networkUsers() checkin.Option {
	if s.cfg.LDAP.URL == "" {
		return func(*checkin.Service) {}
	}
	return checkin.WithUserDirectory(ldapUsers{directory.NewLDAP(s.cfg.LDAP, directory.WithLogger(s.logger))})
}

// ldapUsers finds users by the GUID Macs send as UserID (--ldap-guid-attr).
type ldapUsers struct{ dir *directory.LDAP }

func (u ldapUsers) LookupUser(ctx context.Context, userID, _ string) (bool, error) {
	return u.dir.LookupByGUID(ctx, userID)
}
