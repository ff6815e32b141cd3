package ade

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
)

func paths(reqs []appletest.ADERequest) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, fmt.Sprintf("%s %s %d", r.Method, r.Path, r.Status))
	}
	return out
}

func devices(n int, prefix string) []appletest.ADEDevice {
	out := make([]appletest.ADEDevice, n)
	for i := range out {
		out[i] = appletest.ADEDevice{SerialNumber: fmt.Sprintf("%s%04d", prefix, i)}
	}
	return out
}

func TestClientSession(t *testing.T) {
	fake := appletest.NewADE(t)
	c, _ := newFakeClient(t, fake, WithUserAgent("bramley/test"))
	ctx := t.Context()
	a, err := c.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a.ServerUUID == "" || a.OrgName == "" || len(a.URLs) == 0 {
		t.Errorf("account %+v", a)
	}
	if _, err := c.FetchDevices(ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	if n := fake.SessionsOpened(); n != 1 {
		t.Errorf("%d sessions opened, want 1", n)
	}
	reqs := fake.Requests()
	want := []string{"GET /session 200", "GET /account 200", "POST /server/devices 200"}
	if got := paths(reqs); !slices.Equal(got, want) {
		t.Fatalf("requests %v, want %v", got, want)
	}
	for _, r := range reqs {
		if r.Header.Get(HeaderProtocolVersion) != ProtocolVersion || r.Header.Get("User-Agent") != "bramley/test" {
			t.Errorf("%s %s: headers %v", r.Method, r.Path, r.Header)
		}
		if r.Path != "/session" && !strings.HasPrefix(r.Header.Get(HeaderSession), "appletest-session-") {
			t.Errorf("%s: no session", r.Path)
		}
		if r.Method == http.MethodPost && r.Header.Get("Content-Type") != "application/json;charset=UTF8" {
			t.Errorf("%s: Content-Type %q", r.Path, r.Header.Get("Content-Type"))
		}
	}
	if !strings.HasPrefix(reqs[0].Header.Get("Authorization"), `OAuth realm="ADM", `) {
		t.Errorf("session Authorization %q", reqs[0].Header.Get("Authorization"))
	}
}

func TestClientSessionRenewal(t *testing.T) {
	fake := appletest.NewADE(t)
	c, _ := newFakeClient(t, fake)
	ctx := t.Context()
	if _, err := c.Account(ctx); err != nil {
		t.Fatal(err)
	}

	// Apple's session timed out: 401, a new session, the call again.
	fake.ExpireSessions()
	if _, err := c.Account(ctx); err != nil {
		t.Fatal(err)
	}
	if n := fake.SessionsOpened(); n != 2 {
		t.Errorf("%d sessions opened, want 2", n)
	}
	got := paths(fake.Requests())[2:]
	want := []string{"GET /account 401", "GET /session 200", "GET /account 200"}
	if !slices.Equal(got, want) {
		t.Errorf("requests %v, want %v", got, want)
	}

	// 403 FORBIDDEN, as depsim answers after a restart, also renews.
	fake.FailNext("/account", 1, http.StatusForbidden, "FORBIDDEN")
	if _, err := c.Account(ctx); err != nil {
		t.Fatal(err)
	}
	if n := fake.SessionsOpened(); n != 3 {
		t.Errorf("%d sessions opened, want 3", n)
	}

	// Renewal happens once per call: a second 401 is an error.
	fake.FailNext("/account", 2, http.StatusUnauthorized, "UNAUTHORIZED")
	_, err := c.Account(ctx)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("got %v, want ErrUnauthorized", err)
	}
	if n := fake.SessionsOpened(); n != 4 {
		t.Errorf("%d sessions opened, want 4", n)
	}
}

