package vpp

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
)

func TestServiceConfig(t *testing.T) {
	e := newEnv(t, []appletest.VPPOption{appletest.WithVPPLimit("maxClientUserIds", 7)})
	cfg, err := e.client.ServiceConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.MaxClientUserIDs != 7 || cfg.Limits.MaxAssets != 25 || cfg.Limits.MaxRequestPerSecond != 15 {
		t.Errorf("limits = %+v", cfg.Limits)
	}
	if !slices.ContainsFunc(cfg.ErrorCodes, func(c ErrorCode) bool { return c.ErrorNumber == 9709 }) {
		t.Errorf("error codes lack 9709: %v", cfg.ErrorCodes)
	}
	if !slices.Contains(cfg.NotificationTypes, NotifyAssetManagement) || cfg.URLs.EventStatus == "" {
		t.Errorf("config = %+v", cfg)
	}
	url := cfg.InvitationURL("ab c")
	if !strings.Contains(url, "inviteCode=ab+c&") || strings.Contains(url, "%25inviteCode") {
		t.Errorf("invitation URL %q", url)
	}
	// Service config is the one public endpoint: no token leaves for it.
	for _, r := range e.fake.Requests() {
		if r.Path == "/service/config" && r.Status != http.StatusOK {
			t.Errorf("service config answered %d", r.Status)
		}
	}
	// Limits come from the cache for 5 minutes, then are read again.
	before := e.fake.CountRequests(http.MethodGet, "/service/config")
	_ = e.client.Limits(context.Background())
	if got := e.fake.CountRequests(http.MethodGet, "/service/config"); got != before {
		t.Errorf("read the configuration again within 5 minutes")
	}
	_ = e.clock.Sleep(context.Background(), 6*time.Minute)
	if lim := e.client.Limits(context.Background()); lim.MaxClientUserIDs != 7 {
		t.Errorf("limits %+v", lim)
	}
	if got := e.fake.CountRequests(http.MethodGet, "/service/config"); got != before+1 {
		t.Errorf("service config read %d times after 6 minutes, want %d", got, before+1)
	}
}

func TestInvitationURLTemplates(t *testing.T) {
	tests := []struct{ tmpl, want string }{
		{"", "https://buy.itunes.apple.com/WebObjects/MZFinance.woa/wa/associateVPPUserWithITSAccount?inviteCode=C1&mt=8"},
		{"https://x.example/i?c=%inviteCode%", "https://x.example/i?c=C1"},
	}
	for _, tt := range tests {
		cfg := &ServiceConfig{URLs: ServiceURLs{InvitationEmail: tt.tmpl}}
		if got := cfg.InvitationURL("C1"); got != tt.want {
			t.Errorf("InvitationURL with %q = %q, want %q", tt.tmpl, got, tt.want)
		}
	}
}

