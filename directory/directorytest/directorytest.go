// Package directorytest starts a real OpenLDAP server (slapd) on loopback
// for tests of directory and of what is wired to it. Without slapd and
// ldapadd the test skips, except in CI, where they must be installed.
package directorytest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/bramley-mdm/bramley/directory"
)

// The tree every server holds: people, services and groups under BaseDN,
// and a service account bramley binds as to search.
const (
	BaseDN       = "dc=example,dc=test"
	BindDN       = "cn=bramley,ou=services," + BaseDN
	BindPassword = "service secret"

	adminDN       = "cn=admin," + BaseDN
	adminPassword = "admin-secret"
)

// User is a person entry, uid=UID,ou=people.
type User struct {
	UID string
	// CN is the common name; UID when empty.
	CN       string
	Password string
	// PlainPassword stores Password as is rather than as {SSHA}.
	PlainPassword bool
	Mail          string
	// Posix makes the entry a posixAccount too.
	Posix bool
	// Groups are groupOfNames (cn=…,ou=groups) listing the user as member.
	Groups []string
	// PosixGroups are posixGroups listing the user by memberUid.
	PosixGroups []string
}

// Server is a running slapd holding the users it was started with.
type Server struct {
	URL string
}

// Config returns the directory configuration that binds as the service
// account; callers add Group, UserFilter or GUIDAttr.
func (s *Server) Config() directory.Config {
	return directory.Config{URL: s.URL, BaseDN: BaseDN, BindDN: BindDN, BindPassword: BindPassword, Timeout: 5 * time.Second}
}

// UserDN is the DN of the user with this uid.
func UserDN(uid string) string { return "uid=" + uid + ",ou=people," + BaseDN }

// GroupDN is the DN of the group with this cn.
func GroupDN(cn string) string { return "cn=" + cn + ",ou=groups," + BaseDN }

// StartSlapd runs slapd with a temporary slapd.conf (mdb backend) on a free
// loopback port, loads the tree, the service account and users with their
// groups, and stops slapd when the test ends (printing its log if the test
// failed).
func StartSlapd(t testing.TB, users ...User) *Server {
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
rootdn "%[3]s"
rootpw %[4]s
directory %[1]s/db
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
`, dir, BaseDN, adminDN, adminPassword)
	confFile := filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("ldap://127.0.0.1:%d/", port)
	var logs lockedBuffer
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

	add := exec.Command(ldapadd, "-x", "-H", url, "-D", adminDN, "-w", adminPassword)
	add.Stdin = strings.NewReader(ldif(t, users))
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ldapadd: %v\n%s", err, out)
	}
	return &Server{URL: url}
}

// ldif is the tree, the service account, the users and their groups.
func ldif(t testing.TB, users []User) string {
	var b strings.Builder
	fmt.Fprintf(&b, `dn: %[1]s
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
`, BaseDN, BindDN, ssha(t, BindPassword))
	var groups, posixGroups []string
	members, memberUids := map[string][]string{}, map[string][]string{}
	for i, u := range users {
		password := u.Password
		if !u.PlainPassword {
			password = ssha(t, password)
		}
		fmt.Fprintf(&b, "\ndn: %s\nobjectClass: inetOrgPerson\n", UserDN(u.UID))
		if u.Posix {
			b.WriteString("objectClass: posixAccount\n")
		}
		cn := u.CN
		if cn == "" {
			cn = u.UID
		}
		fmt.Fprintf(&b, "uid: %s\ncn: %s\nsn: Example\nuserPassword: %s\n", u.UID, cn, password)
		if u.Mail != "" {
			fmt.Fprintf(&b, "mail: %s\n", u.Mail)
		}
		if u.Posix {
			fmt.Fprintf(&b, "uidNumber: %[1]d\ngidNumber: %[1]d\nhomeDirectory: /home/%[2]s\n", 1001+i, u.UID)
		}
		for _, g := range u.Groups {
			if !slices.Contains(groups, g) {
				groups = append(groups, g)
			}
			members[g] = append(members[g], UserDN(u.UID))
		}
		for _, g := range u.PosixGroups {
			if !slices.Contains(posixGroups, g) {
				posixGroups = append(posixGroups, g)
			}
			memberUids[g] = append(memberUids[g], u.UID)
		}
	}
	for _, g := range groups {
		fmt.Fprintf(&b, "\ndn: %s\nobjectClass: groupOfNames\ncn: %s\n", GroupDN(g), g)
		for _, m := range members[g] {
			fmt.Fprintf(&b, "member: %s\n", m)
		}
	}
	for i, g := range posixGroups {
		fmt.Fprintf(&b, "\ndn: %s\nobjectClass: posixGroup\ncn: %s\ngidNumber: %d\n", GroupDN(g), g, 2000+i)
		for _, m := range memberUids[g] {
			fmt.Fprintf(&b, "memberUid: %s\n", m)
		}
	}
	return b.String()
}

// EntryUUID reads an entry's entryUUID as the admin; it is operational, so
// it is asked for by name.
func (s *Server) EntryUUID(t testing.TB, dn string) string {
	t.Helper()
	conn, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Bind(adminDN, adminPassword); err != nil {
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

// ClosedURL is an ldap:// URL on a loopback port nothing listens on: a
// directory that is down.
func ClosedURL(t testing.TB) string {
	return fmt.Sprintf("ldap://127.0.0.1:%d", freePort(t))
}

// ssha is an OpenLDAP {SSHA} password: SHA-1 of password and salt, then salt.
func ssha(t testing.TB, password string) string {
	salt := make([]byte, 8)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(append([]byte(password), salt...))
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(sum[:], salt...))
}

func lookPath(t testing.TB, name, fallback string) string {
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

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// lockedBuffer is slapd's log, written by exec's copying goroutine and read
// by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
