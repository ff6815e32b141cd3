package vpp

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/bramley-mdm/bramley/storage"
)

// UserState is what Apple says of a user.
type UserState struct {
	// Status is "" until Apple has created the user.
	Status UserStatus
	// IDHash names the Apple Account that accepted the invitation.
	IDHash string
	// InviteCode is Apple's invitation code, produced once when the user
	// is created.
	InviteCode string
}

// UserRecord is what bramley keeps of one person at one location.
type UserRecord struct {
	// Location is the location the record belongs to: the ID under which
	// bramley keeps the location's content token (its uId is a good one).
	Location string
	// UserID is bramley's ID of the person.
	UserID string
	// ClientUserID is the person's name at Apple: random, because Apple
	// wants it unique in the location, never changed and never an e-mail.
	ClientUserID string
	Email        string
	UserState
	CreatedAt time.Time
}

// UserStore keeps the people registered with Apps and Books. Keys are the
// location and bramley's user ID, or the location and the clientUserId.
type UserStore interface {
	// VPPUser returns the record of a bramley user at a location;
	// storage.ErrNotFound when the user was never registered there.
	VPPUser(ctx context.Context, location, userID string) (UserRecord, error)
	// CreateVPPUser stores rec unless the location already has a record
	// for rec.UserID, and returns the stored record either way, so that
	// two replicas registering one person at once go on with one
	// clientUserId. Idempotent.
	CreateVPPUser(ctx context.Context, rec UserRecord) (UserRecord, error)
	// UpdateVPPUser records what Apple says of the user with clientUserID:
	// Status and IDHash as given, InviteCode unless empty (Apple stops
	// sending it once the invitation is accepted, and bramley keeps it).
	// It returns the record after the update and the state before it;
	// storage.ErrNotFound when the location has no such user (one created
	// by another server, say).
	UpdateVPPUser(ctx context.Context, location, clientUserID string, st UserState) (rec UserRecord, prev UserState, err error)
	// VPPUsersByIDHash returns the location's users whose Apple Account has
	// idHash, in any status; none is not an error.
	VPPUsersByIDHash(ctx context.Context, location, idHash string) ([]UserRecord, error)
}

// ErrNotRegistered means the person has no active Apps and Books user at
// the location: call RegisterUser first.
var ErrNotRegistered = errors.New("the person is not registered with Apps and Books at this location")

// Person is someone to register with Apps and Books.
type Person struct {
	UserID string
	// Email and ManagedAppleID are optional: Apple shows them to the
	// organisation's administrators, and sends nothing to them.
	Email          string
	ManagedAppleID string
}

// People puts licences in people's hands before they have a device
// ("people before devices"): a person is registered once per location and
// invited once, their acceptance and Apple Account are tracked, and
// licences are assigned to them, never twice to one Apple Account. It is
// safe for concurrent use; its calls wait on Apple's asynchronous events,
// so they belong in background jobs, not in request handlers.
type People struct {
	client   *Client
	store    UserStore
	location string
	newID    func() string
	now      func() time.Time
}

// PeopleOption configures People.
type PeopleOption func(*People)

// WithClientUserIDs replaces the generator of clientUserIds (random UUIDs).
func WithClientUserIDs(newID func() string) PeopleOption { return func(p *People) { p.newID = newID } }

// WithPeopleClock sets the clock that stamps new records (default time.Now).
func WithPeopleClock(now func() time.Time) PeopleOption { return func(p *People) { p.now = now } }

// NewPeople returns People for the location that client's token manages.
func NewPeople(client *Client, store UserStore, location string, opts ...PeopleOption) *People {
	p := &People{client: client, store: store, location: location, newID: randomUUID, now: time.Now}
	for _, o := range opts {
		o(p)
	}
	return p
}

func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func stateOf(u *User) UserState {
	return UserState{Status: u.Status, IDHash: u.IDHash, InviteCode: u.InviteCode}
}

func active(s UserStatus) bool { return s == StatusRegistered || s == StatusAssociated }