func TestClaim(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, []appletest.VPPOption{appletest.WithVPPLocation("Org", "Main Street")})

	cc, err := e.client.Claim(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if cc.MDMInfo == nil || *cc.MDMInfo != testMDM || cc.LocationName != "Main Street" || cc.UID != e.fake.UID() {
		t.Fatalf("claimed config %+v", cc)
	}
	if cc.TokenExpirationDate.IsZero() || e.client.TokenExpiration().IsZero() {
		t.Error("token expiration not read")
	}
	// Claiming again writes nothing.
	if _, err := e.client.Claim(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n := e.fake.CountRequests(http.MethodPost, "/client/config"); n != 1 {
		t.Errorf("%d POST /client/config, want 1", n)
	}

	// Another server takes the location over: reads now fail, and
	// claiming back needs force.
	e.fake.ClaimAs("other-server", "OtherMDM")
	_, _, err = e.client.Users(ctx, UserFilter{})
	var ce *ClaimError
	if !errors.As(err, &ce) || ce.Holder.Name != "OtherMDM" || !errors.Is(err, ErrLocationClaimed) {
		t.Fatalf("Users after losing the claim: %v", err)
	}
	if _, err := e.client.Claim(ctx, false); !errors.Is(err, ErrLocationClaimed) {
		t.Fatalf("Claim without force: %v", err)
	}
	if cc, err = e.client.Claim(ctx, true); err != nil || cc.MDMInfo.ID != testMDM.ID {
		t.Fatalf("Claim with force: %+v, %v", cc, err)
	}
	if _, _, err := e.client.Users(ctx, UserFilter{}); err != nil {
		t.Errorf("Users after claiming back: %v", err)
	}

	noInfo := NewClient(e.fake.SToken(), WithURL(e.fake.URL()), WithRootCAs(e.fake.RootCAs()))
	if _, err := noInfo.Claim(ctx, false); !errors.Is(err, ErrNoMDMInfo) {
		t.Errorf("Claim without MDM info: %v", err)
	}
}

func TestTokenRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		setup func(fake *appletest.VPP) string // returns the token to use
		opts  []appletest.VPPOption
		want  Code
	}{
		{name: "unknown token (HTTP 200)", setup: func(f *appletest.VPP) string { return f.OtherToken() }, want: ErrTokenInvalid},
		{name: "revoked", setup: func(f *appletest.VPP) string { f.RevokeToken(); return f.SToken() }, want: ErrTokenRevoked},
		{name: "expired", opts: []appletest.VPPOption{appletest.WithVPPTokenExpiry(time.Now().Add(-time.Hour))},
			setup: func(f *appletest.VPP) string { return f.SToken() }, want: ErrTokenExpired},
		{name: "no token", setup: func(*appletest.VPP) string { return "" }, want: ErrBadAuthorization},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := appletest.NewVPP(t, tt.opts...)
			clk := newClock()
			c := NewClient(tt.setup(fake), WithURL(fake.URL()), WithRootCAs(fake.RootCAs()),
				WithSleeper(clk.Sleep), WithNow(clk.Now))
			_, err := c.ClientConfig(ctx)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if n := fake.CountRequests(http.MethodGet, "/client/config"); n != 1 {
				t.Errorf("%d requests: a refused token is not retried", n)
			}
		})
	}
}

