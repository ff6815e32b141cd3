// Package directory signs people in against an LDAP directory (OpenLDAP,
// Apple's Open Directory, Active Directory's LDAP face), for the
// enrollment portal and HTTP Basic sign-ins, and chains it after local
// accounts.
package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
)

// Config says where the directory is and how to find people in it.
type Config struct {
	// URL is ldap://host[:port] or ldaps://host[:port].
	URL string
	// BaseDN is where people are searched, the whole subtree.
	BaseDN string
	// BindDN and BindPassword are the service account that searches;
	// empty BindDN searches anonymously.
	BindDN, BindPassword string
	// UserFilter finds a person by the username typed; its one %s is the
	// username, escaped (RFC 4515). Default (uid=%s).
	UserFilter string
	// Group, when set, is the DN of a group a person must be in. It is
	// checked by reading the group entry, which works on every directory
	// without the memberOf overlay: the person's DN in member or
	// uniqueMember, or their username in memberUid (posixGroup, and Open
	// Directory's apple-group).
	Group string
	// GUIDAttr is the attribute holding a person's GUID, the UserID a Mac
	// sends in UserAuthenticate (LookupByGUID). Default
	// apple-generateduid, as Open Directory uses; OpenLDAP's entryUUID
	// works too.
	GUIDAttr string
	// Timeout bounds connecting and each operation. Default 10s.
	Timeout time.Duration
	// TLS configures ldaps://; nil means the system roots.
	TLS *tls.Config
}

// DefaultUserFilter finds people by uid.
const DefaultUserFilter = "(uid=%s)"

// DefaultGUIDAttr is where Open Directory keeps a user's GUID.
const DefaultGUIDAttr = "apple-generateduid"