// RegisterUser makes sure the person has a user at Apple, creating it the
// first time (and again after it was retired) and returning the existing
// one otherwise. It is idempotent, also when interrupted: a user Apple
// created but bramley did not hear about is found (9716) rather than
// created twice.
func (p *People) RegisterUser(ctx context.Context, person Person) (UserRecord, error) {
	rec, err := p.store.VPPUser(ctx, p.location, person.UserID)
	switch {
	case err == nil:
		if active(rec.Status) {
			return rec, nil
		}
	case errors.Is(err, storage.ErrNotFound):
		rec, err = p.store.CreateVPPUser(ctx, UserRecord{
			Location:     p.location,
			UserID:       person.UserID,
			ClientUserID: p.newID(),
			Email:        person.Email,
			CreatedAt:    p.now(),
		})
		if err != nil {
			return UserRecord{}, fmt.Errorf("storing Apps and Books user: %w", err)
		}
		if active(rec.Status) {
			return rec, nil // another replica got there first
		}
	default:
		return UserRecord{}, fmt.Errorf("reading Apps and Books user: %w", err)
	}

	ev, err := p.client.CreateUsers(ctx, []RequestUser{{
		ClientUserID: rec.ClientUserID, Email: person.Email, ManagedAppleID: person.ManagedAppleID,
	}})
	if err != nil && !errors.Is(err, ErrUserExists) {
		return rec, fmt.Errorf("registering user %s: %w", person.UserID, err)
	}
	if ev != nil {
		st, err := p.client.WaitEvent(ctx, ev.EventID)
		if err != nil {
			return rec, fmt.Errorf("registering user %s: %w", person.UserID, err)
		}
		if f := st.FailureFor(rec.ClientUserID, ""); f != nil && Code(f.Number) != ErrUserExists {
			return rec, fmt.Errorf("registering user %s: %w", person.UserID, f)
		}
	}
	u, err := p.client.ActiveUser(ctx, rec.ClientUserID)
	if err != nil {
		return rec, fmt.Errorf("registering user %s: %w", person.UserID, err)
	}
	rec, _, err = p.store.UpdateVPPUser(ctx, p.location, rec.ClientUserID, stateOf(u))
	if err != nil {
		return rec, fmt.Errorf("storing Apps and Books user: %w", err)
	}
	return rec, nil
}

// Invitation is how a person joins: they open URL (or enter Code) signed
// in with their Apple Account, which associates the account with their
// user at the location.
type Invitation struct {
	Code string
	URL  string
	// Accepted is set once an Apple Account has accepted: the URL is spent.
	Accepted bool
}

// Invitation returns the person's invitation: always the same one, the
// code Apple produced when it created the user, so a person is never
// invited twice at one location. It does not send anything; whoever shows
// or mails it may do so as often as needed. ErrNotRegistered when the
// person has no active user.
func (p *People) Invitation(ctx context.Context, userID string) (Invitation, error) {
	rec, err := p.store.VPPUser(ctx, p.location, userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !active(rec.Status)) {
		return Invitation{}, fmt.Errorf("invitation for %s: %w", userID, ErrNotRegistered)
	}
	if err != nil {
		return Invitation{}, fmt.Errorf("reading Apps and Books user: %w", err)
	}
	if rec.InviteCode == "" && rec.Status == StatusRegistered {
		// Registered before bramley kept codes, or imported: Apple has it.
		u, err := p.client.ActiveUser(ctx, rec.ClientUserID)
		if err != nil {
			return Invitation{}, fmt.Errorf("invitation for %s: %w", userID, err)
		}
		if rec, _, err = p.store.UpdateVPPUser(ctx, p.location, rec.ClientUserID, stateOf(u)); err != nil {
			return Invitation{}, fmt.Errorf("storing Apps and Books user: %w", err)
		}
	}
	inv := Invitation{Code: rec.InviteCode, Accepted: rec.Status == StatusAssociated}
	if inv.Code != "" {
		inv.URL = p.client.InvitationURL(ctx, inv.Code)
	}
	return inv, nil
}

// RefreshReport is what RefreshUsers found.
type RefreshReport struct {
	// Users is how many users Apple listed.
	Users int
	// Accepted are the people who accepted their invitation since the
	// last refresh.
	Accepted []UserRecord
	// Retired are the people retired since the last refresh (by an
	// administrator in Apple Business or School Manager, say).
	Retired []UserRecord
	// Unknown are clientUserIds Apple has and bramley does not: users of
	// another server or an earlier installation.
	Unknown []string
	// SharedAppleIDs are the Apple Accounts that accepted more than one
	// person's invitation. Apple answers 9616 when such people are given
	// the same item; Assign never tries, and ReleaseDuplicates frees the
	// licences given to them before they accepted.
	SharedAppleIDs []SharedAppleID
}

// SharedAppleID is one Apple Account behind several people.
type SharedAppleID struct {
	IDHash string
	Users  []UserRecord
}