func TestAssetsPaged(t *testing.T) {
	assets := []appletest.VPPAsset{
		{AdamID: "1", Total: 5}, {AdamID: "2", Total: 10}, {AdamID: "3", Total: 1, ProductType: "Book", Irrevocable: true, NotDeviceAssignable: true},
		{AdamID: "4", Total: 2}, {AdamID: "5", Total: 2, PricingParam: PricingPlus},
	}
	e := newEnv(t, []appletest.VPPOption{appletest.WithVPPAssets(assets...), appletest.WithVPPPageSize(2)})
	ctx := context.Background()
	all, err := e.client.Assets(ctx, AssetFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 || all[2].ProductType != ProductBook || all[2].Revocable || all[0].AvailableCount != 5 || !all[0].DeviceAssignable {
		t.Errorf("assets %+v", all)
	}
	if n := e.fake.CountRequests(http.MethodGet, "/assets"); n != 3 {
		t.Errorf("%d pages read, want 3", n)
	}
	for _, r := range e.fake.Requests() {
		if r.Path == "/assets" && r.Query.Get("pageIndex") == "0" {
			t.Error("asked for pageIndex=0; Apple wants the first page without it")
		}
	}
	yes := true
	books, err := e.client.Assets(ctx, AssetFilter{ProductType: ProductBook})
	if err != nil || len(books) != 1 || books[0].AdamID != "3" {
		t.Errorf("books %+v, %v", books, err)
	}
	da, err := e.client.Assets(ctx, AssetFilter{DeviceAssignable: &yes, PricingParam: PricingStandard})
	if err != nil || len(da) != 3 {
		t.Errorf("device-assignable standard assets %+v, %v", da, err)
	}
}

func TestRateLimitHonoured(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.RateLimitNext(2, 7*time.Second)
	if _, err := e.client.ClientConfig(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.clock.waits(); !slices.Equal(got, []time.Duration{7 * time.Second, 7 * time.Second}) {
		t.Errorf("waited %v, want Retry-After twice", got)
	}
	if n := e.fake.CountRequests(http.MethodGet, "/client/config"); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
}

func TestRetryAfterBeyondMaxWait(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.RateLimitNext(1, 10*time.Minute)
	_, err := e.client.ClientConfig(context.Background())
	var apiErr *Error
	if !errors.As(err, &apiErr) || !errors.Is(err, ErrTooManyRequests) || apiErr.RetryAfter != 10*time.Minute || apiErr.Status != 429 {
		t.Fatalf("err = %v (%+v)", err, apiErr)
	}
	if w := e.clock.waits(); len(w) != 0 {
		t.Errorf("slept %v; a wait beyond MaxWait goes back to the caller", w)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		failure   appletest.VPPFailure
		n         int
		wantErr   error
		wantWaits []time.Duration
		requests  int
	}{
		{name: "503 without Retry-After backs off", failure: appletest.VPPFailure{Status: 503, ErrorNumber: 9729}, n: 2,
			wantWaits: []time.Duration{2 * time.Second, 4 * time.Second}, requests: 3},
		{name: "500 with Retry-After", failure: appletest.VPPFailure{Status: 500, ErrorNumber: 9603, RetryAfter: 5 * time.Second}, n: 1,
			wantWaits: []time.Duration{5 * time.Second}, requests: 2},
		{name: "retries are bounded", failure: appletest.VPPFailure{Status: 500, ErrorNumber: 9603}, n: 10, wantErr: ErrInternal,
			wantWaits: []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}, requests: 5},
		{name: "400 is not retried", failure: appletest.VPPFailure{Status: 400, ErrorNumber: 9602}, n: 1, wantErr: ErrInvalidArgument,
			requests: 1},
		{name: "9609 is not retried", failure: appletest.VPPFailure{Status: 400, ErrorNumber: 9609}, n: 1, wantErr: ErrUserNotFound,
			requests: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.fake.FailNext(tt.n, tt.failure)
			_, _, err := e.client.UsersPage(context.Background(), UserFilter{}, 0)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := e.clock.waits(); !slices.Equal(got, tt.wantWaits) {
				t.Errorf("waits %v, want %v", got, tt.wantWaits)
			}
			if n := e.fake.CountRequests(http.MethodGet, "/users"); n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
		})
	}
}

func TestAlreadyAssignedNotRetried(t *testing.T) {
	e := newEnv(t, []appletest.VPPOption{appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "1", Total: 5})})
	e.fake.FailNext(1, appletest.VPPFailure{Path: "/assets/associate", Status: 400, ErrorNumber: 9616})
	_, err := e.client.Associate(context.Background(), ManageAssets{Assets: []AssetRef{{AdamID: "1"}}, SerialNumbers: []string{"S1"}})
	if !errors.Is(err, ErrAlreadyAssigned) {
		t.Fatalf("err = %v", err)
	}
	if n := e.fake.CountRequests(http.MethodPost, "/assets/associate"); n != 1 {
		t.Errorf("%d requests: 9616 must not be retried", n)
	}
	if w := e.clock.waits(); len(w) != 0 {
		t.Errorf("waited %v after 9616", w)
	}
}

func TestTooManyAlreadyAssignedBacksOff(t *testing.T) {
	e := newEnv(t, []appletest.VPPOption{appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "1", Total: 5})})
	e.fake.FailNext(2, appletest.VPPFailure{Path: "/assets/associate", Status: 400, ErrorNumber: 9630})
	ev, err := e.client.Associate(context.Background(), ManageAssets{Assets: []AssetRef{{AdamID: "1"}}, SerialNumbers: []string{"S1"}})
	if err != nil || ev.EventID == "" {
		t.Fatalf("Associate: %v, %v", ev, err)
	}
	if got := e.clock.waits(); !slices.Equal(got, []time.Duration{30 * time.Second, time.Minute}) {
		t.Errorf("waits %v, want 30s then 1m", got)
	}
	// Beyond MaxWait the caller gets the error, with when to come back.
	e.clock.reset()
	e.fake.FailNext(4, appletest.VPPFailure{Path: "/assets/associate", Status: 400, ErrorNumber: 9630})
	_, err = e.client.Associate(context.Background(), ManageAssets{Assets: []AssetRef{{AdamID: "1"}}, SerialNumbers: []string{"S2"}})
	var apiErr *Error
	if !errors.As(err, &apiErr) || !errors.Is(err, ErrTooManyAlreadyAssigned) || apiErr.RetryAfter != 4*time.Minute {
		t.Fatalf("err = %v (%+v)", err, apiErr)
	}
}

