package enroll_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
)

func TestMinOSBuild(t *testing.T) {
	policy, err := enroll.MinOSBuild(map[string]string{"iPhone": "21A329", "Mac": "23A344"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name             string
		product, version string
		allowed          bool
	}{
		{"same build", "iPhone14,5", "21A329", true},
		{"later number in the train", "iPhone14,5", "21A350", true},
		{"later train", "iPhone14,5", "21F90", true},
		{"later major", "iPhone14,5", "22A3354", true},
		{"numbers compare as numbers", "iPhone14,5", "21A1000", true},
		{"older major", "iPhone14,5", "20H19", false},
		{"older number", "iPhone14,5", "21A328", false},
		{"beta suffix ignored", "iPhone14,5", "21A5248v", true},
		{"no version", "iPhone14,5", "", false},
		{"dotted version is not a build", "iPhone14,5", "17.0", false},
		{"Mac model family", "MacBookPro18,1", "22G120", false},
		{"Mac new", "Mac14,2", "23B81", true},
		{"iMac", "iMac21,1", "24A335", true},
		{"platform without a minimum", "iPad13,1", "19A346", true},
		{"unknown product", "Watch6,1", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := policy(context.Background(), "alice", enroll.OTAAttributes{Product: tt.product, Version: tt.version})
			if tt.allowed != (err == nil) {
				t.Fatalf("policy(%s, %s) = %v, allowed %v", tt.product, tt.version, err, tt.allowed)
			}
			if status, _ := handler.Status(err); err != nil && status != http.StatusForbidden {
				t.Fatalf("status %d, want 403", status)
			}
		})
	}
}

func TestParseMinOS(t *testing.T) {
	tests := []struct {
		name    string
		entries []string
		ok      bool
	}{
		{"builds", []string{"iPhone=21A329", "iPad=21A329", "Mac=23A344"}, true},
		{"none", nil, true},
		{"marketing version", []string{"iPhone=17.0"}, false},
		{"unknown platform", []string{"Watch=21A329"}, false},
		{"model, not platform", []string{"iPhone14,5=21A329"}, false},
		{"no equals", []string{"iPhone"}, false},
		{"twice", []string{"iPhone=21A329", "iPhone=22A3354"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := enroll.ParseMinOS(tt.entries); (err == nil) != tt.ok {
				t.Fatalf("ParseMinOS(%q) = %v", tt.entries, err)
			}
		})
	}
}

func TestAllOf(t *testing.T) {
	deny := enroll.DenyList([]string{"BAD"})
	min, err := enroll.MinOSBuild(map[string]string{"iPhone": "21A329"})
	if err != nil {
		t.Fatal(err)
	}
	p := enroll.AllOf(deny, min)
	ctx := context.Background()
	if err := p(ctx, "a", enroll.OTAAttributes{Serial: "OK", Product: "iPhone14,5", Version: "21F90"}); err != nil {
		t.Errorf("allowed device refused: %v", err)
	}
	if err := p(ctx, "a", enroll.OTAAttributes{Serial: "BAD", Product: "iPhone14,5", Version: "21F90"}); err == nil {
		t.Error("denied serial let in")
	}
	if err := p(ctx, "a", enroll.OTAAttributes{Serial: "OK", Product: "iPhone14,5", Version: "20H19"}); err == nil {
		t.Error("old OS let in")
	}
}
