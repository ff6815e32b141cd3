package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/server"
)

// chromium starts headless Chromium for the test, trusting only the
// server's certificate (by its public key) and reaching only loopback.
// Without Chromium the test skips, except in CI.
func chromium(t *testing.T, e *env) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed; CI must run the browser tests (apt-get install chromium)")
		}
		t.Skip("chromium not installed")
	}
	leaf, err := x509.ParseCertificate(e.srv.TLSConfig().Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.WindowSize(390, 844), // a phone
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return ctx
}

// screenshot saves the page (PNG: quality 100) into dir and a copy at /tmp/bramley-portal-NAME.png.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	for _, p := range []string{filepath.Join(dir, name+".png"), "/tmp/bramley-portal-" + name + ".png"} {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot: /tmp/bramley-portal-%s.png", name)
}

// TestPortalChromium: a person signs in on /portal/ in Chromium with a
// local account made through the admin API and downloads the Profile
// Service payload, signed by bramley's root; a wrong password shows an
// error and issues nothing.
func TestPortalChromium(t *testing.T) {
	var dataDir string
	e := start(t, "", func(c *server.Config) {
		c.PushTopic = testTopic
		dataDir = c.DataDir
	})
	const password = "correct horse battery"
	if code := e.api("POST", "/api/v1/users", map[string]string{"username": "alice", "password": password}, nil); code != http.StatusCreated {
		t.Fatalf("create user: %d", code)
	}
	ctx := chromium(t, e)
	shots, downloads := t.TempDir(), t.TempDir()

	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/portal/"), chromedp.WaitVisible("#username")); err != nil {
		t.Fatalf("opening the portal: %v", err)
	}
	screenshot(t, ctx, shots, "signin")

	if err := chromedp.Do(ctx,
		chromedp.SendKeys("#username", "alice"), chromedp.SendKeys("#password", "wrong horse battery"),
		chromedp.Click("button[type=submit]"), chromedp.WaitVisible(".error")); err != nil {
		t.Fatalf("wrong password: %v", err)
	}
	msg, err := chromedp.Run(ctx, chromedp.Text(".error"))
	if err != nil || !strings.Contains(msg, "not right") {
		t.Fatalf("error message %q, %v", msg, err)
	}
	screenshot(t, ctx, shots, "error")
	if n := countOTASessions(t, dataDir); n != 0 {
		t.Fatalf("%d OTA sessions after a failed sign-in, want 0", n)
	}

	// The username is kept; the password field is empty again.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys("#password", password), chromedp.Click("button[type=submit]"),
		chromedp.WaitVisible("#download")); err != nil {
		t.Fatalf("sign-in: %v", err)
	}
	screenshot(t, ctx, shots, "download")

	done := make(chan string, 1)
	_ = chromedp.ListenBrowser(ctx, func(ev any) {
		if p, ok := ev.(*browser.EventDownloadProgress); ok && p.State == browser.DownloadProgressStateCompleted {
			done <- p.GUID
		}
	})
	if err := chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			events := true
			_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: &events,
			})
			return err
		}),
		chromedp.Click("#download")); err != nil {
		t.Fatalf("download: %v", err)
	}
	var guid string
	select {
	case guid = <-done:
	case <-ctx.Done():
		t.Fatal("download did not complete")
	}
	signed, err := os.ReadFile(filepath.Join(downloads, guid))
	if err != nil {
		t.Fatal(err)
	}
	content, _, err := profile.Verify(signed, e.roots)
	if err != nil {
		t.Fatalf("profile.Verify: %v", err)
	}
	p, err := profile.Parse(content)
	if err != nil {
		t.Fatal(err)
	}
	if p.PayloadType != profile.TypeProfileService || p.Service == nil || p.Service.URL != e.url+"/ota/enroll" || p.Service.Challenge == "" {
		t.Fatalf("payload: type %q service %+v", p.PayloadType, p.Service)
	}
	if n := countOTASessions(t, dataDir); n != 1 {
		t.Fatalf("%d OTA sessions after one download, want 1", n)
	}
	verifyWithOpenSSL(t, e, signed)

	// The same link with the browser's session cookie, to see the
	// response headers; each download is a new one-time session.
	got, err := chromedp.Run(ctx, chromedp.Action[network.GetCookiesResult](func(ctx context.Context, _ *chromedp.Target) (network.GetCookiesResult, error) {
		return chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{e.url + "/portal/"}})
	}))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/portal/profile-service", nil)
	for _, c := range got.Cookies {
		if c.Name == "__Host-bramley-portal" {
			if !c.Secure || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
				t.Errorf("session cookie %+v", c)
			}
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-apple-aspen-config" {
		t.Fatalf("download: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestPortalHTTP checks what a browser does not show: the security
// headers, CSRF refusals, and the download refused without a session.
func TestPortalHTTP(t *testing.T) {
	e := start(t, "", func(c *server.Config) { c.PushTopic = testTopic })
	resp, err := e.http.Get(e.url + "/portal/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := map[string]string{
		"X-Frame-Options":        "DENY",
		"Referrer-Policy":        "no-referrer",
		"X-Content-Type-Options": "nosniff",
		"Content-Type":           "text/html; charset=utf-8",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script") {
		t.Errorf("CSP %q", csp)
	}
	var csrf *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-bramley-csrf" {
			csrf = c
		}
	}
	if csrf == nil || !csrf.Secure || !csrf.HttpOnly || csrf.SameSite != http.SameSiteStrictMode {
		t.Fatalf("CSRF cookie %+v", csrf)
	}

	post := func(form url.Values, cookie *http.Cookie) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.url+"/portal/sign-in", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	creds := url.Values{"username": {"alice"}, "password": {"whatever password"}}
	if code := post(creds, nil); code != http.StatusForbidden {
		t.Errorf("no token, no cookie: %d, want 403", code)
	}
	if code := post(creds, csrf); code != http.StatusForbidden {
		t.Errorf("cookie without token: %d, want 403", code)
	}
	forged := url.Values{"username": {"alice"}, "password": {"whatever password"}, "csrf_token": {csrf.Value}}
	if code := post(forged, csrf); code != http.StatusForbidden {
		t.Errorf("cookie value as token: %d, want 403", code)
	}

	resp, err = e.http.Get(e.url + "/portal/profile-service")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("download without a session: %d, want 403", resp.StatusCode)
	}
}

// countOTASessions counts the OTA sessions in a SQLite server's database.
func countOTASessions(t *testing.T, dataDir string) int {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dataDir, "bramley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM ota_sessions`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