func TestEventLifecycle(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, []appletest.VPPOption{appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "1", Total: 1})})
	ev, err := e.client.Associate(ctx, ManageAssets{Assets: []AssetRef{{AdamID: "1"}}, SerialNumbers: []string{"S1", "S2"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.client.EventStatus(ctx, ev.EventID)
	if err != nil || st.EventStatus != EventPending || st.NumRequested != 2 || st.EventType != EventAssociate {
		t.Fatalf("status %+v, %v", st, err)
	}
	e.fake.CompleteEvents()
	st, err = e.client.EventStatus(ctx, ev.EventID)
	if err != nil {
		t.Fatal(err)
	}
	// One licence, two devices: one gets it, the other fails 9709.
	if st.EventStatus != EventFailed || st.NumCompleted != 1 {
		t.Fatalf("status %+v", st)
	}
	if f := st.FailureFor("", "S2"); f == nil || !errors.Is(f, ErrNotEnoughLicenses) {
		t.Errorf("S2: %v", f)
	}
	if f := st.FailureFor("", "S1"); f != nil {
		t.Errorf("S1: %v", f)
	}
	if _, err := e.client.EventStatus(ctx, "no-such-event"); !errors.Is(err, ErrUnknownEvent) {
		t.Errorf("unknown event: %v", err)
	}
}

func TestWaitEvent(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, []appletest.VPPOption{appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "1", Total: 1})},
		WithPollInterval(30*time.Second, 3))
	ev, err := e.client.Associate(ctx, ManageAssets{Assets: []AssetRef{{AdamID: "1"}}, SerialNumbers: []string{"S1"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.client.WaitEvent(ctx, ev.EventID)
	if !errors.Is(err, ErrEventPending) || st.EventStatus != EventPending {
		t.Fatalf("never completed: %+v, %v", st, err)
	}
	if got := e.clock.waits(); !slices.Equal(got, []time.Duration{30 * time.Second, 30 * time.Second, 30 * time.Second}) {
		t.Errorf("polls waited %v", got)
	}
	e.completeOnSleep()
	if st, err = e.client.WaitEvent(ctx, ev.EventID); err != nil || st.EventStatus != EventComplete {
		t.Fatalf("%+v, %v", st, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.client.WaitEvent(cctx, ev.EventID); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestRequestsCheckedAgainstLimits(t *testing.T) {
	e := newEnv(t, []appletest.VPPOption{appletest.WithVPPLimit("maxClientUserIds", 2), appletest.WithVPPLimit("maxUsers", 1),
		appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "1", Total: 5})})
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"too many users", func() error {
			_, err := e.client.Associate(ctx, ManageAssets{Assets: []AssetRef{{AdamID: "1"}}, ClientUserIDs: []string{"a", "b", "c"}})
			return err
		}, ErrRequestTooLarge},
		{"no target", func() error {
			_, err := e.client.Associate(ctx, ManageAssets{Assets: []AssetRef{{AdamID: "1"}}})
			return err
		}, ErrInvalidArgument},
		{"duplicates", func() error {
			_, err := e.client.Disassociate(ctx, ManageAssets{Assets: []AssetRef{{AdamID: "1"}}, SerialNumbers: []string{"S", "S"}})
			return err
		}, ErrInvalidArgument},
		{"too many users to create", func() error {
			_, err := e.client.CreateUsers(ctx, []RequestUser{{ClientUserID: "a"}, {ClientUserID: "b"}})
			return err
		}, ErrRequestTooLarge},
		{"a user without ID", func() error {
			_, err := e.client.RetireUsers(ctx, []string{""})
			return err
		}, ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	for _, r := range e.fake.Requests() {
		if r.Method == http.MethodPost {
			t.Errorf("sent %s %s; it should have been refused locally", r.Method, r.Path)
		}
	}
}

func TestPacing(t *testing.T) {
	e := newEnv(t, nil, WithRateLimit(4))
	ctx := context.Background()
	start := e.clock.Now()
	for range 5 {
		if _, err := e.client.ClientConfig(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Five requests at four a second: the fifth starts a second after the first.
	if got := e.clock.Now().Sub(start); got != time.Second {
		t.Errorf("five requests took %v of clock time, want 1s", got)
	}
}

func TestUsersAndSinceVersion(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, []appletest.VPPOption{appletest.WithVPPPageSize(2)})
	e.completeOnSleep()
	ev, err := e.client.CreateUsers(ctx, []RequestUser{{ClientUserID: "a", Email: "a@example.com"}, {ClientUserID: "b"}, {ClientUserID: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := e.client.WaitEvent(ctx, ev.EventID); err != nil || st.EventStatus != EventComplete || st.EventType != EventCreate {
		t.Fatalf("create: %+v, %v", st, err)
	}
	users, version, err := e.client.Users(ctx, UserFilter{})
	if err != nil || len(users) != 3 || users[0].InviteCode == "" || users[0].Status != StatusRegistered || users[0].Email != "a@example.com" {
		t.Fatalf("users %+v, %v", users, err)
	}
	if err := e.fake.AcceptInvitation("b", "b@icloud.com"); err != nil {
		t.Fatal(err)
	}
	changed, _, err := e.client.Users(ctx, UserFilter{SinceVersionID: version})
	if err != nil || len(changed) != 1 || changed[0].ClientUserID != "b" || changed[0].IDHash != appletest.VPPIDHash("b@icloud.com") || changed[0].InviteCode != "" {
		t.Fatalf("changed since %s: %+v, %v", version, changed, err)
	}
	if _, _, err := e.client.Users(ctx, UserFilter{SinceVersionID: "nonsense"}); !errors.Is(err, ErrBadVersionID) {
		t.Errorf("bad version: %v", err)
	}
	u, err := e.client.ActiveUser(ctx, "c")
	if err != nil || u.ClientUserID != "c" {
		t.Errorf("ActiveUser: %+v, %v", u, err)
	}
	if _, err := e.client.ActiveUser(ctx, "zz"); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("unknown user: %v", err)
	}
	// Creating an active user again fails in the event, with 9716.
	ev, err = e.client.CreateUsers(ctx, []RequestUser{{ClientUserID: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.client.WaitEvent(ctx, ev.EventID)
	if err != nil || !errors.Is(st.FailureFor("a", ""), ErrUserExists) {
		t.Errorf("duplicate create: %+v, %v", st, err)
	}
}

func TestCollectPagesRestartsWhenDataChanges(t *testing.T) {
	calls := 0
	fetch := func(_ context.Context, page int) ([]int, Page, error) {
		calls++
		version := "v1"
		if calls == 2 { // the data changed while page 1 was read
			version = "v2"
		}
		if page == 0 {
			return []int{0}, Page{NextPageIndex: 1, VersionID: version}, nil
		}
		return []int{1}, Page{CurrentPageIndex: 1, VersionID: version}, nil
	}
	all, last, err := collectPages(context.Background(), fetch)
	if err != nil || !slices.Equal(all, []int{0, 1}) || calls != 4 || last.VersionID != "v1" {
		t.Errorf("got %v %+v %v after %d calls", all, last, err, calls)
	}

	loop := func(_ context.Context, page int) ([]int, Page, error) {
		return []int{page}, Page{CurrentPageIndex: page, NextPageIndex: page}, nil
	}
	if _, _, err := collectPages(context.Background(), func(ctx context.Context, page int) ([]int, Page, error) {
		if page == 0 {
			return []int{0}, Page{NextPageIndex: 1}, nil
		}
		return loop(ctx, page)
	}); err == nil {
		t.Error("a next page that does not advance was followed")
	}
}