// RefreshUsers reads every user from Apple and records status, idHash and
// invitation code: this is how acceptance is tracked when Apple's
// notifications are not configured. It reports the changes and the Apple
// Accounts shared by several people.
func (p *People) RefreshUsers(ctx context.Context) (*RefreshReport, error) {
	users, _, err := p.client.Users(ctx, UserFilter{})
	if err != nil {
		return nil, err
	}
	// Several records can share a clientUserId, one of them active: that
	// one speaks for the person.
	byID := make(map[string]*User, len(users))
	for i := range users {
		u := &users[i]
		if cur, ok := byID[u.ClientUserID]; !ok || (cur.Status == StatusRetired && u.Status != StatusRetired) {
			byID[u.ClientUserID] = u
		}
	}
	report := &RefreshReport{Users: len(users)}
	byHash := map[string][]UserRecord{}
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		u := byID[id]
		rec, prev, err := p.store.UpdateVPPUser(ctx, p.location, id, stateOf(u))
		if errors.Is(err, storage.ErrNotFound) {
			report.Unknown = append(report.Unknown, id)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("storing Apps and Books user: %w", err)
		}
		switch {
		case u.Status == StatusAssociated && prev.Status != StatusAssociated:
			report.Accepted = append(report.Accepted, rec)
		case u.Status == StatusRetired && prev.Status != StatusRetired:
			report.Retired = append(report.Retired, rec)
		}
		if u.Status == StatusAssociated && u.IDHash != "" {
			byHash[u.IDHash] = append(byHash[u.IDHash], rec)
		}
	}
	for _, h := range slices.Sorted(maps.Keys(byHash)) {
		if recs := byHash[h]; len(recs) > 1 {
			report.SharedAppleIDs = append(report.SharedAppleIDs, SharedAppleID{IDHash: h, Users: recs})
		}
	}
	return report, nil
}

// Result is what became of one person in Assign.
type Result string

// Results of Assign.
const (
	// Assigned: the event completed; the person holds a licence.
	Assigned Result = "assigned"
	// AlreadyAssigned: the person held a licence already, or Apple
	// answered 9616. Nothing to do, and nothing was retried.
	AlreadyAssigned Result = "already_assigned"
	// HeldBySharedAppleID: another person on the same Apple Account holds
	// the item (Outcome.HeldBy), or is being given it in this call; the
	// account has it, so no second licence was spent.
	HeldBySharedAppleID Result = "held_by_shared_apple_id"
	// NotRegistered: the person has no active user (ErrNotRegistered).
	NotRegistered Result = "not_registered"
	// Pending: Apple accepted the request but the event had not finished
	// when WaitEvent gave up; Outcome.EventID can be polled later.
	Pending Result = "pending"
	// Failed: Apple refused, Outcome.Err says why.
	Failed Result = "failed"
)

// Outcome is the result of Assign for one person.
type Outcome struct {
	UserID       string
	ClientUserID string
	Result       Result
	// HeldBy is the user ID of the person on the same Apple Account who
	// holds the item or was sent for the account in this call, for people
	// skipped because of them. When that person did not get it, the
	// skipped one shares their Result and Err.
	HeldBy  string
	EventID string
	Err     error
}