// attrName is an LDAP attribute descriptor (RFC 4512 section 1.4): a name
// or a numeric OID.
var attrName = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)+)$`)

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--ldap-url %q: want ldap://host or ldaps://host", c.URL))
	}
	if _, err := ldap.ParseDN(c.BaseDN); err != nil || c.BaseDN == "" {
		errs = append(errs, fmt.Errorf("--ldap-base-dn %q: want a DN", c.BaseDN))
	}
	if c.UserFilter != "" && (strings.Count(c.UserFilter, "%s") != 1 || strings.Count(c.UserFilter, "%") != 1) {
		errs = append(errs, fmt.Errorf("--ldap-user-filter %q: want exactly one %%s and no other %%", c.UserFilter))
	} else if c.UserFilter != "" {
		if _, err := ldap.CompileFilter(fmt.Sprintf(c.UserFilter, "x")); err != nil {
			errs = append(errs, fmt.Errorf("--ldap-user-filter %q: %w", c.UserFilter, err))
		}
	}
	if c.Group != "" {
		if _, err := ldap.ParseDN(c.Group); err != nil {
			errs = append(errs, fmt.Errorf("--ldap-group %q: want a DN", c.Group))
		}
	}
	if c.GUIDAttr != "" && !attrName.MatchString(c.GUIDAttr) {
		errs = append(errs, fmt.Errorf("--ldap-guid-attr %q: want an attribute name", c.GUIDAttr))
	}
	if c.BindPassword != "" && c.BindDN == "" {
		errs = append(errs, errors.New("--ldap-bind-password needs --ldap-bind-dn"))
	}
	return errors.Join(errs...)
}

// LDAP checks passwords by binding to the directory as the person.
type LDAP struct {
	cfg    Config
	logger *slog.Logger
}

// Option configures LDAP.
type Option func(*LDAP)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(d *LDAP) { d.logger = l } }

// NewLDAP returns an LDAP authenticator; cfg must Validate.
func NewLDAP(cfg Config, opts ...Option) *LDAP {
	if cfg.UserFilter == "" {
		cfg.UserFilter = DefaultUserFilter
	}
	if cfg.GUIDAttr == "" {
		cfg.GUIDAttr = DefaultGUIDAttr
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	d := &LDAP{cfg: cfg, logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(d)
	}
	return d
}

// errUnavailable is what a person sees when the directory cannot answer.
const errUnavailable = "The directory cannot be reached to check your password. Try again in a few minutes."

// Authenticate signs username in: the service account binds and searches
// for exactly one entry matching the user filter, the group (if any) is
// checked, then the entry's DN binds with password. An unknown user, a
// wrong password, a person outside the group and an empty password (which
// LDAP would take as an unauthenticated bind, RFC 4513 section 5.1.2) are
// all enroll.ErrBadCredentials; a directory that cannot answer is a 503.
func (d *LDAP) Authenticate(ctx context.Context, username, password string) (*enroll.User, error) {
	if enroll.ValidateUsername(username) != nil || password == "" || len(password) > 1024 {
		return nil, enroll.ErrBadCredentials
	}
	conn, err := d.dial(ctx)
	if err != nil {
		return nil, handler.Wrap(http.StatusServiceUnavailable, errUnavailable, err)
	}
	defer conn.Close()
	// go-ldap has no contexts: closing the connection ends whatever
	// operation is waiting when the request goes away.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if d.cfg.BindDN != "" {
		if err := conn.Bind(d.cfg.BindDN, d.cfg.BindPassword); err != nil {
			return nil, handler.Wrap(http.StatusServiceUnavailable, errUnavailable, fmt.Errorf("binding as the service account: %w", err))
		}
	}
	res, err := conn.Search(ldap.NewSearchRequest(d.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, int(d.cfg.Timeout/time.Second), false,
		fmt.Sprintf(d.cfg.UserFilter, ldap.EscapeFilter(username)), []string{"1.1"}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return nil, handler.Wrap(http.StatusServiceUnavailable, errUnavailable, fmt.Errorf("searching for %q: %w", username, err))
	}
	if res == nil || len(res.Entries) != 1 {
		// None, or ambiguous: a filter that matches two people must not
		// let either one in as the other.
		n := 0
		if res != nil {
			n = len(res.Entries)
		}
		d.logger.InfoContext(ctx, "ldap sign-in: user not found", "username", username, "entries", n)
		return nil, enroll.ErrBadCredentials
	}
	dn := res.Entries[0].DN
	if d.cfg.Group != "" {
		in, err := d.inGroup(conn, d.cfg.Group, dn, username)
		if err != nil {
			return nil, handler.Wrap(http.StatusServiceUnavailable, errUnavailable, err)
		}
		if !in {
			d.logger.InfoContext(ctx, "ldap sign-in: not in the required group", "username", username, "group", d.cfg.Group)
			return nil, enroll.ErrBadCredentials
		}
	}
	// The password check last, so that the group is read with the
	// service account's rights and the connection is not re-bound.
	if err := conn.Bind(dn, password); err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			return nil, enroll.ErrBadCredentials
		}
		return nil, handler.Wrap(http.StatusServiceUnavailable, errUnavailable, fmt.Errorf("binding as %q: %w", dn, err))
	}
	return &enroll.User{Username: username}, nil
}

// LookupByGUID reports whether exactly one entry under the base DN has guid
// in the GUID attribute, searching as the service account. Macs send the
// GUID as UserID when a network user logs in (UserAuthenticate). Two
// entries with one GUID are a directory fault and count as not found, so
// that neither is managed as the other. A directory that cannot answer is
// an error, never "not found".
func (d *LDAP) LookupByGUID(ctx context.Context, guid string) (bool, error) {
	if guid == "" || len(guid) > 256 {
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
	// The attribute is asked for by name: entryUUID and other operational
	// attributes are returned only when requested.
	filter := fmt.Sprintf("(%s=%s)", d.cfg.GUIDAttr, ldap.EscapeFilter(guid))
	res, err := conn.Search(ldap.NewSearchRequest(d.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, int(d.cfg.Timeout/time.Second), false, filter, []string{d.cfg.GUIDAttr}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return false, fmt.Errorf("searching for GUID %q: %w", guid, err)
	}
	n := 0
	if res != nil {
		n = len(res.Entries)
	}
	if n != 1 {
		d.logger.InfoContext(ctx, "ldap: no single user with this GUID", "user_id", guid, "attribute", d.cfg.GUIDAttr, "entries", n)
		return false, nil
	}
	return true, nil
}

// inGroup reads the group entry with a filter naming the person.
func (d *LDAP) inGroup(conn *ldap.Conn, group, dn, username string) (bool, error) {
	filter := fmt.Sprintf("(|(member=%[1]s)(uniqueMember=%[1]s)(memberUid=%[2]s))", ldap.EscapeFilter(dn), ldap.EscapeFilter(username))
	res, err := conn.Search(ldap.NewSearchRequest(group, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, int(d.cfg.Timeout/time.Second), false, filter, []string{"1.1"}, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return false, fmt.Errorf("required group %q does not exist: %w", group, err)
	}
	if err != nil {
		return false, fmt.Errorf("reading group %q: %w", group, err)
	}
	return len(res.Entries) == 1, nil
}

func (d *LDAP) dial(ctx context.Context) (*ldap.Conn, error) {
	dialer := &net.Dialer{Timeout: d.cfg.Timeout}
	opts := []ldap.DialOpt{ldap.DialWithDialer(dialer)}
	if d.cfg.TLS != nil {
		opts = append(opts, ldap.DialWithTLSConfig(d.cfg.TLS))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn, err := ldap.DialURL(d.cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", d.cfg.URL, err)
	}
	conn.SetTimeout(d.cfg.Timeout)
	return conn, nil
}

// Chain tries each authenticator in turn (local accounts first, then the
// directory): the first to vouch for the person wins. A refusal
// (enroll.ErrBadCredentials) moves on to the next; any other error ends
// the sign-in, so an unreachable directory is reported rather than
// looking like a wrong password.
func Chain(auths ...enroll.Authenticator) enroll.Authenticator { return chain(auths) }

type chain []enroll.Authenticator

func (c chain) Authenticate(ctx context.Context, username, password string) (*enroll.User, error) {
	for _, a := range c {
		u, err := a.Authenticate(ctx, username, password)
		if !errors.Is(err, enroll.ErrBadCredentials) {
			return u, err
		}
	}
	return nil, enroll.ErrBadCredentials
}
