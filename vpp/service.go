package vpp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bramley-mdm/bramley/storage"
)

// TokenRecord is a location's content token as bramley keeps it: the raw
// token sealed with the server's secret key, and what Apple said of the
// location when bramley claimed it.
type TokenRecord struct {
	// Location is the location's uId (ClientConfig.UID): two tokens of one
	// location share it, and a renewed token replaces the old one.
	Location     string
	LocationName string
	OrgName      string
	Sealed       []byte
	ExpiresAt    time.Time
	// Claimed is set once this server's MDMInfo is in the location's
	// client configuration.
	Claimed   bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

// TokenStore keeps content tokens, one per location.
type TokenStore interface {
	// PutContentToken stores rec, replacing the location's token but
	// keeping its CreatedAt. Idempotent.
	PutContentToken(ctx context.Context, rec TokenRecord) error
	// ContentTokens returns every location's token, the most recently
	// updated first; none is not an error.
	ContentTokens(ctx context.Context) ([]TokenRecord, error)
}

// Kind is what an assignment plan gives: an app or a book.
type Kind string

// Kinds of plans.
const (
	KindApp  Kind = "app"
	KindBook Kind = "book"
)

// PlanStatus is where an assignment plan stands with Apple.
type PlanStatus string

// Plan statuses.
const (
	// PlanPending: Apple's event has not completed; nothing is installed.
	PlanPending PlanStatus = "pending"
	// PlanAssigned: the person's Apple Account holds a licence; devices
	// of theirs may install the item.
	PlanAssigned PlanStatus = "assigned"
	// PlanFailed: Apple refused (Plan.Error says why); assigning again
	// retries.
	PlanFailed PlanStatus = "failed"
)

// Plan is an administrator's decision that a person gets an app or book,
// taken before or after they have a device.
type Plan struct {
	ID       string
	Location string
	Username string
	AdamID   string
	Kind     Kind
	Status   PlanStatus
	// Result is People.Assign's last outcome for the person.
	Result  Result
	EventID string
	Error   string
	// Installs are the devices the item was sent to, filled by Plans.
	Installs  []Install
	CreatedAt time.Time
	UpdatedAt time.Time
}

// devicePlan prefixes the username column of a device-based plan: the
// licence is the device's serial number's, not a person's. Usernames
// cannot contain ':' (enroll.ValidateUsername), so it names no one.
const devicePlan = "device:"

// DeviceID returns the device of a device-based plan, "" for a person's.
func (p Plan) DeviceID() string {
	id, ok := strings.CutPrefix(p.Username, devicePlan)
	if !ok {
		return ""
	}
	return id
}

// Install records that a plan's item was queued for one device.
type Install struct {
	DeviceID    string
	CommandUUID string
	CreatedAt   time.Time
}

// PlanStore keeps assignment plans.
type PlanStore interface {
	// CreatePlan stores p unless the location has a plan for p.Username
	// and p.AdamID, and returns the stored plan either way. Idempotent.
	CreatePlan(ctx context.Context, p Plan) (Plan, error)
	// UpdatePlan records Status, Result, EventID, Error and UpdatedAt of
	// the plan with p.ID; storage.ErrNotFound when there is none.
	UpdatePlan(ctx context.Context, p Plan) error
	// Plans returns the plans of username (all with ""), oldest first,
	// with their installs; none is not an error.
	Plans(ctx context.Context, username string) ([]Plan, error)
}

// InstallStore records which device got which plan's item, so that each
// is sent once.
type InstallStore interface {
	// RecordInstall records in, unless the plan already has an install on
	// in.DeviceID: it reports whether it recorded. Of two callers racing
	// for one plan and device, one gets true.
	RecordInstall(ctx context.Context, planID string, in Install) (bool, error)
	// DeleteInstall forgets the install of the plan on the device (when
	// queueing it failed); missing is not an error.
	DeleteInstall(ctx context.Context, planID, deviceID string) error
}

// OwnerStore says which person a device belongs to.
type OwnerStore interface {
	// SetDeviceOwner records username as the device's owner, replacing
	// any earlier one. Idempotent.
	SetDeviceOwner(ctx context.Context, deviceID, username string, now time.Time) error
	// DeviceOwner returns the device's owner; storage.ErrNotFound when it
	// has none.
	DeviceOwner(ctx context.Context, deviceID string) (string, error)
	// OwnedDevices returns the IDs of the devices of username; none is not
	// an error.
	OwnedDevices(ctx context.Context, username string) ([]string, error)
}

// UserLister lists the people registered at a location.
type UserLister interface {
	// VPPUsers returns the location's records, oldest first.
	VPPUsers(ctx context.Context, location string) ([]UserRecord, error)
}

// ServiceStore is everything Service keeps.
type ServiceStore interface {
	UserStore
	UserLister
	TokenStore
	PlanStore
	InstallStore
	OwnerStore
}

// Sealer encrypts content tokens at rest (*pki.Sealer).
type Sealer interface {
	Seal(plaintext []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
}

// Installer queues an assigned item on a device, as the command
// commandUUID, and wakes it: an InstallApplication for apps, an
// InstallMedia for books.
type Installer interface {
	Install(ctx context.Context, deviceID, commandUUID string, p Plan) error
}

// ErrNoToken means no content token was imported yet.
var ErrNoToken = errors.New("no Apps and Books content token: import one first")

// ErrUnknownUser means the bramley user does not exist.
var ErrUnknownUser = errors.New("no such bramley user")

// ErrNoSerialNumber means bramley does not know the device's serial
// number, which a device-based licence is assigned to.
var ErrNoSerialNumber = errors.New("the device's serial number is not known yet")

// Service is bramley's Apps and Books: content tokens, people, and
// assignment plans carried out when the person's device enrolls. It
// manages the location of the most recently imported token.
type Service struct {
	store   ServiceStore
	sealer  Sealer
	install Installer
	userOK  func(ctx context.Context, username string) error
	serial  func(ctx context.Context, deviceID string) (string, error)
	members func(ctx context.Context, groupDN string) ([]string, error) // groups.go
	opts    []Option
	logger  *slog.Logger
	now     func() time.Time

	mu      sync.Mutex
	clients map[string]*Client // by raw token
}

// ServiceOption configures a Service.
type ServiceOption func(*Service)

// WithServiceClientOptions sets the options of the clients the service
// makes (URL, CAs, MDMInfo …).
func WithServiceClientOptions(opts ...Option) ServiceOption {
	return func(s *Service) { s.opts = append(s.opts, opts...) }
}

// WithServiceLogger sets the logger.
func WithServiceLogger(l *slog.Logger) ServiceOption { return func(s *Service) { s.logger = l } }

// WithServiceClock sets the clock.
func WithServiceClock(now func() time.Time) ServiceOption { return func(s *Service) { s.now = now } }

// WithUserCheck sets how RegisterUser and Assign learn that a bramley user
// exists: check returns an error wrapping storage.ErrNotFound when not.
func WithUserCheck(check func(ctx context.Context, username string) error) ServiceOption {
	return func(s *Service) { s.userOK = check }
}

// WithDeviceLookup sets how AssignDevice learns a device's serial number:
// lookup returns an error wrapping storage.ErrNotFound for an unknown
// device.
func WithDeviceLookup(lookup func(ctx context.Context, deviceID string) (string, error)) ServiceOption {
	return func(s *Service) { s.serial = lookup }
}

// NewService returns the Apps and Books service.
func NewService(store ServiceStore, sealer Sealer, install Installer, opts ...ServiceOption) *Service {
	s := &Service{
		store: store, sealer: sealer, install: install,
		userOK:  func(context.Context, string) error { return nil },
		serial:  func(context.Context, string) (string, error) { return "", storage.ErrNotFound },
		logger:  slog.New(slog.DiscardHandler),
		now:     time.Now,
		clients: map[string]*Client{},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Service) client(raw string) *Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[raw]
	if !ok {
		c = NewClient(raw, append([]Option{WithNow(s.now)}, s.opts...)...)
		s.clients[raw] = c
	}
	return c
}

// ImportToken parses a .vpptoken, refuses an expired one, claims the
// location for this server (a *ClaimError when another server holds it,
// unless force), and stores the token sealed.
func (s *Service) ImportToken(ctx context.Context, data []byte, force bool) (TokenRecord, error) {
	tok, err := ParseContentToken(data)
	if err != nil {
		return TokenRecord{}, err
	}
	if err := tok.Check(s.now()); err != nil {
		return TokenRecord{}, err
	}
	cc, err := s.client(tok.Raw).Claim(ctx, force)
	if err != nil {
		return TokenRecord{}, err
	}
	if cc.UID == "" {
		return TokenRecord{}, errors.New("importing content token: Apple named no location (uId)")
	}
	sealed, err := s.sealer.Seal([]byte(tok.Raw))
	if err != nil {
		return TokenRecord{}, fmt.Errorf("sealing content token: %w", err)
	}
	now := s.now()
	rec := TokenRecord{Location: cc.UID, LocationName: cc.LocationName, OrgName: tok.OrgName, Sealed: sealed,
		ExpiresAt: tok.ExpiresAt, Claimed: true, CreatedAt: now, UpdatedAt: now}
	if err := s.store.PutContentToken(ctx, rec); err != nil {
		return TokenRecord{}, err
	}
	s.logger.InfoContext(ctx, "content token imported", "location", rec.Location, "token", tok)
	return rec, nil
}

// Tokens lists the stored content tokens.
func (s *Service) Tokens(ctx context.Context) ([]TokenRecord, error) {
	return s.store.ContentTokens(ctx)
}

// location returns the location bramley manages and a client for it.
func (s *Service) location(ctx context.Context) (string, *Client, error) {
	toks, err := s.store.ContentTokens(ctx)
	if err != nil {
		return "", nil, err
	}
	if len(toks) == 0 {
		return "", nil, ErrNoToken
	}
	raw, err := s.sealer.Open(toks[0].Sealed)
	if err != nil {
		return "", nil, fmt.Errorf("opening content token: %w", err)
	}
	return toks[0].Location, s.client(string(raw)), nil
}

func (s *Service) people(ctx context.Context) (*People, string, error) {
	loc, c, err := s.location(ctx)
	if err != nil {
		return nil, "", err
	}
	return NewPeople(c, s.store, loc, WithPeopleClock(s.now)), loc, nil
}

func (s *Service) checkUser(ctx context.Context, username string) error {
	if err := s.userOK(ctx, username); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("%w: %q", ErrUnknownUser, username)
		}
		return err
	}
	return nil
}