// TestClientFollowsNewestSession: Apple may send a new session in any
// answer; the fake ends the old one at once, so a client that kept it
// would have to open sessions again and again.
func TestClientFollowsNewestSession(t *testing.T) {
	fake := appletest.NewADE(t)
	fake.RotateSessions(true)
	fake.AddDevices(devices(5, "ROT")...)
	c, _ := newFakeClient(t, fake)
	for range 5 {
		if _, err := c.Account(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.FetchDevices(t.Context(), "", 2); err != nil {
			t.Fatal(err)
		}
	}
	if n := fake.SessionsOpened(); n != 1 {
		t.Errorf("%d sessions opened, want 1", n)
	}
}

func TestClientTokenRefused(t *testing.T) {
	fake := appletest.NewADE(t)
	tok := fakeToken(t, fake)
	tok.AccessSecret += "x"
	c, err := NewClient(tok, WithURL(fake.URL()), WithRootCAs(fake.RootCAs()))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Account(t.Context())
	var apiErr *Error
	if !errors.Is(err, ErrUnauthorized) || !errors.As(err, &apiErr) || apiErr.Endpoint != "GET /session" {
		t.Fatalf("got %v, want ErrUnauthorized from /session", err)
	}
}

// TestClientExpiredToken: an expired token is refused by Apple (here the
// fake, whose clock moves past the expiry), and OAuth timestamps come
// from the injected clock.
func TestClientExpiredToken(t *testing.T) {
	var fakeNow atomic.Int64
	fakeNow.Store(time.Now().Unix())
	fake := appletest.NewADE(t, appletest.WithADEClock(func() time.Time { return time.Unix(fakeNow.Load(), 0) }))
	fakeNow.Add(2 * 365 * 24 * 3600)
	clock := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	c, _ := newFakeClient(t, fake, WithClock(func() time.Time { return clock }))
	if _, err := c.Account(t.Context()); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("got %v, want ErrUnauthorized", err)
	}
	if h := fake.Requests()[0].Header.Get("Authorization"); !strings.Contains(h, fmt.Sprintf(`oauth_timestamp="%d"`, clock.Unix())) {
		t.Errorf("Authorization %s: timestamp not from the clock", h)
	}
}

func TestClientTermsNotSigned(t *testing.T) {
	fake := appletest.NewADE(t)
	c, _ := newFakeClient(t, fake)
	ctx := t.Context()
	fake.RequireTerms(true)
	// Before a session: /session says so.
	_, err := c.Account(ctx)
	if !errors.Is(err, ErrTermsNotSigned) || !strings.Contains(err.Error(), "accept the new terms") {
		t.Fatalf("got %v, want ErrTermsNotSigned", err)
	}
	// With a session: every call says so, and no new session is tried.
	fake.RequireTerms(false)
	if _, err := c.Account(ctx); err != nil {
		t.Fatal(err)
	}
	fake.RequireTerms(true)
	if _, err := c.FetchDevices(ctx, "", 0); !errors.Is(err, ErrTermsNotSigned) {
		t.Fatalf("got %v, want ErrTermsNotSigned", err)
	}
	if n := fake.SessionsOpened(); n != 1 {
		t.Errorf("%d sessions opened, want 1", n)
	}
}

