package directory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/bramley-mdm/bramley/enroll"
)

// ErrNoSuchGroup means the group's DN names no entry.
var ErrNoSuchGroup = errors.New("no such group in the directory")

// Members returns the usernames of the members of the group groupDN,
// sorted, read with the service account as inGroup reads membership:
// memberUid values (posixGroup, Open Directory's apple-group) as they are,
// and the DNs in member and uniqueMember mapped to each entry's uid.
// Member DNs that name no entry, or an entry without a valid uid (a nested
// group), are left out. ErrNoSuchGroup when groupDN names no entry.
func (d *LDAP) Members(ctx context.Context, groupDN string) ([]string, error) {
	if _, err := ldap.ParseDN(groupDN); err != nil || groupDN == "" {
		return nil, fmt.Errorf("%w: %q is not a DN", ErrNoSuchGroup, groupDN)
	}
	conn, err := d.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if d.cfg.BindDN != "" {
		if err := conn.Bind(d.cfg.BindDN, d.cfg.BindPassword); err != nil {
			return nil, fmt.Errorf("binding as the service account: %w", err)
		}
	}
	timeout := int(d.cfg.Timeout / time.Second)
	res, err := conn.Search(ldap.NewSearchRequest(groupDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, timeout, false, "(objectClass=*)", []string{"member", "uniqueMember", "memberUid"}, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil, fmt.Errorf("%w: %q", ErrNoSuchGroup, groupDN)
	}
	if err != nil {
		return nil, fmt.Errorf("reading group %q: %w", groupDN, err)
	}
	if len(res.Entries) != 1 {
		return nil, fmt.Errorf("%w: %q", ErrNoSuchGroup, groupDN)
	}
	g := res.Entries[0]
	names := map[string]bool{}
	for _, uid := range g.GetAttributeValues("memberUid") {
		if enroll.ValidateUsername(uid) == nil {
			names[uid] = true
		}
	}
	for _, dn := range append(g.GetAttributeValues("member"), g.GetAttributeValues("uniqueMember")...) {
		// uniqueMember is nameAndOptionalUID (RFC 4517 section 3.3.21):
		// a DN, then optionally #'bits'B.
		if i := strings.LastIndex(dn, "#'"); i >= 0 && strings.HasSuffix(dn, "'B") {
			dn = dn[:i]
		}
		res, err := conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
			1, timeout, false, "(objectClass=*)", []string{"uid"}, nil))
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) || ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidDNSyntax) {
			d.logger.InfoContext(ctx, "ldap: group member names no entry", "group", groupDN, "member", dn)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading member %q of %q: %w", dn, groupDN, err)
		}
		if len(res.Entries) != 1 {
			continue
		}
		// An entry with several uids is ambiguous: leave it out rather
		// than license someone it may not be.
		if uids := res.Entries[0].GetAttributeValues("uid"); len(uids) == 1 && enroll.ValidateUsername(uids[0]) == nil {
			names[uids[0]] = true
		}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}
