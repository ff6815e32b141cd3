package directory_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/directory"
	"github.com/bramley-mdm/bramley/directory/directorytest"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
)

const (
	base      = directorytest.BaseDN
	serviceDN = directorytest.BindDN
	groupDN   = "cn=mdm-users,ou=groups," + base
)

// startSlapd loads alice ({SSHA} password, in mdm-users as member), bob
// (plain password, not in it), dora (in mdm-posix by memberUid), alice and
// bob both matching (mail=shared@example.test).
func startSlapd(t *testing.T) *directorytest.Server {
	t.Helper()
	return directorytest.StartSlapd(t,
		directorytest.User{UID: "alice", CN: "Alice", Password: "alice password", Mail: "shared@example.test", Groups: []string{"mdm-users"}},
		directorytest.User{UID: "bob", CN: "Bob", Password: "bob-plain-password", PlainPassword: true, Mail: "shared@example.test"},
		directorytest.User{UID: "dora", CN: "Dora", Password: "dora password", Posix: true, PosixGroups: []string{"mdm-posix"}},
	)
}

func TestLDAPAuthenticate(t *testing.T) {
	s := startSlapd(t)
	cfg := func(edit func(*directory.Config)) directory.Config {
		c := s.Config()
		if edit != nil {
			edit(&c)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		return c
	}
	inGroup := func(c *directory.Config) { c.Group = groupDN }
	inPosixGroup := func(c *directory.Config) { c.Group = "cn=mdm-posix,ou=groups," + base }
	tests := []struct {
		name               string
		cfg                directory.Config
		username, password string
		want               error // nil: signed in
	}{
		{"ssha password", cfg(nil), "alice", "alice password", nil},
		{"plain password", cfg(nil), "bob", "bob-plain-password", nil},
		{"wrong password", cfg(nil), "alice", "bob-plain-password", enroll.ErrBadCredentials},
		{"empty password is not an anonymous bind", cfg(nil), "alice", "", enroll.ErrBadCredentials},
		{"unknown user", cfg(nil), "mallory", "alice password", enroll.ErrBadCredentials},
		{"filter injection is escaped", cfg(nil), "*", "alice password", enroll.ErrBadCredentials},
		{"ambiguous filter lets nobody in", cfg(func(c *directory.Config) { c.UserFilter = "(mail=shared@%s)" }), "example.test", "alice password", enroll.ErrBadCredentials},
		{"custom filter", cfg(func(c *directory.Config) { c.UserFilter = "(&(objectClass=inetOrgPerson)(cn=%s))" }), "Bob", "bob-plain-password", nil},
		{"in the group", cfg(inGroup), "alice", "alice password", nil},
		{"outside the group", cfg(inGroup), "bob", "bob-plain-password", enroll.ErrBadCredentials},
		{"in a posixGroup by memberUid", cfg(inPosixGroup), "dora", "dora password", nil},
		{"outside a posixGroup", cfg(inPosixGroup), "alice", "alice password", enroll.ErrBadCredentials},
		{"outside the group, wrong password", cfg(inGroup), "bob", "nope", enroll.ErrBadCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := directory.NewLDAP(tt.cfg).Authenticate(context.Background(), tt.username, tt.password)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Authenticate(%q) = %v, want %v", tt.username, err, tt.want)
			}
			if tt.want == nil && u.Username != tt.username {
				t.Fatalf("user %q, want %q", u.Username, tt.username)
			}
		})
	}
}

func TestLDAPFailures(t *testing.T) {
	s := startSlapd(t)
	tests := []struct {
		name string
		cfg  directory.Config
	}{
		{"wrong service password", directory.Config{URL: s.URL, BaseDN: base, BindDN: serviceDN, BindPassword: "nope"}},
		{"directory down", directory.Config{URL: directorytest.ClosedURL(t), BaseDN: base, BindDN: serviceDN, BindPassword: directorytest.BindPassword}},
		{"missing group", directory.Config{URL: s.URL, BaseDN: base, BindDN: serviceDN, BindPassword: directorytest.BindPassword, Group: "cn=gone," + base}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := directory.NewLDAP(tt.cfg).Authenticate(context.Background(), "alice", "alice password")
			if status, _ := handler.Status(err); status != http.StatusServiceUnavailable || errors.Is(err, enroll.ErrBadCredentials) {
				t.Fatalf("Authenticate = %v (status %d), want a 503 that is not a wrong password", err, status)
			}
		})
	}
}

// local is a fake local account store holding one person.
type local struct{ username, password string }

func (l local) Authenticate(_ context.Context, username, password string) (*enroll.User, error) {
	if username == l.username && password == l.password {
		return &enroll.User{Username: username}, nil
	}
	return nil, enroll.ErrBadCredentials
}

type failing struct{}