func TestClientRetries(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(fake *appletest.ADE)
		opts    []ClientOption
		wantErr error
		waits   []time.Duration
	}{
		{
			name:  "429 honours Retry-After",
			setup: func(f *appletest.ADE) { f.ThrottleNext("/account", 2, 7*time.Second) },
			waits: []time.Duration{7 * time.Second, 7 * time.Second},
		},
		{
			name:    "429 longer than the bound is returned",
			setup:   func(f *appletest.ADE) { f.ThrottleNext("/account", 1, 2*time.Hour) },
			wantErr: ErrRateLimited,
		},
		{
			name:    "429 beyond the retries",
			setup:   func(f *appletest.ADE) { f.ThrottleNext("/account", 5, time.Second) },
			opts:    []ClientOption{WithRetries(2)},
			wantErr: ErrRateLimited,
			waits:   []time.Duration{time.Second, time.Second},
		},
		{
			name:  "503 without Retry-After backs off",
			setup: func(f *appletest.ADE) { f.FailNext("/account", 3, http.StatusServiceUnavailable, "") },
			waits: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second},
		},
		{
			name:    "500 to the end",
			setup:   func(f *appletest.ADE) { f.FailNext("/account", 10, http.StatusInternalServerError, "") },
			wantErr: ErrUnavailable,
			waits:   []time.Duration{time.Second, 2 * time.Second, 4 * time.Second},
		},
		{
			name:  "backoff bounded",
			setup: func(f *appletest.ADE) { f.FailNext("/account", 3, http.StatusBadGateway, "") },
			opts:  []ClientOption{WithMaxRetryWait(1500 * time.Millisecond)},
			waits: []time.Duration{time.Second, 1500 * time.Millisecond, 1500 * time.Millisecond},
		},
		{
			name:  "session throttled",
			setup: func(f *appletest.ADE) { f.ThrottleNext("/session", 1, 3*time.Second) },
			waits: []time.Duration{3 * time.Second},
		},
		{
			name:    "400 is not retried",
			setup:   func(f *appletest.ADE) { f.FailNext("/account", 1, http.StatusBadRequest, "MALFORMED_REQUEST_BODY") },
			wantErr: &Error{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := appletest.NewADE(t)
			c, s := newFakeClient(t, fake, tt.opts...)
			tt.setup(fake)
			_, err := c.Account(t.Context())
			switch target := tt.wantErr.(type) {
			case nil:
				if err != nil {
					t.Fatal(err)
				}
			case *Error:
				if !errors.As(err, &target) || target.Status != http.StatusBadRequest || target.Code != "MALFORMED_REQUEST_BODY" {
					t.Fatalf("got %v", err)
				}
			default:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
			}
			if got := s.get(); !slices.Equal(got, tt.waits) {
				t.Errorf("waits %v, want %v", got, tt.waits)
			}
		})
	}

	t.Run("RetryAfter reaches the caller", func(t *testing.T) {
		fake := appletest.NewADE(t)
		c, _ := newFakeClient(t, fake)
		fake.ThrottleNext("", 1, 2*time.Hour)
		_, err := c.FetchDevices(t.Context(), "", 0)
		var apiErr *Error
		if !errors.As(err, &apiErr) || apiErr.RetryAfter != 2*time.Hour || apiErr.Status != http.StatusTooManyRequests {
			t.Fatalf("got %#v", err)
		}
	})

	t.Run("cancelled while waiting", func(t *testing.T) {
		fake := appletest.NewADE(t)
		c, err := NewClient(fakeToken(t, fake), WithURL(fake.URL()), WithRootCAs(fake.RootCAs()))
		if err != nil {
			t.Fatal(err)
		}
		fake.ThrottleNext("/session", 1, 30*time.Second)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		if _, err := c.Account(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the deadline", err)
		}
	})
}