// Assign gives each person a licence of the app or book adamID (standard
// quality), before they have any device: the licence waits for them. It
// never gives one Apple Account the same item twice: people who hold it,
// or whose Apple Account (idHash) already holds it through another
// person, are skipped, and of several people on one account in the call
// only the first is sent. A 9616 answer counts as done and is not
// retried. It waits for Apple's events and reports per person; it returns
// an error only for what stops the whole call (the token, the claim, the
// context, the store).
func (p *People) Assign(ctx context.Context, adamID string, userIDs ...string) ([]Outcome, error) {
	outs := make([]Outcome, 0, len(userIDs))
	var targets []int // indexes into outs
	recs := map[int]UserRecord{}
	seen := map[string]bool{}
	for _, id := range userIDs {
		if seen[id] {
			continue
		}
		seen[id] = true
		o := Outcome{UserID: id}
		rec, err := p.store.VPPUser(ctx, p.location, id)
		switch {
		case errors.Is(err, storage.ErrNotFound) || (err == nil && !active(rec.Status)):
			o.Result, o.Err = NotRegistered, ErrNotRegistered
		case err != nil:
			return nil, fmt.Errorf("reading Apps and Books user: %w", err)
		default:
			o.ClientUserID = rec.ClientUserID
			targets = append(targets, len(outs))
			recs[len(outs)] = rec
		}
		outs = append(outs, o)
	}
	if len(targets) == 0 {
		return outs, nil
	}

	// Apple is the judge of who holds what; read it rather than trust a
	// copy that an administrator's changes in Apple Business Manager may
	// have outdated.
	held, _, err := p.client.Assignments(ctx, AssignmentFilter{AdamID: adamID})
	if err != nil {
		return nil, fmt.Errorf("reading assignments of %s: %w", adamID, err)
	}
	holders := map[string]bool{}
	for _, a := range held {
		if a.ClientUserID != "" {
			holders[a.ClientUserID] = true
		}
	}
	taken := map[string]string{} // idHash → user ID that holds or is being given the item
	sentFor := map[string]int{}  // idHash → index of the person sent for the account in this call
	deferred := map[int]int{}    // index of a person skipped → index of the one sent instead
	var send []int
	for _, i := range targets {
		rec, o := recs[i], &outs[i]
		if holders[rec.ClientUserID] {
			o.Result = AlreadyAssigned
			continue
		}
		if h := rec.IDHash; h != "" {
			if by, ok := taken[h]; ok {
				o.Result, o.HeldBy = HeldBySharedAppleID, by
				if j, ok := sentFor[h]; ok {
					deferred[i] = j
				}
				continue
			}
			siblings, err := p.store.VPPUsersByIDHash(ctx, p.location, h)
			if err != nil {
				return nil, fmt.Errorf("reading users sharing an Apple Account: %w", err)
			}
			for _, s := range siblings {
				if s.ClientUserID != rec.ClientUserID && holders[s.ClientUserID] {
					taken[h] = s.UserID
					break
				}
			}
			if by, ok := taken[h]; ok {
				o.Result, o.HeldBy = HeldBySharedAppleID, by
				continue
			}
			taken[h], sentFor[h] = rec.UserID, i
		}
		send = append(send, i)
	}
	for chunk := range slices.Chunk(send, p.client.Limits(ctx).MaxClientUserIDs) {
		if err = p.associate(ctx, adamID, chunk, outs, true); err != nil {
			break
		}
	}
	// A person skipped for another on the same account shares that one's
	// fate: if the account did not get the item, neither did they.
	for i, j := range deferred {
		if r := outs[j].Result; r != Assigned && r != AlreadyAssigned {
			outs[i].Result, outs[i].Err, outs[i].EventID = r, outs[j].Err, outs[j].EventID
		}
	}
	return outs, err
}

