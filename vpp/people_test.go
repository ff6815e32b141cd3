package vpp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
)

const loc = "location-1"

// peopleEnv is People over the fake service and a memStore, with Apple
// carrying out events while People waits.
type peopleEnv struct {
	*env
	store  *memStore
	people *People
	ids    int
}

func newPeopleEnv(t *testing.T, fakeOpts ...appletest.VPPOption) *peopleEnv {
	t.Helper()
	e := &peopleEnv{env: newEnv(t, fakeOpts), store: newMemStore()}
	e.completeOnSleep()
	e.people = NewPeople(e.client, e.store, loc, WithPeopleClock(e.clock.Now), WithClientUserIDs(func() string {
		e.ids++
		return fmt.Sprintf("cuid-%d", e.ids)
	}))
	return e
}

func (e *peopleEnv) register(t *testing.T, userIDs ...string) []UserRecord {
	t.Helper()
	var recs []UserRecord
	for _, id := range userIDs {
		rec, err := e.people.RegisterUser(context.Background(), Person{UserID: id, Email: id + "@example.com"})
		if err != nil {
			t.Fatalf("registering %s: %v", id, err)
		}
		recs = append(recs, rec)
		e.clock.Sleep(context.Background(), time.Second) // distinct CreatedAt
	}
	return recs
}

func (e *peopleEnv) accept(t *testing.T, userID, appleID string) {
	t.Helper()
	if err := e.fake.AcceptInvitation(e.store.get(userID).ClientUserID, appleID); err != nil {
		t.Fatal(err)
	}
}

