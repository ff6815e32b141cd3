package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeADEProfiles is ADEProfiles and ADEAssignments in memory; profiles
// are checked with the real ade.Profile.Validate.
type fakeADEProfiles struct {
	profiles  map[string]ade.ProfileDefinition
	rules     []ade.AssignmentRule
	assigned  []string // token IDs Assign was asked for
	assignErr error
}

func (f *fakeADEProfiles) CreateProfile(_ context.Context, name string, p ade.Profile) (ade.ProfileDefinition, error) {
	if p.URL == "" {
		p.URL = "https://mdm.example.com/ade/enroll"
	}
	if err := p.Validate(); err != nil {
		return ade.ProfileDefinition{}, err
	}
	id := fmt.Sprintf("P%d", len(f.profiles)+1)
	def := ade.ProfileDefinition{ID: id, Name: name, Profile: p, ProfileUUIDs: map[string]string{}, CreatedAt: testNow, UpdatedAt: testNow}
	f.profiles[id] = def
	return def, nil
}

func (f *fakeADEProfiles) Profiles(context.Context) ([]ade.ProfileDefinition, error) {
	var out []ade.ProfileDefinition
	for i := 1; i <= len(f.profiles); i++ {
		out = append(out, f.profiles[fmt.Sprintf("P%d", i)])
	}
	return out, nil
}

func (f *fakeADEProfiles) Profile(_ context.Context, id string) (ade.ProfileDefinition, error) {
	p, ok := f.profiles[id]
	if !ok {
		return p, storage.ErrNotFound
	}
	return p, nil
}

func (f *fakeADEProfiles) SetAssignmentRules(_ context.Context, rules []ade.AssignmentRule) error {
	for _, r := range rules {
		if _, ok := f.profiles[r.ProfileID]; !ok {
			return fmt.Errorf("%w: unknown profile %q", ade.ErrInvalidRules, r.ProfileID)
		}
	}
	f.rules = rules
	return nil
}

func (f *fakeADEProfiles) AssignmentRules(context.Context) ([]ade.AssignmentRule, error) {
	return f.rules, nil
}

func (f *fakeADEProfiles) Assign(_ context.Context, tokenID string, all bool) (ade.AssignSummary, error) {
	if tokenID != "T1" {
		return ade.AssignSummary{}, fmt.Errorf("reading token: %w", storage.ErrNotFound)
	}
	if !all {
		return ade.AssignSummary{}, errors.New("the API assigns all")
	}
	f.assigned = append(f.assigned, tokenID)
	if f.assignErr != nil {
		return ade.AssignSummary{}, f.assignErr
	}
	return ade.AssignSummary{Results: map[string]int{"SUCCESS": 2, "NOT_ACCESSIBLE": 1}, Defined: []string{"P1"},
		RetryAfter: 30 * time.Second}, nil
}

func newProfilesEnv(t *testing.T) (*env, *fakeADEProfiles) {
	f := &fakeADEProfiles{profiles: map[string]ade.ProfileDefinition{}}
	return newEnv(t, WithADE(&fakeADE{}, &fakeADE{}), WithADEProfiles(f, f)), f
}

func TestCreateADEProfile(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		status int
		// errs are what a 400's message must name.
		errs []string
	}{
		{"supervised, not removable", `{"name": "Staff", "profile": {"profile_name": "Staff iPads", "is_supervised": true,
			"is_mdm_removable": false, "await_device_configured": true, "skip_setup_items": ["Siri", "TOS"],
			"department": "IT", "support_email_address": "it@example.com"}}`, http.StatusCreated, nil},
		{"not removable needs supervision", `{"profile": {"profile_name": "x", "is_mdm_removable": false}}`,
			http.StatusBadRequest, []string{"is_supervised"}},
		{"every problem named", `{"profile": {"profile_name": "", "url": "http://plain.example.com",
			"skip_setup_items": ["siri"], "support_email_address": "nope"}}`, http.StatusBadRequest,
			[]string{"profile_name is required", "url", `"siri"`, "support_email_address"}},
		{"no profile", `{"name": "x"}`, http.StatusBadRequest, []string{`"profile" is required`}},
		{"unknown field", `{"profile": {"profile_name": "x"}, "extra": 1}`, http.StatusBadRequest, []string{"extra"}},
		{"malformed", `{`, http.StatusBadRequest, []string{"malformed JSON"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, f := newProfilesEnv(t)
			rec := e.serve(request(http.MethodPost, "/api/v1/ade/profiles", mediaJSON, []byte(tt.body)))
			if tt.status != http.StatusCreated {
				msg := wantError(t, rec, tt.status)
				for _, s := range tt.errs {
					if !strings.Contains(msg, s) {
						t.Errorf("error %q does not name %q", msg, s)
					}
				}
				if len(f.profiles) != 0 {
					t.Errorf("a refused profile was stored: %v", f.profiles)
				}
				return
			}
			def := decode[ade.ProfileDefinition](t, rec, http.StatusCreated)
			if rec.Header().Get("Location") != "/api/v1/ade/profiles/"+def.ID || def.Name != "Staff" ||
				!def.Profile.IsSupervised || def.Profile.IsMDMRemovable || !def.Profile.AwaitDeviceConfigured ||
				def.Profile.URL != "https://mdm.example.com/ade/enroll" || len(def.Profile.SkipSetupItems) != 2 {
				t.Errorf("created %+v, Location %q", def, rec.Header().Get("Location"))
			}
			got := decode[ade.ProfileDefinition](t, e.get("/api/v1/ade/profiles/"+def.ID), http.StatusOK)
			if got.ID != def.ID || got.Profile.Department != "IT" {
				t.Errorf("GET /ade/profiles/%s: %+v", def.ID, got)
			}
			list := decode[adeProfileList](t, e.get("/api/v1/ade/profiles"), http.StatusOK)
			if len(list.Profiles) != 1 || list.Profiles[0].ID != def.ID {
				t.Errorf("GET /ade/profiles: %+v", list)
			}
		})
	}
}

