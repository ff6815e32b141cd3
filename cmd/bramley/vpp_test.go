package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/vpp"
)

// fakeVPP keeps imported tokens; the location is held by another server
// until an import forces it.
type fakeVPP struct {
	api.VPP
	tokens []vpp.TokenRecord
	got    []byte
}

func (f *fakeVPP) ImportToken(_ context.Context, data []byte, force bool) (vpp.TokenRecord, error) {
	if !force {
		return vpp.TokenRecord{}, &vpp.ClaimError{Holder: vpp.MDMInfo{ID: "other", Name: "OtherMDM"}}
	}
	f.got = data
	rec := vpp.TokenRecord{Location: "LOC-1", LocationName: "Main Street", OrgName: "Example School",
		ExpiresAt: time.Now().Add(10 * 24 * time.Hour), Claimed: true}
	f.tokens = []vpp.TokenRecord{rec}
	return rec, nil
}

func (f *fakeVPP) Tokens(context.Context) ([]vpp.TokenRecord, error) { return f.tokens, nil }

func TestVPPToken(t *testing.T) {
	fake := &fakeVPP{}
	a := api.New(nil, nil, fakeKeys{api.HashKey(testAPIKey)}, nil, api.WithVPP(fake))
	env := envOf(fakeAPI(t, a.Handler()))
	file := filepath.Join(t.TempDir(), "main.vpptoken")
	if err := os.WriteFile(file, []byte("dG9rZW4="), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err := bramley(t, env, "vpp", "token", "list")
	if err != nil || !strings.Contains(out, "No content token") {
		t.Fatalf("empty list: %q, %v", out, err)
	}
	if _, err := bramley(t, env, "vpp", "token", "import", file); err == nil || !strings.Contains(err.Error(), "OtherMDM") || !strings.Contains(err.Error(), "(HTTP 409)") {
		t.Fatalf("import into a claimed location: %v", err)
	}
	out, err = bramley(t, env, "vpp", "token", "import", file, "--force")
	if err != nil || !strings.Contains(out, "location LOC-1") || string(fake.got) != "dG9rZW4=" {
		t.Fatalf("forced import: %q, %v, sent %q", out, err, fake.got)
	}
	out, err = bramley(t, env, "vpp", "token", "list")
	if err != nil || !strings.Contains(out, "LOC-1") || !strings.Contains(out, "renew now") {
		t.Fatalf("list: %q, %v", out, err)
	}
	if _, err := bramley(t, env, "vpp", "token", "import", filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("import of a missing file succeeded")
	}
}
