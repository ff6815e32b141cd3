package ade

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ProfileDefinition is an ADE profile as bramley keeps it: defined once
// here, and at Apple once per server token the first time a rule assigns
// it there. Definitions never change, so a profile UUID Apple gave for
// one stays right.
type ProfileDefinition struct {
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	Profile Profile `json:"profile"`
	// ProfileUUIDs maps a token ID to the UUID Apple gave the profile
	// under that token; empty until a rule first assigns it there.
	ProfileUUIDs map[string]string `json:"profile_uuids"`
	CreatedAt    time.Time         `json:"created_at"`
	UpdatedAt    time.Time         `json:"updated_at"`
}

// ProfileStore keeps profile definitions and the UUIDs Apple gave them.
type ProfileStore interface {
	// CreateADEProfile stores a new definition (ProfileUUIDs ignored);
	// storage.ErrConflict when its ID is taken.
	CreateADEProfile(ctx context.Context, p ProfileDefinition) error
	// ADEProfiles returns every definition, oldest first, each with its
	// profile UUIDs; none: nil, nil.
	ADEProfiles(ctx context.Context) ([]ProfileDefinition, error)
	// ADEProfile returns one definition with its profile UUIDs;
	// storage.ErrNotFound when there is none.
	ADEProfile(ctx context.Context, id string) (ProfileDefinition, error)
	// SetADEProfileUUID records the UUID Apple gave the profile under the
	// token, replacing an earlier one; storage.ErrNotFound when the
	// profile or the token is unknown. Idempotent.
	SetADEProfileUUID(ctx context.Context, profileID, tokenID, uuid string, at time.Time) error
}

// Match says which devices an AssignmentRule applies to: exactly one of
// its fields is set.
type Match struct {
	// Default matches every device.
	Default bool `json:"default,omitempty"`
	// Family matches Apple's device_family ("iPad", "Mac" …), ignoring case.
	Family string `json:"family,omitempty"`
	// Model matches Apple's model ("iPad Pro 11\"" …), ignoring case.
	Model string `json:"model,omitempty"`
	// Serials matches these serial numbers.
	Serials []string `json:"serials,omitempty"`
}

// AssignmentRule assigns a profile to the devices it matches. Rules are
// ordered: the first that matches a device decides its profile.
type AssignmentRule struct {
	ProfileID string `json:"profile_id"`
	Match     Match  `json:"match"`
}

func (m Match) matches(d DeviceRecord) bool {
	switch {
	case m.Default:
		return true
	case m.Family != "":
		return strings.EqualFold(m.Family, d.DeviceFamily)
	case m.Model != "":
		return strings.EqualFold(m.Model, d.Model)
	}
	return slices.Contains(m.Serials, d.SerialNumber)
}

// Assignment is the outcome of assigning a profile to one device.
type Assignment struct {
	SerialNumber string
	ProfileID    string
	ProfileUUID  string
	// Result is Apple's SUCCESS, NOT_ACCESSIBLE, FAILED or THROTTLED.
	Result string
	At     time.Time
}

// AssignmentStore keeps the assignment rules and what came of them.
type AssignmentStore interface {
	// SetAssignmentRules replaces the rules, in order; storage.ErrNotFound
	// when one names an unknown profile (nothing changes then).
	// Idempotent.
	SetAssignmentRules(ctx context.Context, rules []AssignmentRule) error
	// AssignmentRules returns the rules in order; none: nil, nil.
	AssignmentRules(ctx context.Context) ([]AssignmentRule, error)
	// RecordAssignments records each device's outcome on its record under
	// the token (DeviceRecord.Assign*); a SUCCESS also sets the device's
	// profile UUID and status ("assigned") as Apple's next sync will
	// report them. Devices bramley has no record of are skipped.
	// Idempotent.
	RecordAssignments(ctx context.Context, tokenID string, results []Assignment) error
}

// ErrInvalidRules: assignment rules that cannot be applied as given.
var ErrInvalidRules = errors.New("invalid ADE assignment rules")

// ErrProfilesNotConfigured: the service was made without WithProfiles.
var ErrProfilesNotConfigured = errors.New("ADE profiles are not configured")

// assignBatch is how many serial numbers go in one /profile/devices call.
const assignBatch = 1000

// WithProfiles keeps profile definitions and assignment rules in the
// stores; enrollURL is the url of a profile defined without one
// (bramley's PUBLIC_URL/ade/enroll).
func WithProfiles(profiles ProfileStore, rules AssignmentStore, enrollURL string) ServiceOption {
	return func(s *Service) { s.profiles, s.rules, s.enrollURL = profiles, rules, enrollURL }
}