func TestADEProfilesEmptyAndMissing(t *testing.T) {
	e, _ := newProfilesEnv(t)
	if rec := e.get("/api/v1/ade/profiles"); rec.Body.String() != "{\"profiles\":[]}\n" {
		t.Errorf("empty list: %s", rec.Body)
	}
	wantError(t, e.get("/api/v1/ade/profiles/nope"), http.StatusNotFound)
	if rec := e.get("/api/v1/ade/assignment-rules"); rec.Body.String() != "{\"rules\":[]}\n" {
		t.Errorf("empty rules: %s", rec.Body)
	}
}

func TestADEAssignmentRules(t *testing.T) {
	e, f := newProfilesEnv(t)
	f.profiles["P1"] = ade.ProfileDefinition{ID: "P1"}
	body := `{"rules": [{"profile_id": "P1", "match": {"serials": ["S1", "S2"]}}, {"profile_id": "P1", "match": {"family": "iPad"}},
		{"profile_id": "P1", "match": {"default": true}}]}`
	rec := e.serve(request(http.MethodPut, "/api/v1/ade/assignment-rules", mediaJSON, []byte(body)))
	got := decode[adeRuleList](t, rec, http.StatusOK)
	if len(got.Rules) != 3 || len(f.rules) != 3 || f.rules[0].Match.Serials[1] != "S2" || f.rules[1].Match.Family != "iPad" || !f.rules[2].Match.Default {
		t.Errorf("stored rules %+v, answered %+v", f.rules, got)
	}
	if got := decode[adeRuleList](t, e.get("/api/v1/ade/assignment-rules"), http.StatusOK); len(got.Rules) != 3 {
		t.Errorf("GET rules: %+v", got)
	}
	rec = e.serve(request(http.MethodPut, "/api/v1/ade/assignment-rules", mediaJSON,
		[]byte(`{"rules": [{"profile_id": "P9", "match": {"default": true}}]}`)))
	if msg := wantError(t, rec, http.StatusBadRequest); !strings.Contains(msg, "P9") {
		t.Errorf("unknown profile: %q", msg)
	}
	if len(f.rules) != 3 {
		t.Errorf("refused rules changed the stored ones: %+v", f.rules)
	}
}

func TestAssignADEToken(t *testing.T) {
	e, f := newProfilesEnv(t)
	rec := e.serve(request(http.MethodPost, "/api/v1/ade/tokens/T1/assign", "", nil))
	got := decode[adeAssignResult](t, rec, http.StatusOK)
	if got.Results["SUCCESS"] != 2 || got.Results["NOT_ACCESSIBLE"] != 1 || len(got.Defined) != 1 || got.RetryAfterSeconds != 30 {
		t.Errorf("assign: %+v", got)
	}
	wantError(t, e.serve(request(http.MethodPost, "/api/v1/ade/tokens/T9/assign", "", nil)), http.StatusNotFound)
	f.assignErr = &ade.Error{Endpoint: "POST /profile", Status: http.StatusForbidden, Code: "T_C_NOT_SIGNED"}
	if msg := wantError(t, e.serve(request(http.MethodPost, "/api/v1/ade/tokens/T1/assign", "", nil)), http.StatusConflict); !strings.Contains(msg, "terms") {
		t.Errorf("terms: %q", msg)
	}
}