// fatal reports errors that concern the whole location or call rather
// than one person.
func fatal(err error) bool {
	return errors.Is(err, ErrLocationClaimed) || errors.Is(err, ErrTokenExpired) || errors.Is(err, ErrTokenRevoked) ||
		errors.Is(err, ErrTokenInvalid) || errors.Is(err, ErrLoginRequired) || errors.Is(err, ErrBadAuthorization) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// associate assigns adamID to the people at idx (indexes into outs) and
// fills in their outcomes.
func (p *People) associate(ctx context.Context, adamID string, idx []int, outs []Outcome, resubmit bool) error {
	ids := make([]string, len(idx))
	for k, i := range idx {
		ids[k] = outs[i].ClientUserID
	}
	ev, err := p.client.Associate(ctx, ManageAssets{Assets: []AssetRef{{AdamID: adamID}}, ClientUserIDs: ids})
	if err != nil {
		var apiErr *Error
		if errors.As(err, &apiErr) && Code(apiErr.Number) == ErrAlreadyAssigned {
			// A legacy synchronous 9616: nothing was processed. The people
			// it names have the item; the others go again once, without
			// them — a different request, not a retry of this one.
			var named []string
			if apiErr.Info != nil {
				named = apiErr.Info.ClientUserIDs
			}
			if len(named) == 0 && len(idx) > 1 && resubmit {
				// It does not say whom it means: ask for each alone.
				for _, i := range idx {
					if err := p.associate(ctx, adamID, []int{i}, outs, false); err != nil {
						return err
					}
				}
				return nil
			}
			var rest []int
			for _, i := range idx {
				if len(named) == 0 || slices.Contains(named, outs[i].ClientUserID) {
					outs[i].Result, outs[i].Err = AlreadyAssigned, nil
				} else {
					rest = append(rest, i)
				}
			}
			if len(rest) > 0 && resubmit {
				return p.associate(ctx, adamID, rest, outs, false)
			}
			for _, i := range rest {
				outs[i].Result, outs[i].Err = Failed, err
			}
			return nil
		}
		for _, i := range idx {
			outs[i].Result, outs[i].Err = Failed, err
		}
		if fatal(err) {
			return err
		}
		return nil
	}
	st, err := p.client.WaitEvent(ctx, ev.EventID)
	for _, i := range idx {
		outs[i].EventID = ev.EventID
	}
	if err != nil {
		for _, i := range idx {
			outs[i].Result, outs[i].Err = Pending, err
		}
		if fatal(err) {
			return err
		}
		return nil
	}
	for _, i := range idx {
		switch f := st.FailureFor(outs[i].ClientUserID, ""); {
		case f == nil:
			outs[i].Result = Assigned
		case Code(f.Number) == ErrAlreadyAssigned:
			outs[i].Result = AlreadyAssigned
		default:
			e := *f
			outs[i].Result, outs[i].Err = Failed, &e
		}
	}
	return nil
}

// RetireUser retires the person's user at Apple, which returns their
// revocable licences to the location, and records it. Retiring a person
// who is not registered does nothing.
func (p *People) RetireUser(ctx context.Context, userID string) error {
	rec, err := p.store.VPPUser(ctx, p.location, userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !active(rec.Status)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading Apps and Books user: %w", err)
	}
	ev, err := p.client.RetireUsers(ctx, []string{rec.ClientUserID})
	if err != nil {
		return fmt.Errorf("retiring user %s: %w", userID, err)
	}
	st, err := p.client.WaitEvent(ctx, ev.EventID)
	if err != nil {
		return fmt.Errorf("retiring user %s: %w", userID, err)
	}
	// 9609: Apple has no active user by that name any more; retired is
	// what bramley wanted.
	if f := st.FailureFor(rec.ClientUserID, ""); f != nil && Code(f.Number) != ErrUserNotFound {
		return fmt.Errorf("retiring user %s: %w", userID, f)
	}
	if _, _, err := p.store.UpdateVPPUser(ctx, p.location, rec.ClientUserID,
		UserState{Status: StatusRetired, IDHash: rec.IDHash}); err != nil {
		return fmt.Errorf("storing Apps and Books user: %w", err)
	}
	return nil
}

// Release is what ReleaseDuplicates did with one item held more than once
// by one Apple Account.
type Release struct {
	Asset AssetRef
	// Kept is the user ID of the person who keeps the licence: the one
	// registered first.
	Kept string
	// Released are the user IDs whose licences went back to the location.
	Released []string
	EventID  string
	Err      error
}

// ReleaseDuplicates frees the licences one Apple Account holds twice.
// They come from licences given to people before they accepted their
// invitations, when no one could know that they would accept with one
// account. Of each item, the person registered first keeps it.
func (p *People) ReleaseDuplicates(ctx context.Context, shared SharedAppleID) ([]Release, error) {
	people := slices.Clone(shared.Users)
	slices.SortStableFunc(people, func(a, b UserRecord) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.UserID, b.UserID))
	})
	holders := map[AssetRef][]UserRecord{}
	var order []AssetRef
	for _, u := range people {
		if !active(u.Status) {
			continue
		}
		held, _, err := p.client.Assignments(ctx, AssignmentFilter{ClientUserID: u.ClientUserID})
		if err != nil {
			return nil, fmt.Errorf("reading assignments of %s: %w", u.UserID, err)
		}
		for _, a := range held {
			if a.ClientUserID != u.ClientUserID {
				continue
			}
			ref := AssetRef{AdamID: a.AdamID, PricingParam: a.PricingParam}
			if _, ok := holders[ref]; !ok {
				order = append(order, ref)
			}
			holders[ref] = append(holders[ref], u)
		}
	}
	var releases []Release
	for _, ref := range order {
		hs := holders[ref]
		if len(hs) < 2 {
			continue
		}
		r := Release{Asset: ref, Kept: hs[0].UserID}
		var ids []string
		for _, u := range hs[1:] {
			r.Released = append(r.Released, u.UserID)
			ids = append(ids, u.ClientUserID)
		}
		ev, err := p.client.Disassociate(ctx, ManageAssets{Assets: []AssetRef{ref}, ClientUserIDs: ids})
		if err == nil {
			r.EventID = ev.EventID
			var st *EventStatus
			if st, err = p.client.WaitEvent(ctx, ev.EventID); err == nil && st.EventStatus == EventFailed && len(st.Failures) > 0 {
				e := st.Failures[0]
				err = &e
			}
		}
		r.Err = err
		releases = append(releases, r)
		if err != nil && fatal(err) {
			return releases, err
		}
	}
	return releases, nil
}