func results(outs []Outcome) string {
	var b strings.Builder
	for _, o := range outs {
		fmt.Fprintf(&b, "%s:%s", o.UserID, o.Result)
		if o.HeldBy != "" {
			fmt.Fprintf(&b, "(%s)", o.HeldBy)
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}

func TestRegisterUserOnce(t *testing.T) {
	e := newPeopleEnv(t)
	ctx := context.Background()
	rec, err := e.people.RegisterUser(ctx, Person{UserID: "alice", Email: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != StatusRegistered || rec.InviteCode == "" || rec.ClientUserID != "cuid-1" || rec.Location != loc {
		t.Fatalf("record %+v", rec)
	}
	again, err := e.people.RegisterUser(ctx, Person{UserID: "alice", Email: "alice@example.com"})
	if err != nil || again != rec {
		t.Fatalf("again: %+v, %v", again, err)
	}
	if n := e.fake.CountRequests(http.MethodPost, "/users/create"); n != 1 {
		t.Errorf("%d creates, want 1", n)
	}
	if u, ok := e.fake.User("cuid-1"); !ok || u.Email != "alice@example.com" || u.InviteCode != rec.InviteCode {
		t.Errorf("Apple's user %+v", u)
	}
	if n := len(e.fake.Users()); n != 1 {
		t.Errorf("Apple has %d users", n)
	}
}

func TestRegisterUserAfterInterruption(t *testing.T) {
	// A replica stored the record and Apple created the user, but the
	// replica died before recording Apple's answer.
	e := newPeopleEnv(t)
	ctx := context.Background()
	e.store.put(UserRecord{Location: loc, UserID: "bob", ClientUserID: "cuid-bob"})
	ev, err := e.client.CreateUsers(ctx, []RequestUser{{ClientUserID: "cuid-bob"}})
	if err != nil {
		t.Fatal(err)
	}
	e.fake.CompleteEvents()
	_ = ev
	rec, err := e.people.RegisterUser(ctx, Person{UserID: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != StatusRegistered || rec.InviteCode == "" || rec.ClientUserID != "cuid-bob" {
		t.Errorf("record %+v", rec)
	}
	if n := len(e.fake.Users()); n != 1 {
		t.Errorf("Apple has %d users, want 1", n)
	}
}

func TestInvitationOnceAndAcceptance(t *testing.T) {
	e := newPeopleEnv(t)
	ctx := context.Background()
	rec := e.register(t, "carol")[0]

	inv, err := e.people.Invitation(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	if inv.Code != rec.InviteCode || !strings.Contains(inv.URL, "inviteCode="+inv.Code) || inv.Accepted {
		t.Fatalf("invitation %+v", inv)
	}
	again, err := e.people.Invitation(ctx, "carol")
	if err != nil || again != inv {
		t.Fatalf("second invitation %+v, %v", again, err)
	}
	if _, err := e.people.Invitation(ctx, "nobody"); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("unregistered: %v", err)
	}

	// Carol opens the URL and signs in.
	resp, err := fakeHTTPClient(e.fake).Get(inv.URL + "&appleId=carol@icloud.com")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("accepting: %s", resp.Status)
	}

	rep, err := e.people.RefreshUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Accepted) != 1 || rep.Accepted[0].UserID != "carol" || rep.Accepted[0].IDHash != appletest.VPPIDHash("carol@icloud.com") {
		t.Fatalf("report %+v", rep)
	}
	got := e.store.get("carol")
	if got.Status != StatusAssociated || got.InviteCode != inv.Code {
		t.Errorf("stored %+v: status tracked, code kept", got)
	}
	inv2, err := e.people.Invitation(ctx, "carol")
	if err != nil || !inv2.Accepted || inv2.Code != inv.Code {
		t.Errorf("after acceptance: %+v, %v", inv2, err)
	}
	// A second refresh reports nothing new.
	rep, err = e.people.RefreshUsers(ctx)
	if err != nil || len(rep.Accepted) != 0 || rep.Users != 1 {
		t.Errorf("second refresh %+v, %v", rep, err)
	}
	if n := e.fake.CountRequests(http.MethodPost, "/users/create"); n != 1 {
		t.Errorf("%d users created for one person", n)
	}
}

func fakeHTTPClient(fake *appletest.VPP) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = fake.RootCAs()
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestSharedAppleIDDetected(t *testing.T) {
	e := newPeopleEnv(t)
	ctx := context.Background()
	e.register(t, "dan", "dana", "erin")
	e.accept(t, "dan", "family@icloud.com")
	e.accept(t, "dana", "Family@iCloud.com ")
	e.accept(t, "erin", "erin@icloud.com")
	// A user some other server created is reported, not imported.
	ev, err := e.client.CreateUsers(ctx, []RequestUser{{ClientUserID: "foreign"}})
	if err != nil {
		t.Fatal(err)
	}
	e.fake.CompleteEvents()
	_ = ev

	rep, err := e.people.RefreshUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.SharedAppleIDs) != 1 {
		t.Fatalf("shared %+v", rep.SharedAppleIDs)
	}
	s := rep.SharedAppleIDs[0]
	var ids []string
	for _, u := range s.Users {
		ids = append(ids, u.UserID)
	}
	slices.Sort(ids)
	if s.IDHash != appletest.VPPIDHash("family@icloud.com") || !slices.Equal(ids, []string{"dan", "dana"}) {
		t.Errorf("shared %+v", s)
	}
	if len(rep.Accepted) != 3 || !slices.Equal(rep.Unknown, []string{"foreign"}) {
		t.Errorf("report %+v", rep)
	}
}

func TestAssignBeforeEnrollment(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(
		appletest.VPPAsset{AdamID: "361309726", Total: 10},
		appletest.VPPAsset{AdamID: "408709785", Total: 10}))
	ctx := context.Background()
	e.register(t, "frank", "grace")
	for _, app := range []string{"361309726", "408709785"} {
		outs, err := e.people.Assign(ctx, app, "frank", "grace", "frank")
		if err != nil {
			t.Fatal(err)
		}
		if got := results(outs); got != "frank:assigned grace:assigned" {
			t.Errorf("%s: %s", app, got)
		}
		if outs[0].EventID == "" {
			t.Error("no event ID")
		}
		if assigned, available := e.fake.Counts(app); assigned != 2 || available != 8 {
			t.Errorf("%s: %d assigned, %d available", app, assigned, available)
		}
	}
	if n := e.fake.PendingEvents(); n != 0 {
		t.Errorf("%d events still pending", n)
	}
	// Assigning again spends nothing and sends nothing.
	before := e.fake.CountRequests(http.MethodPost, "/assets/associate")
	outs, err := e.people.Assign(ctx, "361309726", "frank", "grace", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	if got := results(outs); got != "frank:already_assigned grace:already_assigned nobody:not_registered" {
		t.Errorf("again: %s", got)
	}
	if !errors.Is(outs[2].Err, ErrNotRegistered) {
		t.Errorf("nobody: %v", outs[2].Err)
	}
	if n := e.fake.CountRequests(http.MethodPost, "/assets/associate"); n != before {
		t.Errorf("sent %d more associate requests", n-before)
	}
}

func TestAssignRepeated9616(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "1", Total: 10}))
	ctx := context.Background()
	e.register(t, "hank", "hanna")
	e.accept(t, "hank", "shared@icloud.com")
	e.accept(t, "hanna", "shared@icloud.com")
	if outs, err := e.people.Assign(ctx, "1", "hank"); err != nil || results(outs) != "hank:assigned" {
		t.Fatalf("hank: %s, %v", results(outs), err)
	}
	// bramley has not refreshed: it does not know hanna shares hank's
	// account, so it asks, and Apple answers 9616.
	before := e.fake.CountRequests(http.MethodPost, "/assets/associate")
	outs, err := e.people.Assign(ctx, "1", "hanna")
	if err != nil {
		t.Fatal(err)
	}
	if got := results(outs); got != "hanna:already_assigned" || outs[0].Err != nil {
		t.Errorf("hanna: %s, %v", got, outs[0].Err)
	}
	if n := e.fake.CountRequests(http.MethodPost, "/assets/associate") - before; n != 1 {
		t.Errorf("%d associate requests: 9616 is not retried", n)
	}
	if h := e.fake.Holders("1"); !slices.Equal(h, []string{e.store.get("hank").ClientUserID}) {
		t.Errorf("holders %v", h)
	}
	if assigned, available := e.fake.Counts("1"); assigned != 1 || available != 9 {
		t.Errorf("%d assigned, %d available", assigned, available)
	}

	// Once bramley knows, it does not ask at all.
	if _, err := e.people.RefreshUsers(ctx); err != nil {
		t.Fatal(err)
	}
	before = e.fake.CountRequests(http.MethodPost, "/assets/associate")
	outs, err = e.people.Assign(ctx, "1", "hanna")
	if err != nil {
		t.Fatal(err)
	}
	if got := results(outs); got != "hanna:held_by_shared_apple_id(hank)" {
		t.Errorf("after refresh: %s", got)
	}
	if n := e.fake.CountRequests(http.MethodPost, "/assets/associate"); n != before {
		t.Errorf("asked Apple anyway")
	}
}