func TestClientDevices(t *testing.T) {
	fake := appletest.NewADE(t)
	fake.AddDevices(devices(250, "FETCH")...)
	c, _ := newFakeClient(t, fake)
	ctx := t.Context()

	var cursor string
	var sizes []int
	seen := make(map[string]bool)
	for {
		p, err := c.FetchDevices(ctx, cursor, 100)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(p.Devices))
		for _, d := range p.Devices {
			if seen[d.SerialNumber] || d.OpType != "" || d.OS != "iOS" || d.DeviceAssignedDate.IsZero() {
				t.Errorf("device %+v (seen: %v)", d, seen[d.SerialNumber])
			}
			seen[d.SerialNumber] = true
		}
		if p.Cursor == "" || p.Cursor == cursor || p.FetchedUntil.IsZero() {
			t.Fatalf("page cursor %q after %q, fetched_until %v", p.Cursor, cursor, p.FetchedUntil)
		}
		cursor = p.Cursor
		if !p.MoreToFollow {
			break
		}
	}
	if !slices.Equal(sizes, []int{100, 100, 50}) || len(seen) != 250 {
		t.Errorf("pages %v, %d devices", sizes, len(seen))
	}
	// The finished fetch cursor is exhausted; sync carries on from it.
	if _, err := c.FetchDevices(ctx, cursor, 100); !errors.Is(err, ErrExhaustedCursor) {
		t.Fatalf("got %v, want ErrExhaustedCursor", err)
	}
	fake.AddDevices(appletest.ADEDevice{SerialNumber: "NEW1"})
	fake.ModifyDevice("FETCH0001", func(d *appletest.ADEDevice) { d.AssetTag = "tag-1" })
	fake.RemoveDevice("FETCH0002")
	p, err := c.SyncDevices(ctx, cursor, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, d := range p.Devices {
		ops = append(ops, d.SerialNumber+" "+string(d.OpType))
		if d.OpDate.IsZero() {
			t.Errorf("%s: no op_date", d.SerialNumber)
		}
	}
	if want := []string{"NEW1 added", "FETCH0001 modified", "FETCH0002 deleted"}; !slices.Equal(ops, want) {
		t.Errorf("sync %v, want %v", ops, want)
	}
	if p.Devices[1].AssetTag != "tag-1" {
		t.Errorf("modified device %+v", p.Devices[1])
	}

	if _, err := c.SyncDevices(ctx, "", 0); !errors.Is(err, ErrInvalidCursor) {
		t.Errorf("empty sync cursor: %v", err)
	}
	if _, err := c.SyncDevices(ctx, "bm9uc2Vuc2U", 0); !errors.Is(err, ErrInvalidCursor) {
		t.Errorf("unknown cursor: %v", err)
	}
	fake.ExpireCursors()
	if _, err := c.SyncDevices(ctx, p.Cursor, 0); !errors.Is(err, ErrExpiredCursor) {
		t.Errorf("expired cursor: %v", err)
	}

	details, err := c.DeviceDetails(ctx, []string{"FETCH0001", "NOPE"})
	if err != nil {
		t.Fatal(err)
	}
	if details["FETCH0001"].ResponseStatus != StatusSuccess || details["FETCH0001"].AssetTag != "tag-1" ||
		details["NOPE"].ResponseStatus != StatusNotFound {
		t.Errorf("details %+v", details)
	}
	disowned, err := c.DisownDevices(ctx, []string{"FETCH0003", "NOPE"})
	if err != nil {
		t.Fatal(err)
	}
	if disowned["FETCH0003"] != StatusSuccess || disowned["NOPE"] != StatusNotAccessible {
		t.Errorf("disown %v", disowned)
	}
	if len(fake.Devices()) != 249 {
		t.Errorf("%d devices left, want 249", len(fake.Devices()))
	}
}

