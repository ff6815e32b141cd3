package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/storage"
	"github.com/bramley-mdm/bramley/vpp"
)

// VPPTokens imports and lists Apps and Books content tokens;
// *vpp.Service implements it.
type VPPTokens interface {
	// ImportToken parses, checks, claims (a *vpp.ClaimError when another
	// server holds the location, unless force) and stores a .vpptoken.
	ImportToken(ctx context.Context, data []byte, force bool) (vpp.TokenRecord, error)
	Tokens(ctx context.Context) ([]vpp.TokenRecord, error)
}

// VPPPeople registers people with Apps and Books and follows them.
type VPPPeople interface {
	// RegisterUser registers a bramley user (vpp.ErrUnknownUser when there
	// is none) and returns their invitation.
	RegisterUser(ctx context.Context, username string) (vpp.PersonView, error)
	Users(ctx context.Context) ([]vpp.PersonView, error)
	// Sync reads acceptance from Apple and finishes pending assignments.
	Sync(ctx context.Context) (*vpp.SyncReport, error)
}

// VPPPlans assigns apps and books to people and links devices to them.
type VPPPlans interface {
	Assign(ctx context.Context, username, adamID string, kind vpp.Kind) (vpp.Plan, error)
	// AssignDevice licenses the item to the device's serial number.
	AssignDevice(ctx context.Context, deviceID, adamID string, kind vpp.Kind) (vpp.Plan, error)
	// AssignGroup assigns the item to each member of a directory group
	// (vpp.ErrNoDirectory without one, vpp.ErrUnknownGroup for a group
	// it does not have) and reports per member.
	AssignGroup(ctx context.Context, groupDN, adamID string, kind vpp.Kind) ([]vpp.GroupOutcome, error)
	Plans(ctx context.Context, username string) ([]vpp.Plan, error)
	// SetOwner records the person a device belongs to.
	SetOwner(ctx context.Context, deviceID, username string) error
}

// VPP is all of Apps and Books the API serves.
type VPP interface {
	VPPTokens
	VPPPeople
	VPPPlans
}

// WithVPP serves the /vpp routes and PUT /devices/{id}/owner; without it
// they answer 503.
func WithVPP(v VPP) Option {
	return func(a *API) {
		if v != nil {
			a.vpp = v
		}
	}
}

func vppNotConfigured() error {
	return handler.Errorf(http.StatusServiceUnavailable, "Apps and Books is not configured")
}

// vppError maps the service's errors: the administrator's mistakes are
// 4xx with the explanation, Apple's refusals a bad gateway.
func vppError(err error) error {
	var claim *vpp.ClaimError
	var apple *vpp.Error
	var urlErr *url.Error
	switch {
	case errors.As(err, &claim):
		return handler.Wrap(http.StatusConflict, fmt.Sprintf(
			"the location is managed by another MDM server, %q (id %q); import with ?force=true to take it over",
			claim.Holder.Name, claim.Holder.ID), err)
	case errors.Is(err, vpp.ErrMalformedToken):
		return handler.Wrap(http.StatusBadRequest, vpp.ErrMalformedToken.Error(), err)
	case errors.Is(err, vpp.ErrTokenExpired):
		return handler.Wrap(http.StatusBadRequest, "the content token has expired: download a new one from Apple Business or School Manager", err)
	case errors.Is(err, vpp.ErrNoToken):
		return handler.Wrap(http.StatusConflict, vpp.ErrNoToken.Error(), err)
	case errors.Is(err, vpp.ErrUnknownUser):
		return handler.Wrap(http.StatusNotFound, err.Error(), err)
	case errors.Is(err, vpp.ErrNoDirectory):
		return handler.Wrap(http.StatusBadRequest, "assigning to a group needs a directory: start bramley with --ldap-url", err)
	case errors.Is(err, vpp.ErrUnknownGroup):
		return handler.Wrap(http.StatusNotFound, err.Error(), err)
	case errors.Is(err, vpp.ErrNoSerialNumber):
		return handler.Wrap(http.StatusConflict, vpp.ErrNoSerialNumber.Error(), err)
	case errors.As(err, &apple):
		return handler.Wrap(http.StatusBadGateway, "Apple's Apps and Books service: "+apple.Error(), err)
	case errors.As(err, &urlErr):
		return handler.Wrap(http.StatusBadGateway, "could not reach Apple's Apps and Books service", err)
	}
	return err
}