// PersonView is one person as the administrator sees them.
type PersonView struct {
	UserRecord
	Invitation Invitation
	// SharedWith are the other people whose invitations the same Apple
	// Account accepted.
	SharedWith []string
}

// RegisterUser registers the bramley user with Apps and Books, once, and
// returns their invitation, always the same one.
func (s *Service) RegisterUser(ctx context.Context, username string) (PersonView, error) {
	if err := s.checkUser(ctx, username); err != nil {
		return PersonView{}, err
	}
	p, _, err := s.people(ctx)
	if err != nil {
		return PersonView{}, err
	}
	rec, err := p.RegisterUser(ctx, Person{UserID: username})
	if err != nil {
		return PersonView{}, err
	}
	inv, err := p.Invitation(ctx, username)
	if err != nil {
		return PersonView{}, err
	}
	return PersonView{UserRecord: rec, Invitation: inv}, nil
}

// Users lists the people registered at the location, with the people each
// shares an Apple Account with.
func (s *Service) Users(ctx context.Context) ([]PersonView, error) {
	loc, c, err := s.location(ctx)
	if err != nil {
		return nil, err
	}
	recs, err := s.store.VPPUsers(ctx, loc)
	if err != nil {
		return nil, err
	}
	byHash := map[string][]string{}
	for _, r := range recs {
		if r.IDHash != "" && r.Status == StatusAssociated {
			byHash[r.IDHash] = append(byHash[r.IDHash], r.UserID)
		}
	}
	out := make([]PersonView, 0, len(recs))
	for _, r := range recs {
		v := PersonView{UserRecord: r, Invitation: Invitation{Code: r.InviteCode, Accepted: r.Status == StatusAssociated}}
		if r.InviteCode != "" {
			v.Invitation.URL = c.InvitationURL(ctx, r.InviteCode)
		}
		if r.Status == StatusAssociated {
			for _, other := range byHash[r.IDHash] {
				if other != r.UserID {
					v.SharedWith = append(v.SharedWith, other)
				}
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// Assign plans the item for the person and assigns the licence now. The
// plan is assigned when Apple's event completed within the call, pending
// otherwise (Sync finishes it); devices of the person get the item once
// it is assigned.
func (s *Service) Assign(ctx context.Context, username, adamID string, kind Kind) (Plan, error) {
	if err := s.checkUser(ctx, username); err != nil {
		return Plan{}, err
	}
	p, loc, err := s.people(ctx)
	if err != nil {
		return Plan{}, err
	}
	now := s.now()
	plan, err := s.store.CreatePlan(ctx, Plan{ID: randomUUID(), Location: loc, Username: username, AdamID: adamID,
		Kind: kind, Status: PlanPending, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		return Plan{}, err
	}
	if plan.Status == PlanAssigned {
		// Done before: Apple is not asked again, so a repeated request
		// cannot earn 9616s or spend a second licence.
		return plan, s.deliverUser(ctx, username)
	}
	outs, err := p.Assign(ctx, adamID, username)
	if err != nil {
		return plan, err
	}
	o := outs[0]
	plan.Result, plan.EventID, plan.Error, plan.UpdatedAt = o.Result, o.EventID, "", s.now()
	switch o.Result {
	case Assigned, AlreadyAssigned, HeldBySharedAppleID:
		plan.Status = PlanAssigned
	case Pending:
		plan.Status = PlanPending
	default:
		plan.Status = PlanFailed
		if o.Err != nil {
			plan.Error = o.Err.Error()
		}
	}
	if err := s.store.UpdatePlan(ctx, plan); err != nil {
		return plan, err
	}
	s.logger.InfoContext(ctx, "assignment planned", "username", username, "adam_id", adamID,
		"status", plan.Status, "result", plan.Result, "event_id", plan.EventID)
	if plan.Status == PlanAssigned {
		return plan, s.deliverUser(ctx, username)
	}
	return plan, nil
}

// Plans lists the plans of username, or all with "".
func (s *Service) Plans(ctx context.Context, username string) ([]Plan, error) {
	return s.store.Plans(ctx, username)
}

// SyncReport is what Sync did.
type SyncReport struct {
	Users *RefreshReport
	// Completed are the plans whose events completed.
	Completed []Plan
}

// Sync reads the people from Apple (acceptance, Apple Accounts shared by
// several people), finishes pending plans whose events completed, and
// sends assigned items to the owners' devices. It is the periodic sweep.
func (s *Service) Sync(ctx context.Context) (*SyncReport, error) {
	loc, c, err := s.location(ctx)
	if err != nil {
		return nil, err
	}
	p := NewPeople(c, s.store, loc, WithPeopleClock(s.now))
	users, err := p.RefreshUsers(ctx)
	if err != nil {
		return nil, err
	}
	rep := &SyncReport{Users: users}
	plans, err := s.store.Plans(ctx, "")
	if err != nil {
		return nil, err
	}
	people := map[string]bool{}
	for _, plan := range plans {
		if plan.Location != loc {
			continue
		}
		if plan.DeviceID() == "" {
			people[plan.Username] = true
		}
		if plan.Status != PlanPending || plan.EventID == "" {
			continue
		}
		st, err := c.EventStatus(ctx, plan.EventID)
		if err != nil {
			if fatal(err) {
				return rep, err
			}
			s.logger.WarnContext(ctx, "reading assignment event", "event_id", plan.EventID, "err", err)
			continue
		}
		if st.EventStatus == EventPending {
			continue
		}
		var clientUserID, serial string
		if id := plan.DeviceID(); id != "" {
			if serial, err = s.serial(ctx, id); err != nil {
				return rep, fmt.Errorf("reading serial number of %s: %w", id, err)
			}
		} else {
			rec, err := s.store.VPPUser(ctx, loc, plan.Username)
			if err != nil {
				return rep, fmt.Errorf("reading Apps and Books user: %w", err)
			}
			clientUserID = rec.ClientUserID
		}
		switch f := st.FailureFor(clientUserID, serial); {
		case f == nil:
			plan.Status, plan.Result = PlanAssigned, Assigned
		case Code(f.Number) == ErrAlreadyAssigned:
			plan.Status, plan.Result = PlanAssigned, AlreadyAssigned
		default:
			plan.Status, plan.Result, plan.Error = PlanFailed, Failed, f.Error()
		}
		plan.UpdatedAt = s.now()
		if err := s.store.UpdatePlan(ctx, plan); err != nil {
			return rep, err
		}
		rep.Completed = append(rep.Completed, plan)
	}
	for _, u := range slices.Sorted(maps.Keys(people)) {
		if err := s.deliverUser(ctx, u); err != nil {
			return rep, err
		}
	}
	for _, plan := range plans {
		if id := plan.DeviceID(); id != "" && plan.Location == loc {
			if err := s.deliverDevice(ctx, id); err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

// AssignDevice gives the device a licence of its own, by serial number,
// so no Apple Account is needed on it, and queues the item once the
// licence is assigned (at once when Apple's event completed within the
// call, after Sync otherwise). Apple installs such apps silently only on
// supervised devices; bramley does not record supervision (DeviceInformation
// IsSupervised is not stored), so it does not refuse unsupervised ones:
// they ask the user first.
func (s *Service) AssignDevice(ctx context.Context, deviceID, adamID string, kind Kind) (Plan, error) {
	serial, err := s.serial(ctx, deviceID)
	if err != nil {
		return Plan{}, err
	}
	if serial == "" {
		return Plan{}, ErrNoSerialNumber
	}
	loc, c, err := s.location(ctx)
	if err != nil {
		return Plan{}, err
	}
	now := s.now()
	plan, err := s.store.CreatePlan(ctx, Plan{ID: randomUUID(), Location: loc, Username: devicePlan + deviceID,
		AdamID: adamID, Kind: kind, Status: PlanPending, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		return Plan{}, err
	}
	if plan.Status == PlanAssigned {
		return s.deliverDevicePlan(ctx, deviceID, plan)
	}
	plan.Result, plan.Error = Assigned, ""
	ev, err := c.Associate(ctx, ManageAssets{Assets: []AssetRef{{AdamID: adamID}}, SerialNumbers: []string{serial}})
	var apiErr *Error
	switch {
	case errors.As(err, &apiErr) && Code(apiErr.Number) == ErrAlreadyAssigned:
		plan.Status, plan.Result = PlanAssigned, AlreadyAssigned
	case err != nil:
		if fatal(err) {
			return plan, err
		}
		plan.Status, plan.Result, plan.Error = PlanFailed, Failed, err.Error()
	default:
		plan.EventID = ev.EventID
		st, err := c.WaitEvent(ctx, ev.EventID)
		switch {
		case errors.Is(err, ErrEventPending):
			plan.Status, plan.Result = PlanPending, Pending
		case err != nil:
			return plan, err
		default:
			switch f := st.FailureFor("", serial); {
			case f == nil:
				plan.Status = PlanAssigned
			case Code(f.Number) == ErrAlreadyAssigned:
				plan.Status, plan.Result = PlanAssigned, AlreadyAssigned
			default:
				plan.Status, plan.Result, plan.Error = PlanFailed, Failed, f.Error()
			}
		}
	}
	plan.UpdatedAt = s.now()
	if err := s.store.UpdatePlan(ctx, plan); err != nil {
		return plan, err
	}
	s.logger.InfoContext(ctx, "device assignment planned", "enrollment_id", deviceID, "adam_id", adamID,
		"status", plan.Status, "result", plan.Result, "event_id", plan.EventID)
	if plan.Status == PlanAssigned {
		return s.deliverDevicePlan(ctx, deviceID, plan)
	}
	return plan, nil
}

// deliverDevicePlan delivers the device's items and returns plan with its
// installs.
func (s *Service) deliverDevicePlan(ctx context.Context, deviceID string, plan Plan) (Plan, error) {
	plans, err := s.store.Plans(ctx, devicePlan+deviceID)
	if err != nil {
		return plan, err
	}
	if err := s.deliver(ctx, deviceID, plans); err != nil {
		return plan, err
	}
	if plans, err = s.store.Plans(ctx, devicePlan+deviceID); err != nil {
		return plan, err
	}
	for _, p := range plans {
		if p.ID == plan.ID {
			return p, nil
		}
	}
	return plan, nil
}

// deliverDevice sends the device the items licensed to it.
func (s *Service) deliverDevice(ctx context.Context, deviceID string) error {
	plans, err := s.store.Plans(ctx, devicePlan+deviceID)
	if err != nil {
		return err
	}
	return s.deliver(ctx, deviceID, plans)
}

// SetOwner records that the device belongs to username and sends it the
// items already assigned to them.
func (s *Service) SetOwner(ctx context.Context, deviceID, username string) error {
	if err := s.checkUser(ctx, username); err != nil {
		return err
	}
	if err := s.store.SetDeviceOwner(ctx, deviceID, username, s.now()); err != nil {
		return err
	}
	return s.Deliver(ctx, deviceID)
}

// Deliver sends the device every item assigned to its owner, or licensed
// to the device itself, that it was not sent yet. It asks Apple nothing, so it suits the check-in path: a
// device without an owner, or whose owner has nothing assigned, is left
// alone.
func (s *Service) Deliver(ctx context.Context, deviceID string) error {
	if err := s.deliverDevice(ctx, deviceID); err != nil {
		return err
	}
	owner, err := s.store.DeviceOwner(ctx, deviceID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading owner of %s: %w", deviceID, err)
	}
	plans, err := s.store.Plans(ctx, owner)
	if err != nil {
		return err
	}
	return s.deliver(ctx, deviceID, plans)
}

func (s *Service) deliverUser(ctx context.Context, username string) error {
	devices, err := s.store.OwnedDevices(ctx, username)
	if err != nil || len(devices) == 0 {
		return err
	}
	plans, err := s.store.Plans(ctx, username)
	if err != nil {
		return err
	}
	for _, d := range devices {
		if err := s.deliver(ctx, d, plans); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) deliver(ctx context.Context, deviceID string, plans []Plan) error {
	for _, p := range plans {
		// Apple: install only after the association has succeeded.
		if p.Status != PlanAssigned || slices.ContainsFunc(p.Installs, func(in Install) bool { return in.DeviceID == deviceID }) {
			continue
		}
		// Claim first, so two replicas (or a check-in racing a sync)
		// cannot both queue it; give the claim back if queueing fails.
		uuid := strings.ToUpper(randomUUID())
		ok, err := s.store.RecordInstall(ctx, p.ID, Install{DeviceID: deviceID, CommandUUID: uuid, CreatedAt: s.now()})
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := s.install.Install(ctx, deviceID, uuid, p); err != nil {
			if derr := s.store.DeleteInstall(ctx, p.ID, deviceID); derr != nil {
				s.logger.ErrorContext(ctx, "forgetting failed install", "err", derr)
			}
			return fmt.Errorf("queueing %s %s for %s: %w", p.Kind, p.AdamID, deviceID, err)
		}
		s.logger.InfoContext(ctx, "assigned item queued", "enrollment_id", deviceID, "adam_id", p.AdamID,
			"kind", p.Kind, "command_uuid", uuid, "username", p.Username)
	}
	return nil
}
