package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestOTAPortalEndToEnd is issue 5's "done when": a user made through
// the admin API signs in on the portal in Chromium and downloads the
// Profile Service payload; the simulated device installs that very
// payload, goes through phases 2 and 3, Authenticates and TokenUpdates,
// and the enrollment route records the person who signed in.
func TestOTAPortalEndToEnd(t *testing.T) {
	apple, caFile := appleDeviceCA(t)
	var dataDir string
	e := start(t, "", func(c *server.Config) {
		c.PushTopic = testTopic
		c.AppleDeviceCA = caFile
		dataDir = c.DataDir
	})
	const password = "correct horse battery"
	if code := e.api("POST", "/api/v1/users", map[string]string{"username": "carol", "password": password}, nil); code != http.StatusCreated {
		t.Fatalf("create user: %d", code)
	}
	signed := portalDownload(t, e, "carol", password)

	cert, key, chain, err := apple.Issue("PORTAL-UDID-1")
	if err != nil {
		t.Fatal(err)
	}
	// No password for the device: the payload from the browser is all it has.
	o, err := sim.NewOTA(e.url, "", "", sim.WithAppleIdentity(cert, key, chain...), sim.WithExtraRoots(e.srv.CA().Root()))
	if err != nil {
		t.Fatal(err)
	}
	o.Attributes["UDID"] = "PORTAL-UDID-1"
	if err := o.UseProfileService(signed); err != nil {
		t.Fatalf("installing the portal's payload: %v", err)
	}
	ctx := context.Background()
	if err := o.PostFirst(ctx); err != nil {
		t.Fatalf("first POST: %v", err)
	}
	if err := o.GetIdentity(ctx); err != nil {
		t.Fatalf("SCEP: %v", err)
	}
	if err := o.PostSecond(ctx, o.Identity, o.IdentityKey); err != nil {
		t.Fatalf("second POST: %v", err)
	}
	d, err := o.Finish(ctx) // Authenticate and TokenUpdate
	if err != nil {
		t.Fatalf("check-in: %v", err)
	}
	if _, err := d.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if route, user := routeOf(t, "", dataDir, "PORTAL-UDID-1"); route != "ota" || user != "carol" {
		t.Fatalf("enrollment route %q user %q, want ota carol", route, user)
	}
	// The payload started one session only.
	if err := o.PostFirst(ctx); statusOf(err) != http.StatusForbidden {
		t.Fatalf("payload reused: %v", err)
	}
}

// TestOTAMinOS: --ota-min-os refuses a device whose OS build is older
// than its platform's minimum at the first POST, with the reason and
// nothing recorded; the session stays unused, so the same payload works
// once the device is updated. Other platforms are not held to it.
func TestOTAMinOS(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dsn := db(t)
			apple, caFile := appleDeviceCA(t)
			var dataDir string
			e := start(t, dsn, func(c *server.Config) {
				c.PushTopic = testTopic
				c.AppleDeviceCA = caFile
				c.OTAMinOS = []string{"iPhone=21A329", "Mac=23A344"}
				dataDir = c.DataDir
			})
			const password = "correct horse battery"
			if code := e.api("POST", "/api/v1/users", map[string]string{"username": "bob", "password": password}, nil); code != http.StatusCreated {
				t.Fatalf("create user: %d", code)
			}
			ctx := context.Background()
			newOTA := func(udid, product, version string) *sim.OTA {
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
				o.Attributes["UDID"], o.Attributes["PRODUCT"], o.Attributes["VERSION"] = udid, product, version
				if err := o.Start(ctx); err != nil {
					t.Fatal(err)
				}
				return o
			}

			old := newOTA("MINOS-UDID-OLD", "iPhone14,5", "20H19") // iOS 16.7
			err := old.PostFirst(ctx)
			if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "older than 21A329") {
				t.Fatalf("old iPhone: %v, want a 403 naming the minimum", err)
			}
			if route, _ := routeOf(t, dsn, dataDir, "MINOS-UDID-OLD"); route != "" {
				t.Fatal("refused device recorded")
			}
			// Updated, with the same payload.
			old.Attributes["VERSION"] = "21F90"
			if err := old.PostFirst(ctx); err != nil {
				t.Fatalf("updated iPhone, same payload: %v", err)
			}

			mac := newOTA("MINOS-UDID-MAC", "MacBookPro18,1", "22G120") // macOS 13.6
			if err := mac.PostFirst(ctx); statusOf(err) != http.StatusForbidden {
				t.Fatalf("old Mac: %v, want 403", err)
			}
			ipad := newOTA("MINOS-UDID-IPAD", "iPad13,1", "19H12") // no iPad minimum
			if err := ipad.PostFirst(ctx); err != nil {
				t.Fatalf("iPad without a minimum: %v", err)
			}
		})
	}
}

// TestOTAPolicyFlagsValidated: --ota-min-os takes builds per platform,
// and --ota-group a DN of the --ldap-url directory.
func TestOTAPolicyFlagsValidated(t *testing.T) {
	ldap := func(c *server.Config) { c.LDAP.URL, c.LDAP.BaseDN = "ldap://127.0.0.1:1", "dc=example,dc=test" }
	tests := []struct {
		name string
		edit func(*server.Config)
		ok   bool
	}{
		{"builds", func(c *server.Config) { c.OTAMinOS = []string{"iPhone=21A329", "Mac=23A344"} }, true},
		{"marketing version", func(c *server.Config) { c.OTAMinOS = []string{"iPhone=17.0"} }, false},
		{"unknown platform", func(c *server.Config) { c.OTAMinOS = []string{"Phone=21A329"} }, false},
		{"group with a directory", func(c *server.Config) { ldap(c); c.OTAGroup = "cn=mdm,ou=groups,dc=example,dc=test" }, true},
		{"group without a directory", func(c *server.Config) { c.OTAGroup = "cn=mdm,ou=groups,dc=example,dc=test" }, false},
		{"group not a DN", func(c *server.Config) { ldap(c); c.OTAGroup = "mdm users" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := server.DefaultConfig()
			tt.edit(&cfg)
			if err := cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, ok %v", err, tt.ok)
			}
		})
	}
}

// appleDeviceCA makes a stand-in for Apple's device CA and writes its
// root where --apple-device-ca reads it.
func appleDeviceCA(t *testing.T) (*appletest.DeviceCA, string) {
	t.Helper()
	apple, err := appletest.NewDeviceCA()
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "apple-device-ca.pem")
	if err := os.WriteFile(caFile, apple.RootCertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return apple, caFile
}

// portalDownload signs in on /portal/ in Chromium and returns the Profile
// Service payload the browser downloaded.
func portalDownload(t *testing.T, e *env, username, password string) []byte {
	t.Helper()
	ctx := chromium(t, e)
	downloads := t.TempDir()
	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/portal/"), chromedp.WaitVisible("#username"),
		chromedp.SendKeys("#username", username), chromedp.SendKeys("#password", password),
		chromedp.Click("button[type=submit]"), chromedp.WaitVisible("#download")); err != nil {
		t.Fatalf("signing in on the portal: %v", err)
	}
	done := make(chan string, 1)
	_ = chromedp.ListenBrowser(ctx, func(ev any) {
		if p, ok := ev.(*browser.EventDownloadProgress); ok && p.State == browser.DownloadProgressStateCompleted {
			select {
			case done <- p.GUID:
			default:
			}
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
	select {
	case guid := <-done:
		signed, err := os.ReadFile(filepath.Join(downloads, guid))
		if err != nil {
			t.Fatal(err)
		}
		return signed
	case <-ctx.Done():
		t.Fatal("download did not complete")
		return nil
	}
}