func TestAssignOneLicencePerAppleAccount(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "2", Total: 10}))
	ctx := context.Background()
	e.register(t, "ivy", "ivan", "jo")
	e.accept(t, "ivy", "twins@icloud.com")
	e.accept(t, "ivan", "twins@icloud.com")
	if _, err := e.people.RefreshUsers(ctx); err != nil {
		t.Fatal(err)
	}
	outs, err := e.people.Assign(ctx, "2", "ivy", "ivan", "jo")
	if err != nil {
		t.Fatal(err)
	}
	if got := results(outs); got != "ivy:assigned ivan:held_by_shared_apple_id(ivy) jo:assigned" {
		t.Errorf("outcomes %s", got)
	}
	if assigned, _ := e.fake.Counts("2"); assigned != 2 {
		t.Errorf("%d licences spent, want 2", assigned)
	}
}

func TestAssignBacksOffOn9630(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "3", Total: 10}),
		appletest.WithVPPAlreadyAssignedLimit(1))
	ctx := context.Background()
	e.register(t, "kim", "kip", "lee")
	e.accept(t, "kim", "k@icloud.com")
	e.accept(t, "kip", "k@icloud.com")
	if _, err := e.people.Assign(ctx, "3", "kim"); err != nil {
		t.Fatal(err)
	}
	if outs, _ := e.people.Assign(ctx, "3", "kip"); results(outs) != "kip:already_assigned" {
		t.Fatalf("kip: %s", results(outs))
	}
	// That 9616 was one too many: Apple answers the next request 9630,
	// and the client backs off before asking again.
	e.clock.reset()
	outs, err := e.people.Assign(ctx, "3", "lee")
	if err != nil {
		t.Fatal(err)
	}
	if got := results(outs); got != "lee:assigned" {
		t.Errorf("lee: %s", got)
	}
	if w := e.clock.waits(); len(w) == 0 || w[0] != 30*time.Second {
		t.Errorf("waits %v, want a 30 s back-off first", w)
	}
	var saw9630 bool
	for _, r := range e.fake.Requests() {
		saw9630 = saw9630 || r.ErrorNumber == 9630
	}
	if !saw9630 {
		t.Error("the fake never answered 9630")
	}
}

