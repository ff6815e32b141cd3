package directory

import (
	"context"
	"fmt"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/bramley-mdm/bramley/enroll"
)

// Exists reports whether username names exactly one person (by the user
// filter) who may sign in: in Config.Group when one is set. It reads with
// the service account, needing no password, for registering directory
// users with Apps and Books before they ever sign in. None, or an
// ambiguous filter, is false, as Authenticate would refuse them.
func (d *LDAP) Exists(ctx context.Context, username string) (bool, error) {
	if enroll.ValidateUsername(username) != nil {
		return false, nil
	}
	conn, err := d.dial(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if d.cfg.BindDN != "" {
		if err := conn.Bind(d.cfg.BindDN, d.cfg.BindPassword); err != nil {
			return false, fmt.Errorf("binding as the service account: %w", err)
		}
	}
	res, err := conn.Search(ldap.NewSearchRequest(d.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, int(d.cfg.Timeout/time.Second), false,
		fmt.Sprintf(d.cfg.UserFilter, ldap.EscapeFilter(username)), []string{"1.1"}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return false, fmt.Errorf("searching for %q: %w", username, err)
	}
	if res == nil || len(res.Entries) != 1 {
		return false, nil
	}
	if d.cfg.Group == "" {
		return true, nil
	}
	return d.inGroup(conn, d.cfg.Group, res.Entries[0].DN, username)
}