// decodeVPPJSON reads a JSON request body into v.
func (a *API) decodeVPPJSON(w http.ResponseWriter, r *http.Request, v any, want string) error {
	if media, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || media != mediaJSON {
		return handler.Errorf(http.StatusUnsupportedMediaType, "send application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("malformed JSON: want %s", want)
	}
	return nil
}

type vppTokenView struct {
	Location     string    `json:"location"`
	LocationName string    `json:"location_name"`
	OrgName      string    `json:"org_name"`
	ExpiresAt    time.Time `json:"expires_at"`
	DaysLeft     int       `json:"days_left"`
	// Expiring is set within Apple's warning period (15 days) and after.
	Expiring  bool      `json:"expiring"`
	Claimed   bool      `json:"claimed"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (a *API) tokenView(t vpp.TokenRecord) vppTokenView {
	ct := vpp.ContentToken{ExpiresAt: t.ExpiresAt}
	now := a.now()
	return vppTokenView{Location: t.Location, LocationName: t.LocationName, OrgName: t.OrgName, ExpiresAt: t.ExpiresAt,
		DaysLeft: ct.DaysLeft(now), Expiring: ct.ExpiresWithin(now, vpp.ExpiryWarningPeriod), Claimed: t.Claimed,
		UpdatedAt: t.UpdatedAt}
}

func (a *API) importVPPToken(w http.ResponseWriter, r *http.Request) error {
	if a.vpp == nil {
		return vppNotConfigured()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return err
		}
		return handler.Wrap(http.StatusBadRequest, "reading body", err)
	}
	if len(body) == 0 {
		return badRequest("send the content token (.vpptoken) from Apple Business or School Manager as the body")
	}
	rec, err := a.vpp.ImportToken(r.Context(), body, r.URL.Query().Get("force") == "true")
	if err != nil {
		return vppError(err)
	}
	return writeJSON(w, http.StatusCreated, a.tokenView(rec))
}

func (a *API) listVPPTokens(w http.ResponseWriter, r *http.Request) error {
	if a.vpp == nil {
		return vppNotConfigured()
	}
	toks, err := a.vpp.Tokens(r.Context())
	if err != nil {
		return fmt.Errorf("listing content tokens: %w", err)
	}
	out := struct {
		Tokens []vppTokenView `json:"tokens"`
	}{Tokens: []vppTokenView{}}
	for _, t := range toks {
		out.Tokens = append(out.Tokens, a.tokenView(t))
	}
	return writeJSON(w, http.StatusOK, out)
}

type vppUserView struct {
	Username      string `json:"username"`
	Location      string `json:"location"`
	ClientUserID  string `json:"client_user_id"`
	Status        string `json:"status"`
	IDHash        string `json:"id_hash,omitempty"`
	InviteCode    string `json:"invite_code,omitempty"`
	InvitationURL string `json:"invitation_url,omitempty"`
	Accepted      bool   `json:"accepted"`
	// SharedAppleAccount: the Apple Account that accepted this person's
	// invitation accepted others' too (SharedWith); they get each item once.
	SharedAppleAccount bool     `json:"shared_apple_account"`
	SharedWith         []string `json:"shared_with,omitempty"`
}

func userView(p vpp.PersonView) vppUserView {
	return vppUserView{Username: p.UserID, Location: p.Location, ClientUserID: p.ClientUserID, Status: string(p.Status),
		IDHash: p.IDHash, InviteCode: p.Invitation.Code, InvitationURL: p.Invitation.URL, Accepted: p.Invitation.Accepted,
		SharedAppleAccount: len(p.SharedWith) > 0, SharedWith: p.SharedWith}
}

type vppUserRequest struct {
	Username string `json:"username"`
}

func (a *API) registerVPPUser(w http.ResponseWriter, r *http.Request) error {
	if a.vpp == nil {
		return vppNotConfigured()
	}
	var req vppUserRequest
	if err := a.decodeVPPJSON(w, r, &req, `{"username": …}`); err != nil {
		return err
	}
	if req.Username == "" {
		return badRequest("username is required")
	}
	p, err := a.vpp.RegisterUser(r.Context(), req.Username)
	if err != nil {
		return vppError(err)
	}
	return writeJSON(w, http.StatusOK, userView(p))
}

func (a *API) listVPPUsers(w http.ResponseWriter, r *http.Request) error {
	if a.vpp == nil {
		return vppNotConfigured()
	}
	people, err := a.vpp.Users(r.Context())
	if err != nil {
		return vppError(err)
	}
	out := struct {
		Users []vppUserView `json:"users"`
	}{Users: []vppUserView{}}
	for _, p := range people {
		out.Users = append(out.Users, userView(p))
	}
	return writeJSON(w, http.StatusOK, out)
}

type vppSharedView struct {
	IDHash string   `json:"id_hash"`
	Users  []string `json:"users"`
}

type vppSyncView struct {
	Users               int             `json:"users"`
	Accepted            []string        `json:"accepted"`
	SharedAppleAccounts []vppSharedView `json:"shared_apple_accounts"`
	Completed           []vppPlanView   `json:"completed"`
}

func (a *API) syncVPP(w http.ResponseWriter, r *http.Request) error {
	if a.vpp == nil {
		return vppNotConfigured()
	}
	rep, err := a.vpp.Sync(r.Context())
	if err != nil {
		return vppError(err)
	}
	out := vppSyncView{Accepted: []string{}, SharedAppleAccounts: []vppSharedView{}, Completed: []vppPlanView{}}
	if rep.Users != nil {
		out.Users = rep.Users.Users
		for _, u := range rep.Users.Accepted {
			out.Accepted = append(out.Accepted, u.UserID)
		}
		for _, s := range rep.Users.SharedAppleIDs {
			v := vppSharedView{IDHash: s.IDHash}
			for _, u := range s.Users {
				v.Users = append(v.Users, u.UserID)
			}
			out.SharedAppleAccounts = append(out.SharedAppleAccounts, v)
		}
	}
	for _, p := range rep.Completed {
		out.Completed = append(out.Completed, planView(p))
	}
	return writeJSON(w, http.StatusOK, out)
}

type vppInstallView struct {
	DeviceID    string    `json:"device_id"`
	CommandUUID string    `json:"command_uuid"`
	CreatedAt   time.Time `json:"created_at"`
}

type vppPlanView struct {
	ID        string           `json:"id"`
	Username  string           `json:"username,omitempty"`
	DeviceID  string           `json:"device_id,omitempty"`
	AdamID    string           `json:"adam_id"`
	Kind      string           `json:"kind"`
	Status    string           `json:"status"`
	Result    string           `json:"result,omitempty"`
	EventID   string           `json:"event_id,omitempty"`
	Error     string           `json:"error,omitempty"`
	Installs  []vppInstallView `json:"installs"`
	UpdatedAt time.Time        `json:"updated_at"`
}

func planView(p vpp.Plan) vppPlanView {
	v := vppPlanView{ID: p.ID, Username: p.Username, DeviceID: p.DeviceID(), AdamID: p.AdamID, Kind: string(p.Kind), Status: string(p.Status),
		Result: string(p.Result), EventID: p.EventID, Error: p.Error, Installs: []vppInstallView{}, UpdatedAt: p.UpdatedAt}
	for _, in := range p.Installs {
		v.Installs = append(v.Installs, vppInstallView{DeviceID: in.DeviceID, CommandUUID: in.CommandUUID, CreatedAt: in.CreatedAt})
	}
	if v.DeviceID != "" {
		v.Username = "" // the device's own licence: no person
	}
	return v
}

// vppAssignRequest names a person (username), the members of a directory
// group (group, a DN) or, for a licence of the device's own, a device
// (device_id).
type vppAssignRequest struct {
	Username string `json:"username"`
	DeviceID string `json:"device_id"`
	Group    string `json:"group"`
	AdamID   string `json:"adam_id"`
	Kind     string `json:"kind"`
}

// adamIDPattern: Apple's item IDs are numbers (iTunesStoreID is an integer).
var adamIDPattern = regexp.MustCompile(`^[0-9]{1,19}$`)

func (a *API) assignVPP(w http.ResponseWriter, r *http.Request) error {
	if a.vpp == nil {
		return vppNotConfigured()
	}
	var req vppAssignRequest
	if err := a.decodeVPPJSON(w, r, &req, `{"username"|"device_id"|"group": …, "adam_id": …, "kind": "app"|"book"}`); err != nil {
		return err
	}
	kind := vpp.Kind(strings.ToLower(req.Kind))
	if kind == "" {
		kind = vpp.KindApp
	}
	switch {
	case countSet(req.Username, req.DeviceID, req.Group) != 1:
		return badRequest("give exactly one of username, device_id and group")
	case strings.Contains(req.DeviceID, ":"):
		return badRequest("%q names a user channel; give the device ID", req.DeviceID)
	case !adamIDPattern.MatchString(req.AdamID):
		return badRequest("adam_id must be the item's numeric ID")
	case kind != vpp.KindApp && kind != vpp.KindBook:
		return badRequest("kind must be app or book")
	}
	if req.Group != "" {
		return a.assignVPPGroup(w, r, req.Group, req.AdamID, kind)
	}
	if req.DeviceID != "" {
		p, err := a.vpp.AssignDevice(r.Context(), req.DeviceID, req.AdamID, kind)
		if errors.Is(err, storage.ErrNotFound) {
			return lookupError(err, "device", req.DeviceID)
		}
		if err != nil {
			return vppError(err)
		}
		return writeJSON(w, http.StatusOK, planView(p))
	}
	p, err := a.vpp.Assign(r.Context(), req.Username, req.AdamID, kind)
	if err != nil {
		return vppError(err)
	}
	return writeJSON(w, http.StatusOK, planView(p))
}

func countSet(ss ...string) int {
	n := 0
	for _, s := range ss {
		if s != "" {
			n++
		}
	}
	return n
}

// vppGroupMemberView is one member's outcome of a group assignment: their
// plan, or why they got none (error, with no plan).
type vppGroupMemberView struct {
	Username string       `json:"username"`
	Plan     *vppPlanView `json:"plan,omitempty"`
	Error    string       `json:"error,omitempty"`
}

func (a *API) assignVPPGroup(w http.ResponseWriter, r *http.Request, group, adamID string, kind vpp.Kind) error {
	outs, err := a.vpp.AssignGroup(r.Context(), group, adamID, kind)
	if err != nil {
		return vppError(err)
	}
	out := struct {
		Group   string               `json:"group"`
		Members []vppGroupMemberView `json:"members"`
	}{Group: group, Members: []vppGroupMemberView{}}
	for _, o := range outs {
		v := vppGroupMemberView{Username: o.Username}
		if o.Plan.ID != "" {
			p := planView(o.Plan)
			v.Plan = &p
		}
		var apple *vpp.Error
		switch {
		case o.Err == nil:
		case errors.Is(o.Err, vpp.ErrUnknownUser), errors.As(o.Err, &apple), errors.Is(o.Err, vpp.ErrEventPending):
			// The member's own matter, safe to show as the per-user
			// answers do.
			v.Error = o.Err.Error()
		default:
			a.logger.ErrorContext(r.Context(), "group assignment", "username", o.Username, "group", group, "err", o.Err)
			v.Error = "internal error: see the server log"
		}
		out.Members = append(out.Members, v)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *API) listVPPAssignments(w http.ResponseWriter, r *http.Request) error {
	if a.vpp == nil {
		return vppNotConfigured()
	}
	plans, err := a.vpp.Plans(r.Context(), r.URL.Query().Get("username"))
	if err != nil {
		return fmt.Errorf("listing assignment plans: %w", err)
	}
	out := struct {
		Assignments []vppPlanView `json:"assignments"`
	}{Assignments: []vppPlanView{}}
	for _, p := range plans {
		out.Assignments = append(out.Assignments, planView(p))
	}
	return writeJSON(w, http.StatusOK, out)
}

// setDeviceOwner links a device to the person it belongs to; the items
// assigned to them are queued for it at once.
func (a *API) setDeviceOwner(w http.ResponseWriter, r *http.Request) error {
	if a.vpp == nil {
		return vppNotConfigured()
	}
	id := r.PathValue("id")
	if strings.Contains(id, ":") {
		return handler.Errorf(http.StatusBadRequest, "%q names a user channel; give the device ID", id)
	}
	var req vppUserRequest
	if err := a.decodeVPPJSON(w, r, &req, `{"username": …}`); err != nil {
		return err
	}
	if req.Username == "" {
		return badRequest("username is required")
	}
	if _, err := a.store.Device(r.Context(), id); err != nil {
		return lookupError(err, "device", id)
	}
	if err := a.vpp.SetOwner(r.Context(), id, req.Username); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return lookupError(err, "user", req.Username)
		}
		return vppError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