func TestAssignHonoursRateLimit(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "4", Total: 10}))
	ctx := context.Background()
	e.register(t, "max")
	e.clock.reset()
	e.fake.RateLimitNext(1, 3*time.Second)
	outs, err := e.people.Assign(ctx, "4", "max")
	if err != nil || results(outs) != "max:assigned" {
		t.Fatalf("%s, %v", results(outs), err)
	}
	if w := e.clock.waits(); len(w) == 0 || w[0] != 3*time.Second {
		t.Errorf("waits %v, want Retry-After (3s) first", w)
	}
}

func TestAssignFailures(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "5", Total: 1}))
	ctx := context.Background()
	e.register(t, "ned", "nia")
	outs, err := e.people.Assign(ctx, "5", "ned", "nia")
	if err != nil {
		t.Fatal(err)
	}
	if got := results(outs); got != "ned:assigned nia:failed" || !errors.Is(outs[1].Err, ErrNotEnoughLicenses) {
		t.Errorf("%s, %v", got, outs[1].Err)
	}

	// A revoked token stops the whole call.
	e.fake.RevokeToken()
	if _, err := e.people.Assign(ctx, "5", "nia"); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("revoked: %v", err)
	}
}

func TestAssignStopsWhenClaimLost(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "6", Total: 3}))
	ctx := context.Background()
	if _, err := e.client.Claim(ctx, false); err != nil {
		t.Fatal(err)
	}
	e.register(t, "olga")
	e.fake.ClaimAs("another", "Another MDM")
	if _, err := e.people.Assign(ctx, "6", "olga"); !errors.Is(err, ErrLocationClaimed) {
		t.Fatalf("err = %v", err)
	}
	if n := e.fake.CountRequests(http.MethodPost, "/assets/associate"); n != 0 {
		t.Errorf("assigned after losing the location")
	}
}

func TestReleaseDuplicates(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(
		appletest.VPPAsset{AdamID: "7", Total: 5}, appletest.VPPAsset{AdamID: "8", Total: 5}))
	ctx := context.Background()
	e.register(t, "pat", "pam")
	// Licences given before anyone accepted ...
	for _, app := range []string{"7", "8"} {
		if outs, err := e.people.Assign(ctx, app, "pat", "pam"); err != nil || results(outs) != "pat:assigned pam:assigned" {
			t.Fatalf("%s: %s, %v", app, results(outs), err)
		}
	}
	// ... then both accepted with one Apple ID.
	e.accept(t, "pam", "p@icloud.com")
	e.accept(t, "pat", "p@icloud.com")
	rep, err := e.people.RefreshUsers(ctx)
	if err != nil || len(rep.SharedAppleIDs) != 1 {
		t.Fatalf("%+v, %v", rep, err)
	}
	rel, err := e.people.ReleaseDuplicates(ctx, rep.SharedAppleIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(rel) != 2 {
		t.Fatalf("releases %+v", rel)
	}
	for _, r := range rel {
		if r.Kept != "pat" || !slices.Equal(r.Released, []string{"pam"}) || r.Err != nil || r.EventID == "" {
			t.Errorf("release %+v", r)
		}
		if h := e.fake.Holders(r.Asset.AdamID); !slices.Equal(h, []string{e.store.get("pat").ClientUserID}) {
			t.Errorf("%s held by %v", r.Asset.AdamID, h)
		}
	}
	// Nothing left to release.
	if rel, err := e.people.ReleaseDuplicates(ctx, rep.SharedAppleIDs[0]); err != nil || len(rel) != 0 {
		t.Errorf("again: %+v, %v", rel, err)
	}
}

