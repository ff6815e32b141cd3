package directory_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/bramley-mdm/bramley/directory"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
)

const (
	base        = "dc=example,dc=test"
	serviceDN   = "cn=bramley,ou=services," + base
	servicePass = "service secret"
	groupDN     = "cn=mdm-users,ou=groups," + base
)

// slapd is an OpenLDAP server the test started on loopback.
type slapd struct{ url string }

// startSlapd runs slapd with a temporary slapd.conf (mdb backend) and loads
// people: alice ({SSHA} password, in the group as member), bob (plain
// password, not in it), dora (in it by memberUid), two entries both
// matching (mail=shared@example.test), and the service account. Missing
// slapd or ldapadd skips, except in CI.
func startSlapd(t *testing.T) *slapd {
	t.Helper()
	slapdPath := lookPath(t, "slapd", "/usr/sbin/slapd")
	ldapadd := lookPath(t, "ldapadd", "/usr/bin/ldapadd")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %[1]s/slapd.pid
database mdb
maxsize 10485760
suffix "%[2]s"
rootdn "cn=admin,%[2]s"
rootpw admin-secret
directory %[1]s/db
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
`, dir, base)
	confFile := filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("ldap://127.0.0.1:%d/", port)
	var logs bytes.Buffer
	// -d keeps slapd in the foreground, so the test owns the process.
	cmd := exec.Command(slapdPath, "-f", confFile, "-h", url, "-d", "0")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting slapd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("slapd log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slapd did not start: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	ldif := fmt.Sprintf(`dn: %[1]s
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,%[1]s
objectClass: organizationalUnit
ou: people

dn: ou=services,%[1]s
objectClass: organizationalUnit
ou: services

dn: ou=groups,%[1]s
objectClass: organizationalUnit
ou: groups

dn: %[2]s
objectClass: person
cn: bramley
sn: service
userPassword: %[3]s

dn: uid=alice,ou=people,%[1]s
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Example
mail: shared@example.test
userPassword: %[4]s

dn: uid=bob,ou=people,%[1]s
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Example
mail: shared@example.test
userPassword: bob-plain-password

dn: uid=dora,ou=people,%[1]s
objectClass: inetOrgPerson
objectClass: posixAccount
uid: dora
cn: Dora
sn: Example
uidNumber: 1003
gidNumber: 1003
homeDirectory: /home/dora
userPassword: %[5]s

dn: %[6]s
objectClass: groupOfNames
cn: mdm-users
member: uid=alice,ou=people,%[1]s

dn: cn=mdm-posix,ou=groups,%[1]s
objectClass: posixGroup
cn: mdm-posix
gidNumber: 2000
memberUid: dora
`, base, serviceDN, ssha(t, servicePass), ssha(t, "alice password"), ssha(t, "dora password"), groupDN)
	add := exec.Command(ldapadd, "-x", "-H", url, "-D", "cn=admin,"+base, "-w", "admin-secret")
	add.Stdin = strings.NewReader(ldif)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ldapadd: %v\n%s", err, out)
	}
	return &slapd{url: url}
}

// ssha is an OpenLDAP {SSHA} password: SHA-1 of password and salt, then salt.
func ssha(t *testing.T, password string) string {
	salt := make([]byte, 8)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(append([]byte(password), salt...))
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(sum[:], salt...))
}

func lookPath(t *testing.T, name, fallback string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(fallback); err == nil {
		return fallback
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; CI must run the LDAP tests (apt-get install slapd ldap-utils)", name)
	}
	t.Skipf("%s not installed", name)
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestLDAPAuthenticate(t *testing.T) {
	s := startSlapd(t)
	cfg := func(edit func(*directory.Config)) directory.Config {
		c := directory.Config{URL: s.url, BaseDN: base, BindDN: serviceDN, BindPassword: servicePass, Timeout: 5 * time.Second}
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
		{"wrong service password", directory.Config{URL: s.url, BaseDN: base, BindDN: serviceDN, BindPassword: "nope"}},
		{"directory down", directory.Config{URL: fmt.Sprintf("ldap://127.0.0.1:%d", freePort(t)), BaseDN: base, BindDN: serviceDN, BindPassword: servicePass}},
		{"missing group", directory.Config{URL: s.url, BaseDN: base, BindDN: serviceDN, BindPassword: servicePass, Group: "cn=gone," + base}},
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

// entryUUID reads an entry's entryUUID as the admin; it is operational, so
// it is asked for by name.
func entryUUID(t *testing.T, s *slapd, dn string) string {
	t.Helper()
	conn, err := ldap.DialURL(s.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Bind("cn=admin,"+base, "admin-secret"); err != nil {
		t.Fatal(err)
	}
	res, err := conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 5, false,
		"(objectClass=*)", []string{"entryUUID"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("reading entryUUID of %s: %v", dn, err)
	}
	u := res.Entries[0].GetAttributeValue("entryUUID")
	if u == "" {
		t.Fatalf("%s has no entryUUID", dn)
	}
	return u
}

func TestLDAPLookupByGUID(t *testing.T) {
	s := startSlapd(t)
	alice := entryUUID(t, s, "uid=alice,ou=people,"+base)
	cfg := directory.Config{URL: s.url, BaseDN: base, BindDN: serviceDN, BindPassword: servicePass, GUIDAttr: "entryUUID", Timeout: 5 * time.Second}
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
		{"wrong service password", directory.Config{URL: s.url, BaseDN: base, BindDN: serviceDN, BindPassword: "nope", GUIDAttr: "entryUUID"}},
		{"directory down", directory.Config{URL: fmt.Sprintf("ldap://127.0.0.1:%d", freePort(t)), BaseDN: base, GUIDAttr: "entryUUID"}},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := directory.NewLDAP(tt.cfg).LookupByGUID(context.Background(), alice); err == nil || got {
				t.Fatalf("LookupByGUID = %v, %v; want an error", got, err)
			}
		})
	}
}