// CreateProfile checks p as Apple would and stores it under name (the
// profile name when empty). A profile without url enrolls at bramley.
// What Apple would refuse is an error wrapping ErrInvalidProfile that
// names every problem; nothing is stored then.
func (s *Service) CreateProfile(ctx context.Context, name string, p Profile) (ProfileDefinition, error) {
	if s.profiles == nil {
		return ProfileDefinition{}, ErrProfilesNotConfigured
	}
	if p.URL == "" {
		p.URL = s.enrollURL
	}
	p.ProfileUUID = ""
	var errs []error
	if len(p.Devices) > 0 {
		errs = append(errs, fmt.Errorf("%w: devices: assign profiles with assignment rules", ErrInvalidProfile))
	}
	if err := p.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return ProfileDefinition{}, err
	}
	if name = strings.TrimSpace(name); name == "" {
		name = p.ProfileName
	}
	now := s.now().UTC()
	def := ProfileDefinition{ID: rand.Text(), Name: name, Profile: p, CreatedAt: now, UpdatedAt: now}
	if err := s.profiles.CreateADEProfile(ctx, def); err != nil {
		return ProfileDefinition{}, fmt.Errorf("storing ADE profile: %w", err)
	}
	s.logger.Info("ADE profile created", "profile_id", def.ID, "name", name)
	return def, nil
}

// Profiles lists the profile definitions.
func (s *Service) Profiles(ctx context.Context) ([]ProfileDefinition, error) {
	if s.profiles == nil {
		return nil, ErrProfilesNotConfigured
	}
	return s.profiles.ADEProfiles(ctx)
}

// Profile returns one profile definition; storage.ErrNotFound when unknown.
func (s *Service) Profile(ctx context.Context, id string) (ProfileDefinition, error) {
	if s.profiles == nil {
		return ProfileDefinition{}, ErrProfilesNotConfigured
	}
	return s.profiles.ADEProfile(ctx, id)
}