func (failing) Authenticate(context.Context, string, string) (*enroll.User, error) {
	return nil, errors.New("directory down")
}

func TestChain(t *testing.T) {
	tests := []struct {
		name     string
		auths    []enroll.Authenticator
		username string
		wantErr  bool
	}{
		{"first vouches", []enroll.Authenticator{local{"ann", "pw"}, failing{}}, "ann", false},
		{"second vouches", []enroll.Authenticator{local{"x", "y"}, local{"ann", "pw"}}, "ann", false},
		{"nobody vouches", []enroll.Authenticator{local{"x", "y"}, local{"z", "w"}}, "ann", true},
		{"an outage is not a refusal", []enroll.Authenticator{local{"x", "y"}, failing{}, local{"ann", "pw"}}, "ann", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := directory.Chain(tt.auths...).Authenticate(context.Background(), tt.username, "pw")
			if (err != nil) != tt.wantErr || (err == nil && u.Username != tt.username) {
				t.Fatalf("Authenticate = %v, %v", u, err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  directory.Config
		ok   bool
	}{
		{"minimal", directory.Config{URL: "ldap://127.0.0.1", BaseDN: base}, true},
		{"ldaps", directory.Config{URL: "ldaps://od.example.test:636", BaseDN: base, BindDN: serviceDN, BindPassword: "x", Group: groupDN}, true},
		{"http url", directory.Config{URL: "http://127.0.0.1", BaseDN: base}, false},
		{"no base", directory.Config{URL: "ldap://127.0.0.1"}, false},
		{"filter without %s", directory.Config{URL: "ldap://127.0.0.1", BaseDN: base, UserFilter: "(uid=alice)"}, false},
		{"filter with two %s", directory.Config{URL: "ldap://127.0.0.1", BaseDN: base, UserFilter: "(|(uid=%s)(cn=%s))"}, false},
		{"broken filter", directory.Config{URL: "ldap://127.0.0.1", BaseDN: base, UserFilter: "(uid=%s"}, false},
		{"password without DN", directory.Config{URL: "ldap://127.0.0.1", BaseDN: base, BindPassword: "x"}, false},
		{"group not a DN", directory.Config{URL: "ldap://127.0.0.1", BaseDN: base, Group: "mdm-users"}, false},
		{"GUID attribute", directory.Config{URL: "ldap://127.0.0.1", BaseDN: base, GUIDAttr: "entryUUID"}, true},
		{"GUID attribute by OID", directory.Config{URL: "ldap://127.0.0.1", BaseDN: base, GUIDAttr: "1.3.6.1.1.16.4"}, true},
		{"GUID attribute with a filter in it", directory.Config{URL: "ldap://127.0.0.1", BaseDN: base, GUIDAttr: "uid=*)(cn"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestLDAPLookupByGUID(t *testing.T) {
	s := startSlapd(t)
	alice := s.EntryUUID(t, directorytest.UserDN("alice"))
	cfg := s.Config()
	cfg.GUIDAttr = "entryUUID"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, guid string
		want       bool
	}{
		{"found", alice, true},
		// Macs send GUIDs in upper case; UUID matching ignores case.
		{"found in upper case", strings.ToUpper(alice), true},
		{"not found", "0f0f0f0f-0000-4000-8000-000000000000", false},
		{"empty", "", false},
		{"wildcard is escaped", "*", false},
		{"filter injection is escaped", alice + ")(|(entryUUID=*", false},
		{"injection matching anyone is escaped", "*)(objectClass=*", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := directory.NewLDAP(cfg).LookupByGUID(context.Background(), tt.guid)
			if err != nil || got != tt.want {
				t.Fatalf("LookupByGUID(%q) = %v, %v; want %v", tt.guid, got, err, tt.want)
			}
		})
	}
	t.Run("default attribute is apple-generateduid", func(t *testing.T) {
		c := cfg
		c.GUIDAttr = ""
		// slapd has no such attribute in its schema: the filter is
		// undefined and matches nobody, rather than failing.
		got, err := directory.NewLDAP(c).LookupByGUID(context.Background(), alice)
		if err != nil || got {
			t.Fatalf("LookupByGUID = %v, %v; want false", got, err)
		}
	})

	failures := []struct {
		name string
		cfg  directory.Config
	}{
		{"wrong service password", directory.Config{URL: s.URL, BaseDN: base, BindDN: serviceDN, BindPassword: "nope", GUIDAttr: "entryUUID"}},
		{"directory down", directory.Config{URL: directorytest.ClosedURL(t), BaseDN: base, GUIDAttr: "entryUUID"}},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := directory.NewLDAP(tt.cfg).LookupByGUID(context.Background(), alice); err == nil || got {
				t.Fatalf("LookupByGUID = %v, %v; want an error", got, err)
			}
		})
	}
}
