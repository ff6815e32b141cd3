package server_test

import (
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestOTAEnrollment runs over-the-air enrollment end to end: a user made
// through the admin API, a simulated device with an identity from a
// simulated Apple device CA (--apple-device-ca) going through the three
// phases, openssl verifying and decrypting the final profile, and the
// device checking in; then the refusals.
func TestOTAEnrollment(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dsn := db(t)
			apple, err := appletest.NewDeviceCA()
			if err != nil {
				t.Fatal(err)
			}
			caFile := filepath.Join(t.TempDir(), "apple-device-ca.pem")
			if err := os.WriteFile(caFile, apple.RootCertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			var dataDir string
			e := start(t, dsn, func(c *server.Config) {
				c.PushTopic = testTopic
				c.AppleDeviceCA = caFile
				c.OTADeny = []string{"DENIED-SERIAL"}
				dataDir = c.DataDir
			})
			const password = "correct horse battery"
			if code := e.api("POST", "/api/v1/users", map[string]string{"username": "bob", "password": password}, nil); code != http.StatusCreated {
				t.Fatalf("create user: %d", code)
			}
			newOTA := func(udid string) *sim.OTA {
				t.Helper()
				cert, key, chain, err := apple.Issue(udid)
				if err != nil {
					t.Fatal(err)
				}
				o, err := sim.NewOTA(e.url, "bob", password, sim.WithAppleIdentity(cert, key, chain...),
					sim.WithExtraRoots(e.srv.CA().Root()))
				if err != nil {
					t.Fatal(err)
				}
				o.Attributes["UDID"] = udid
				return o
			}
			ctx := context.Background()

			// The happy path, step by step.
			o := newOTA("OTA-UDID-1")
			for _, step := range []func(context.Context) error{o.Start, o.PostFirst, o.GetIdentity} {
				if err := step(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := o.PostSecond(ctx, o.Identity, o.IdentityKey); err != nil {
				t.Fatal(err)
			}
			verifyWithOpenSSL(t, e, o.Final)
			decryptWithOpenSSL(t, e, o)
			d, err := o.Finish(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if d.UDID != "OTA-UDID-1" {
				t.Fatalf("device UDID %q", d.UDID)
			}
			if _, err := d.Connect(ctx); err != nil {
				t.Fatalf("connect after OTA enrollment: %v", err)
			}
			if route, user := routeOf(t, dsn, dataDir, "OTA-UDID-1"); route != "ota" || user != "bob" {
				t.Fatalf("route %q user %q", route, user)
			}
			// EnrollOTA does it all in one call.
			cert, key, chain, _ := apple.Issue("OTA-UDID-2")
			if _, err := sim.EnrollOTA(ctx, e.url, "bob", password, sim.WithAppleIdentity(cert, key, chain...),
				sim.WithExtraRoots(e.srv.CA().Root())); err != nil {
				t.Fatalf("EnrollOTA: %v", err)
			}

			refused := func(what string, err error, want int) {
				t.Helper()
				if got := statusOf(err); got != want {
					t.Errorf("%s: %v (status %d), want %d", what, err, got, want)
				}
			}
			// A reused challenge.
			if err := o.PostFirst(ctx); statusOf(err) != http.StatusForbidden {
				refused("reused challenge", err, http.StatusForbidden)
			}
			// A signer from an unknown CA: bramley's own device CA stands in
			// for a stranger in the first POST.
			x := newOTA("OTA-UDID-X")
			if err := x.Start(ctx); err != nil {
				t.Fatal(err)
			}
			other, err := appletest.NewDeviceCA()
			if err != nil {
				t.Fatal(err)
			}
			x.AppleCert, x.AppleKey, x.AppleChain, _ = other.Issue("OTA-UDID-X")
			refused("unknown CA", x.PostFirst(ctx), http.StatusForbidden)
			// The policy.
			p := newOTA("OTA-UDID-P")
			p.Attributes["SERIAL"] = "DENIED-SERIAL"
			if err := p.Start(ctx); err != nil {
				t.Fatal(err)
			}
			refused("denied serial", p.PostFirst(ctx), http.StatusForbidden)
			// Two devices in phase 2; A's second POST signed by B's identity,
			// then with a changed serial.
			a, b := newOTA("OTA-UDID-A"), newOTA("OTA-UDID-B")
			for _, dev := range []*sim.OTA{a, b} {
				for _, step := range []func(context.Context) error{dev.Start, dev.PostFirst, dev.GetIdentity} {
					if err := step(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			refused("another device's identity", a.PostSecond(ctx, b.Identity, b.IdentityKey), http.StatusForbidden)
			a.Attributes["SERIAL"] = "CHANGED"
			refused("changed serial", a.PostSecond(ctx, a.Identity, a.IdentityKey), http.StatusForbidden)
			for _, udid := range []string{"OTA-UDID-X", "OTA-UDID-P", "OTA-UDID-A"} {
				if route, _ := routeOf(t, dsn, dataDir, udid); route != "" {
					t.Errorf("%s recorded as enrolled", udid)
				}
			}
			// An unsigned body.
			resp, err := e.http.Post(e.url+"/ota/enroll", "application/pkcs7-signature", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("empty body: %d", resp.StatusCode)
			}
		})
	}
}

// decryptWithOpenSSL opens the final profile's EncryptedPayloadContent
// with the OTA identity's key and checks that it is the payload array.
func decryptWithOpenSSL(t *testing.T, e *env, o *sim.OTA) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl not installed: not decrypted")
		return
	}
	roots := x509.NewCertPool()
	roots.AddCert(e.srv.CA().Root())
	content, _, err := profile.Verify(o.Final, roots)
	if err != nil {
		t.Fatal(err)
	}
	p, err := profile.Parse(content)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(o.IdentityKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"enc.der":  p.EncryptedPayloadContent,
		"cert.pem": pki.EncodeCertificatePEM(o.Identity),
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("openssl", "cms", "-decrypt", "-inform", "DER", "-in", filepath.Join(dir, "enc.der"),
		"-recip", filepath.Join(dir, "cert.pem"), "-inkey", filepath.Join(dir, "key.pem")).Output()
	if err != nil {
		t.Fatalf("openssl cms -decrypt: %v", err)
	}
	var payloads []map[string]any
	if err := plist.Unmarshal(out, &payloads); err != nil {
		t.Fatalf("decrypted content is not a payload array: %v\n%s", err, out)
	}
	types := map[string]bool{}
	for _, pl := range payloads {
		pt, _ := pl["PayloadType"].(string)
		types[pt] = true
	}
	if !types["com.apple.mdm"] || !types["com.apple.security.scep"] {
		t.Fatalf("decrypted payloads: %v", types)
	}
}

// routeOf reads the recorded enrollment route of a device, "" when none.
func routeOf(t *testing.T, dsn, dataDir, udid string) (route, user string) {
	t.Helper()
	if dsn != "" {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		err = conn.QueryRow(context.Background(), `SELECT route, username FROM enrollment_routes WHERE device_id = $1`, udid).Scan(&route, &user)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		return route, user
	}
	db, err := sql.Open("sqlite", filepath.Join(dataDir, "bramley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.QueryRow(`SELECT route, username FROM enrollment_routes WHERE device_id = ?`, udid).Scan(&route, &user)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return route, user
}