// SetAssignmentRules checks and replaces the assignment rules. Rules that
// are malformed or name unknown profiles wrap ErrInvalidRules, with every
// problem named.
func (s *Service) SetAssignmentRules(ctx context.Context, rules []AssignmentRule) error {
	if s.rules == nil {
		return ErrProfilesNotConfigured
	}
	var errs []error
	bad := func(i int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: rule %d: %s", ErrInvalidRules, i, fmt.Sprintf(format, args...)))
	}
	for i, r := range rules {
		m := r.Match
		set := 0
		for _, b := range []bool{m.Default, m.Family != "", m.Model != "", len(m.Serials) > 0} {
			if b {
				set++
			}
		}
		if set != 1 {
			bad(i, "match needs exactly one of default, family, model, serials")
		}
		if slices.Contains(m.Serials, "") {
			bad(i, "an empty serial number")
		}
		if r.ProfileID == "" {
			bad(i, "profile_id is required")
		} else if _, err := s.profiles.ADEProfile(ctx, r.ProfileID); err != nil {
			bad(i, "profile %q: %v", r.ProfileID, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := s.rules.SetAssignmentRules(ctx, rules); err != nil {
		return fmt.Errorf("storing ADE assignment rules: %w", err)
	}
	return nil
}

// AssignmentRules returns the assignment rules in order.
func (s *Service) AssignmentRules(ctx context.Context) ([]AssignmentRule, error) {
	if s.rules == nil {
		return nil, ErrProfilesNotConfigured
	}
	return s.rules.AssignmentRules(ctx)
}

// AssignSummary tells what one Assign did.
type AssignSummary struct {
	// Results counts the devices by Apple's answer (SUCCESS …).
	Results map[string]int `json:"results"`
	// Defined lists the profiles defined at Apple for the token this time.
	Defined []string `json:"defined,omitempty"`
	// RetryAfter: Apple throttled assignments; the rest waits this long.
	RetryAfter time.Duration `json:"-"`
}

// unassigned: Apple holds no profile for the device.
func unassigned(d DeviceRecord) bool {
	return d.ProfileUUID == "" || d.ProfileStatus == "empty" || d.ProfileStatus == "removed"
}

// Assign applies the assignment rules to the token's devices: to those
// without a profile, or with all to every device not already holding the
// profile its rule gives. A profile is defined at Apple under the token
// the first time it is needed there. Each device's outcome is recorded.
// Apple throttling stops the run with RetryAfter set; storage.ErrNotFound
// for an unknown token.
func (s *Service) Assign(ctx context.Context, tokenID string, all bool) (AssignSummary, error) {
	sum := AssignSummary{Results: map[string]int{}}
	if s.rules == nil {
		return sum, nil
	}
	client, err := s.client(ctx, tokenID)
	if err != nil {
		return sum, err
	}
	rules, err := s.rules.AssignmentRules(ctx)
	if err != nil || len(rules) == 0 {
		return sum, err
	}
	devices, err := s.devices.ADEDevices(ctx, tokenID)
	if err != nil {
		return sum, err
	}
	var order []string
	byProfile := map[string][]DeviceRecord{}
	for _, d := range devices {
		if d.Deleted || (!all && !unassigned(d)) {
			continue
		}
		for _, r := range rules {
			if r.Match.matches(d) {
				if _, ok := byProfile[r.ProfileID]; !ok {
					order = append(order, r.ProfileID)
				}
				byProfile[r.ProfileID] = append(byProfile[r.ProfileID], d)
				break
			}
		}
	}
	log := s.logger.With("token_id", tokenID)
	for _, pid := range order {
		uuid, defined, err := s.profileUUID(ctx, client, tokenID, pid)
		if err != nil {
			return sum, err
		}
		if defined {
			sum.Defined = append(sum.Defined, pid)
		}
		var serials []string
		for _, d := range byProfile[pid] {
			if d.ProfileUUID != uuid || unassigned(d) {
				serials = append(serials, d.SerialNumber)
			}
		}
		for batch := range slices.Chunk(serials, assignBatch) {
			res, err := client.AssignProfile(ctx, uuid, batch)
			if err != nil {
				return sum, fmt.Errorf("assigning ADE profile %s: %w", pid, err)
			}
			now := s.now().UTC()
			out := make([]Assignment, 0, len(batch))
			for _, serial := range batch {
				status := res.Devices[serial]
				if status == "" {
					status = StatusFailed // Apple left it out
				}
				sum.Results[status]++
				out = append(out, Assignment{SerialNumber: serial, ProfileID: pid, ProfileUUID: uuid, Result: status, At: now})
			}
			if err := s.rules.RecordAssignments(ctx, tokenID, out); err != nil {
				return sum, fmt.Errorf("recording ADE assignments: %w", err)
			}
			log.Info("ADE profile assigned", "profile_id", pid, "profile_uuid", uuid, "devices", len(batch),
				"failed", len(res.Failed()))
			if res.RetryAfter > 0 {
				sum.RetryAfter = res.RetryAfter
				log.Warn("ADE throttled profile assignments", "retry_after", res.RetryAfter)
				return sum, nil
			}
		}
	}
	return sum, nil
}

// assignNew applies the rules to the token's new and unassigned devices
// after a sync; Apple's throttling holds the token's periodic runs back.
func (s *Service) assignNew(ctx context.Context, tokenID string) error {
	sum, err := s.Assign(ctx, tokenID, false)
	if sum.RetryAfter > 0 {
		s.wait(tokenID, sum.RetryAfter)
	}
	if err != nil {
		return fmt.Errorf("ADE devices synced, but assigning profiles failed: %w", err)
	}
	return nil
}

// profileUUID returns the UUID of the profile under the token, defining
// it at Apple first when it has none there.
func (s *Service) profileUUID(ctx context.Context, client *Client, tokenID, profileID string) (uuid string, defined bool, err error) {
	def, err := s.profiles.ADEProfile(ctx, profileID)
	if err != nil {
		return "", false, fmt.Errorf("reading ADE profile %s: %w", profileID, err)
	}
	if u := def.ProfileUUIDs[tokenID]; u != "" {
		return u, false, nil
	}
	p := def.Profile
	res, err := client.DefineProfile(ctx, &p)
	if err != nil {
		return "", false, fmt.Errorf("defining ADE profile %s: %w", profileID, err)
	}
	if err := s.profiles.SetADEProfileUUID(ctx, profileID, tokenID, res.ProfileUUID, s.now().UTC()); err != nil {
		return "", false, fmt.Errorf("recording ADE profile UUID: %w", err)
	}
	s.logger.Info("ADE profile defined", "token_id", tokenID, "profile_id", profileID, "profile_uuid", res.ProfileUUID)
	return res.ProfileUUID, true, nil
}
