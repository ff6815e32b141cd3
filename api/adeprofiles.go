package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/handler"
)

// ADEProfiles keeps ADE profile definitions; *ade.Service implements it.
type ADEProfiles interface {
	// CreateProfile validates and stores a profile; an error wrapping
	// ade.ErrInvalidProfile names everything Apple would refuse.
	CreateProfile(ctx context.Context, name string, p ade.Profile) (ade.ProfileDefinition, error)
	// Profiles lists the definitions.
	Profiles(ctx context.Context) ([]ade.ProfileDefinition, error)
	// Profile returns one; storage.ErrNotFound when unknown.
	Profile(ctx context.Context, id string) (ade.ProfileDefinition, error)
}

// ADEAssignments applies ADE profiles to devices by rules; *ade.Service
// implements it.
type ADEAssignments interface {
	// SetAssignmentRules replaces the rules; ade.ErrInvalidRules for
	// malformed rules or unknown profiles.
	SetAssignmentRules(ctx context.Context, rules []ade.AssignmentRule) error
	// AssignmentRules returns the rules in order.
	AssignmentRules(ctx context.Context) ([]ade.AssignmentRule, error)
	// Assign applies the rules to the token's devices (all of them when
	// all is true); storage.ErrNotFound for an unknown token.
	Assign(ctx context.Context, tokenID string, all bool) (ade.AssignSummary, error)
}

// WithADEProfiles serves the /ade/profiles and /ade/assignment-rules
// routes and POST /ade/tokens/{id}/assign; without it they answer 503.
func WithADEProfiles(profiles ADEProfiles, assignments ADEAssignments) Option {
	return func(a *API) { a.adeProfiles, a.adeAssignments = profiles, assignments }
}

// adeProfileRequest is the body of POST /ade/profiles.
type adeProfileRequest struct {
	// Name is bramley's name for the profile; profile_name when empty.
	Name    string       `json:"name"`
	Profile *ade.Profile `json:"profile"`
}

// readJSONBody reads a capped JSON body into v, refusing unknown fields.
func (a *API) readJSONBody(w http.ResponseWriter, r *http.Request, v any, want string) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return err
		}
		return handler.Wrap(http.StatusBadRequest, "reading body", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON: %v; want %s", err, want)
	}
	return nil
}

func (a *API) createADEProfile(w http.ResponseWriter, r *http.Request) error {
	if a.adeProfiles == nil {
		return adeNotConfigured()
	}
	var req adeProfileRequest
	if err := a.readJSONBody(w, r, &req, `{"name": …, "profile": {"profile_name": …, …}}`); err != nil {
		return err
	}
	if req.Profile == nil {
		return badRequest(`"profile" is required: the ADE profile JSON (profile_name, is_supervised …)`)
	}
	def, err := a.adeProfiles.CreateProfile(r.Context(), req.Name, *req.Profile)
	if errors.Is(err, ade.ErrInvalidProfile) {
		return handler.Wrap(http.StatusBadRequest, err.Error(), err)
	}
	if err != nil {
		return fmt.Errorf("creating ADE profile: %w", err)
	}
	w.Header().Set("Location", prefix+"/ade/profiles/"+def.ID)
	return writeJSON(w, http.StatusCreated, def)
}

// adeProfileList is the answer of GET /ade/profiles.
type adeProfileList struct {
	Profiles []ade.ProfileDefinition `json:"profiles"`
}

func (a *API) listADEProfiles(w http.ResponseWriter, r *http.Request) error {
	if a.adeProfiles == nil {
		return adeNotConfigured()
	}
	ps, err := a.adeProfiles.Profiles(r.Context())
	if err != nil {
		return fmt.Errorf("listing ADE profiles: %w", err)
	}
	if ps == nil {
		ps = []ade.ProfileDefinition{}
	}
	return writeJSON(w, http.StatusOK, adeProfileList{Profiles: ps})
}

func (a *API) getADEProfile(w http.ResponseWriter, r *http.Request) error {
	if a.adeProfiles == nil {
		return adeNotConfigured()
	}
	id := r.PathValue("id")
	def, err := a.adeProfiles.Profile(r.Context(), id)
	if err != nil {
		return lookupError(err, "ADE profile", id)
	}
	return writeJSON(w, http.StatusOK, def)
}

// adeRuleList is the body and answer of /ade/assignment-rules.
type adeRuleList struct {
	Rules []ade.AssignmentRule `json:"rules"`
}

func (a *API) putADEAssignmentRules(w http.ResponseWriter, r *http.Request) error {
	if a.adeAssignments == nil {
		return adeNotConfigured()
	}
	var req adeRuleList
	if err := a.readJSONBody(w, r, &req, `{"rules": [{"profile_id": …, "match": {"default": true}}, …]}`); err != nil {
		return err
	}
	err := a.adeAssignments.SetAssignmentRules(r.Context(), req.Rules)
	if errors.Is(err, ade.ErrInvalidRules) {
		return handler.Wrap(http.StatusBadRequest, err.Error(), err)
	}
	if err != nil {
		return fmt.Errorf("setting ADE assignment rules: %w", err)
	}
	if req.Rules == nil {
		req.Rules = []ade.AssignmentRule{}
	}
	return writeJSON(w, http.StatusOK, req)
}

func (a *API) getADEAssignmentRules(w http.ResponseWriter, r *http.Request) error {
	if a.adeAssignments == nil {
		return adeNotConfigured()
	}
	rules, err := a.adeAssignments.AssignmentRules(r.Context())
	if err != nil {
		return fmt.Errorf("reading ADE assignment rules: %w", err)
	}
	if rules == nil {
		rules = []ade.AssignmentRule{}
	}
	return writeJSON(w, http.StatusOK, adeRuleList{Rules: rules})
}

// adeAssignResult is the answer of POST /ade/tokens/{id}/assign.
type adeAssignResult struct {
	// Results counts the devices by Apple's answer.
	Results map[string]int `json:"results"`
	// Defined lists the profiles newly defined at Apple for the token.
	Defined []string `json:"defined"`
	// RetryAfterSeconds: Apple throttled; the rest waits this long.
	RetryAfterSeconds int `json:"retry_after_seconds,omitempty"`
}

// assignADEToken applies the rules to every device of the token.
func (a *API) assignADEToken(w http.ResponseWriter, r *http.Request) error {
	if a.adeAssignments == nil {
		return adeNotConfigured()
	}
	id := r.PathValue("id")
	sum, err := a.adeAssignments.Assign(r.Context(), id, true)
	if err != nil {
		return syncError(err, id)
	}
	out := adeAssignResult{Results: sum.Results, Defined: sum.Defined, RetryAfterSeconds: int(sum.RetryAfter.Seconds())}
	if out.Results == nil {
		out.Results = map[string]int{}
	}
	if out.Defined == nil {
		out.Defined = []string{}
	}
	return writeJSON(w, http.StatusOK, out)
}
