package directory

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
)

// InGroup reports whether the person username names (by the user filter)
// is in group, a DN, read with the service account as Authenticate reads
// Config.Group. No password is needed: it is asked after the person has
// signed in, when their device first posts. A username matching no entry,
// or more than one, is not in the group.
func (d *LDAP) InGroup(ctx context.Context, username, group string) (bool, error) {
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
	return d.inGroup(conn, group, res.Entries[0].DN, username)
}

// LocalAccounts says whether a username is a local account.
type LocalAccounts func(ctx context.Context, username string) (bool, error)

// OTAGroupPolicy is the enroll.OTAPolicy of bramley serve's --ota-group:
// the person who signed in must be a directory user in group (a DN).
// Groups are the directory's only; local accounts are in none, so a
// username that is a local account is refused, even when the directory
// has a person of that name — the session records a username, not which
// authenticator vouched for it, and a local account must not borrow a
// directory person's membership.
func (d *LDAP) OTAGroupPolicy(group string, local LocalAccounts) enroll.OTAPolicy {
	return func(ctx context.Context, user string, _ enroll.OTAAttributes) error {
		isLocal, err := local(ctx, user)
		if err != nil {
			return fmt.Errorf("looking up local account %q: %w", user, err)
		}
		if isLocal {
			d.logger.InfoContext(ctx, "OTA group policy: local account refused", "username", user, "group", group)
			return handler.Errorf(http.StatusForbidden, "enrollment policy allows directory users in the enrollment group only, and %s is a local account", user)
		}
		in, err := d.InGroup(ctx, user, group)
		if err != nil {
			return handler.Wrap(http.StatusServiceUnavailable, "the directory cannot be reached to check the enrollment group; try again in a few minutes", err)
		}
		if !in {
			d.logger.InfoContext(ctx, "OTA group policy: not in the group", "username", user, "group", group)
			return handler.Errorf(http.StatusForbidden, "enrollment policy refuses this device: %s is not in the group allowed to enroll devices", user)
		}
		return nil
	}
}

// ValidateGroupDN checks a group given as a DN (--ota-group).
func ValidateGroupDN(dn string) error {
	if _, err := ldap.ParseDN(dn); err != nil || dn == "" {
		return fmt.Errorf("%q: want a DN", dn)
	}
	return nil
}