func TestRetireUser(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "9", Total: 2}))
	ctx := context.Background()
	e.register(t, "quinn")
	if _, err := e.people.Assign(ctx, "9", "quinn"); err != nil {
		t.Fatal(err)
	}
	if err := e.people.RetireUser(ctx, "quinn"); err != nil {
		t.Fatal(err)
	}
	if got := e.store.get("quinn"); got.Status != StatusRetired {
		t.Errorf("stored %+v", got)
	}
	if assigned, available := e.fake.Counts("9"); assigned != 0 || available != 2 {
		t.Errorf("licence not returned: %d assigned, %d available", assigned, available)
	}
	if err := e.people.RetireUser(ctx, "quinn"); err != nil {
		t.Errorf("retiring twice: %v", err)
	}
	if _, err := e.people.Invitation(ctx, "quinn"); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("invitation of a retired user: %v", err)
	}
	// Registering again creates a new Apple user under the same name.
	rec, err := e.people.RegisterUser(ctx, Person{UserID: "quinn"})
	if err != nil || rec.Status != StatusRegistered || rec.ClientUserID != "cuid-1" {
		t.Errorf("re-registered %+v, %v", rec, err)
	}
}

func TestAssignSharedAccountSharesFate(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "10", Total: 0}))
	ctx := context.Background()
	e.register(t, "rex", "rey")
	e.accept(t, "rex", "r@icloud.com")
	e.accept(t, "rey", "r@icloud.com")
	if _, err := e.people.RefreshUsers(ctx); err != nil {
		t.Fatal(err)
	}
	outs, err := e.people.Assign(ctx, "10", "rex", "rey")
	if err != nil {
		t.Fatal(err)
	}
	// No licence left: rex's failed, and rey, skipped for rex, has none either.
	if got := results(outs); got != "rex:failed rey:failed(rex)" || !errors.Is(outs[1].Err, ErrNotEnoughLicenses) {
		t.Errorf("%s, %v", got, outs[1].Err)
	}
}

func TestAssignLegacySynchronous9616(t *testing.T) {
	e := newPeopleEnv(t, appletest.WithVPPAssets(appletest.VPPAsset{AdamID: "11", Total: 5}))
	ctx := context.Background()
	e.register(t, "sam", "sue")
	// A legacy answer naming no one: each person is asked for alone, and
	// the one Apple refuses again counts as done.
	e.fake.FailNext(1, appletest.VPPFailure{Path: "/assets/associate", Status: 400, ErrorNumber: 9616})
	e.fake.FailNext(1, appletest.VPPFailure{Path: "/assets/associate", Status: 400, ErrorNumber: 9616})
	outs, err := e.people.Assign(ctx, "11", "sam", "sue")
	if err != nil {
		t.Fatal(err)
	}
	if got := results(outs); got != "sam:already_assigned sue:assigned" {
		t.Errorf("%s", got)
	}
	if n := e.fake.CountRequests(http.MethodPost, "/assets/associate"); n != 3 {
		t.Errorf("%d associate requests, want 3 (both, then each alone)", n)
	}
	if h := e.fake.Holders("11"); !slices.Equal(h, []string{e.store.get("sue").ClientUserID}) {
		t.Errorf("holders %v", h)
	}
}
