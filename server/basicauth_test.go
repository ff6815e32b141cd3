package server_test

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/server"
)

// TestEnrollBasicAuth is --enroll-auth basic end to end: an account made
// through the admin API signs in at /enroll and gets a profile signed by
// bramley's root; a wrong password gets 401 and creates no SCEP
// challenge; repeated failures get 429.
func TestEnrollBasicAuth(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dsn := db(t)
			var dataDir string
			e := start(t, dsn, func(c *server.Config) {
				c.EnrollAuth = server.EnrollAuthBasic
				c.PushTopic = testTopic
				dataDir = c.DataDir
			})
			challenges := func() int {
				t.Helper()
				return countChallenges(t, dsn, dataDir)
			}

			const password = "correct horse battery"
			var created struct{ Username, CreatedAt string }
			if code := e.api("POST", "/api/v1/users", map[string]string{"username": "alice", "password": password}, &created); code != http.StatusCreated || created.Username != "alice" {
				t.Fatalf("create user: %d %+v", code, created)
			}
			if code := e.api("POST", "/api/v1/users", map[string]string{"username": "alice", "password": password}, nil); code != http.StatusConflict {
				t.Fatalf("create a taken user: %d", code)
			}

			get := func(user, pw string) (*http.Response, []byte) {
				t.Helper()
				req, _ := http.NewRequest(http.MethodGet, e.url+"/enroll", nil)
				if user != "" {
					req.SetBasicAuth(user, pw)
				}
				resp, err := e.http.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp, body
			}

			resp, _ := get("", "")
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Basic realm="bramley enrollment", charset="UTF-8"` {
				t.Fatalf("no credentials: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}

			resp, signed := get("alice", password)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-apple-aspen-config" {
				t.Fatalf("sign-in: %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), signed)
			}
			if n := challenges(); n != 1 {
				t.Fatalf("%d SCEP challenges after one download, want 1", n)
			}
			verifyWithOpenSSL(t, e, signed)

			resp, _ = get("alice", "wrong horse battery")
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("wrong password: %d", resp.StatusCode)
			}
			if n := challenges(); n != 1 {
				t.Fatalf("%d SCEP challenges after a failed sign-in, want 1", n)
			}

			// One failure so far; nine more are allowed, then 429, even
			// with the right password.
			for i := range 9 {
				if resp, _ := get("alice", "wrong horse battery"); resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("failure %d: %d", i+2, resp.StatusCode)
				}
			}
			resp, _ = get("alice", password)
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("after 10 failures: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			if n := challenges(); n != 1 {
				t.Fatalf("%d SCEP challenges after refused sign-ins, want 1", n)
			}
		})
	}
}

func TestEnrollAuthValidated(t *testing.T) {
	for mode, ok := range map[string]bool{"token": true, "basic": true, "": false, "Basic": false, "oauth": false} {
		cfg := server.DefaultConfig()
		cfg.EnrollAuth = mode
		if err := cfg.Validate(); (err == nil) != ok {
			t.Errorf("--enroll-auth %q: Validate = %v", mode, err)
		}
	}
}

// verifyWithOpenSSL checks the profile's signature against bramley's root.
func verifyWithOpenSSL(t *testing.T, e *env, signed []byte) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl not installed: signature not verified")
		return
	}
	dir := t.TempDir()
	caFile, profileFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "enroll.mobileconfig")
	if err := os.WriteFile(caFile, pki.EncodeCertificatePEM(e.srv.CA().Root()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(profileFile, signed, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "cms", "-verify", "-inform", "DER", "-in", profileFile,
		"-CAfile", caFile, "-purpose", "any").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", err, out)
	}
}

// countChallenges counts the SCEP challenges in the server's database.
func countChallenges(t *testing.T, dsn, dataDir string) int {
	t.Helper()
	const q = `SELECT count(*) FROM scep_challenges`
	var n int
	if dsn != "" {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	db, err := sql.Open("sqlite", filepath.Join(dataDir, "bramley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