func TestClientProfiles(t *testing.T) {
	fake := appletest.NewADE(t)
	fake.AddDevices(devices(3, "PROF")...)
	c, _ := newFakeClient(t, fake)
	ctx := t.Context()

	p := NewProfile("Staff iPhones", "https://mdm.example.com/ade/enroll")
	p.IsSupervised, p.IsMDMRemovable, p.AwaitDeviceConfigured = true, false, true
	p.SkipSetupItems = []string{"AppleID", "Siri"}
	p.Department = "IT"
	p.Devices = []string{"PROF0000"}
	def, err := c.DefineProfile(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if def.ProfileUUID == "" || def.Devices["PROF0000"] != StatusSuccess || len(def.Failed()) != 0 {
		t.Fatalf("define %+v", def)
	}
	stored, ok := fake.Profile(def.ProfileUUID)
	if !ok || stored["profile_name"] != "Staff iPhones" || stored["is_mdm_removable"] != false ||
		stored["await_device_configured"] != true || stored["department"] != "IT" {
		t.Errorf("fake stored %v", stored)
	}

	got, err := c.GetProfile(ctx, def.ProfileUUID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ProfileUUID != def.ProfileUUID || got.URL != p.URL || got.IsMDMRemovable || !got.IsSupervised ||
		!slices.Equal(got.SkipSetupItems, p.SkipSetupItems) {
		t.Errorf("profile %+v", got)
	}
	if _, err := c.GetProfile(ctx, "0000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown profile: %v", err)
	}

	as, err := c.AssignProfile(ctx, def.ProfileUUID, []string{"PROF0001", "PROF0002", "GONE"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(as.Failed(), []string{"GONE"}) || as.ProfileUUID != def.ProfileUUID {
		t.Errorf("assign %+v", as)
	}
	want := map[string]string{"PROF0000": def.ProfileUUID, "PROF0001": def.ProfileUUID, "PROF0002": def.ProfileUUID}
	if got := fake.Assignments(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("assignments %v, want %v", got, want)
	}
	if r := fake.Requests(); r[len(r)-1].Method != http.MethodPost || r[len(r)-1].Path != "/profile/devices" {
		t.Errorf("assigned with %s %s", r[len(r)-1].Method, r[len(r)-1].Path)
	}

	removed, err := c.RemoveProfile(ctx, []string{"PROF0001"})
	if err != nil {
		t.Fatal(err)
	}
	if removed["PROF0001"] != StatusSuccess {
		t.Errorf("remove %v", removed)
	}
	if _, ok := fake.Assignments()["PROF0001"]; ok {
		t.Error("PROF0001 still assigned")
	}

	// Refused before asking Apple.
	before := len(fake.Requests())
	bad := NewProfile("Unsupervised", "https://mdm.example.com/ade/enroll")
	bad.IsMDMRemovable = false
	if _, err := c.DefineProfile(ctx, bad); !errors.Is(err, ErrFlagsInvalid) {
		t.Errorf("got %v, want ErrFlagsInvalid", err)
	}
	if len(fake.Requests()) != before {
		t.Error("an invalid profile was sent")
	}
	// And Apple's own refusal maps alike.
	fake.FailNext("/profile", 1, http.StatusBadRequest, "FLAGS_INVALID")
	if _, err := c.DefineProfile(ctx, p); !errors.Is(err, ErrFlagsInvalid) || !errors.Is(err, ErrInvalidProfile) {
		t.Errorf("got %v, want ErrFlagsInvalid", err)
	}
}

func TestNewClient(t *testing.T) {
	tok := &ServerToken{ConsumerKey: "CK", ConsumerSecret: "CS", AccessToken: "AT", AccessSecret: "AS"}
	tests := []struct {
		url string
		ok  bool
	}{
		{"", true}, // the default
		{"https://mdmenrollment.apple.com/", true},
		{"https://ade.example.com:8443/prefix", true},
		{"http://127.0.0.1:9000", true},
		{"http://localhost:9000", true},
		{"http://ade.example.com", false},
		{"ftp://ade.example.com", false},
		{"https://user:pw@ade.example.com", false},
		{"mdmenrollment.apple.com", false},
	}
	for _, tt := range tests {
		var opts []ClientOption
		if tt.url != "" {
			opts = append(opts, WithURL(tt.url))
		}
		c, err := NewClient(tok, opts...)
		if (err == nil) != tt.ok {
			t.Errorf("%q: %v", tt.url, err)
		}
		if err == nil && tt.url == "" && c.URL() != DefaultURL {
			t.Errorf("default URL %s", c.URL())
		}
	}
	if _, err := NewClient(&ServerToken{ConsumerKey: "CK"}); err == nil {
		t.Error("incomplete token accepted")
	}
	c, err := NewClient(tok, WithURL("https://ade.example.com:8443/prefix/"))
	if err != nil {
		t.Fatal(err)
	}
	if u := c.endpointURL("/profile", nil).String(); u != "https://ade.example.com:8443/prefix/profile" {
		t.Errorf("endpoint %s", u)
	}
}
