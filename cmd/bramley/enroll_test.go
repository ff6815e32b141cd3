package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/scep"
)

// fakeTokenStore keeps enrollment tokens in memory.
type fakeTokenStore struct {
	mu     sync.Mutex
	tokens []enroll.Token
}

func (s *fakeTokenStore) CreateEnrollmentToken(_ context.Context, t enroll.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = append(s.tokens, t)
	return nil
}

func (s *fakeTokenStore) UseEnrollmentToken(context.Context, []byte, time.Time) (*enroll.Token, error) {
	return nil, errors.New("not used by these tests")
}

func (s *fakeTokenStore) CreateChallenge(context.Context, []byte, scep.Challenge, time.Time) error {
	return errors.New("not used by these tests")
}

func (s *fakeTokenStore) last(t *testing.T) enroll.Token {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tokens) == 0 {
		t.Fatal("no token was stored")
	}
	return s.tokens[len(s.tokens)-1]
}

// fakeKeys knows one API key.
type fakeKeys struct{ hash []byte }

func (k fakeKeys) APIKeyExists(_ context.Context, hash []byte) (bool, error) {
	return string(hash) == string(k.hash), nil
}

func (fakeKeys) CreateAPIKey(context.Context, []byte, string, time.Time) error { return nil }

// enrollAPI runs the real admin API, minting tokens with the real
// enrollment service over an in-memory store.
func enrollAPI(t *testing.T) (map[string]string, *fakeTokenStore) {
	t.Helper()
	store := &fakeTokenStore{}
	tokens := enroll.New(store, nil, nil, nil, enroll.Config{PublicURL: "https://mdm.example.com"})
	a := api.New(nil, nil, fakeKeys{api.HashKey(testAPIKey)}, nil, api.WithEnrollment(tokens))
	return fakeAPI(t, a.Handler()), store
}

func TestEnrollTokenCreate(t *testing.T) {
	env, store := enrollAPI(t)
	out, err := bramley(t, envOf(env), "enroll", "token", "create", "--expires-in", "24h", "--max-uses", "5", "--label", "Sales iPads")
	if err != nil {
		t.Fatal(err)
	}
	tok := store.last(t)
	if tok.MaxUses != 5 || tok.Label != "Sales iPads" {
		t.Errorf("stored token: max uses %d, label %q", tok.MaxUses, tok.Label)
	}
	if d := time.Until(tok.ExpiresAt); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("token expires in %v, want 24h", d)
	}
	for _, want := range []string{"https://mdm.example.com/enroll?token=", "Token:", "ID:", tok.ID, "Sales iPads", "Max uses:  5"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestEnrollTokenCreateDefaultsAndJSON(t *testing.T) {
	env, store := enrollAPI(t)
	out, err := bramley(t, envOf(env), "enroll", "token", "create", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var answer map[string]any
	if err := json.Unmarshal([]byte(out), &answer); err != nil {
		t.Fatalf("--json printed no JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"id", "token", "url", "expires_at", "max_uses"} {
		if _, ok := answer[k]; !ok {
			t.Errorf("answer lacks %q: %s", k, out)
		}
	}
	if url, _ := answer["url"].(string); !strings.HasSuffix(url, "token="+answer["token"].(string)) {
		t.Errorf("url %q does not carry the token", url)
	}
	// Nothing asked for: the server's defaults.
	tok := store.last(t)
	if d := time.Until(tok.ExpiresAt); tok.MaxUses != 1 || d < 6*24*time.Hour {
		t.Errorf("default token: max uses %d, expires in %v", tok.MaxUses, d)
	}
}

func TestEnrollTokenCreateRefused(t *testing.T) {
	env, _ := enrollAPI(t)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"too short", nil, []string{"--expires-in", "10s"}, []string{"expires_in must be between 1m", "(HTTP 400)"}},
		{"negative", nil, []string{"--max-uses", "-1"}, []string{"--max-uses must be positive"}},
		{"wrong key", map[string]string{"BRAMLEY_API_KEY": "bramley_wrong-key-0123456789"}, nil, []string{"invalid API key (HTTP 401)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range env {
				e[k] = v
			}
			for k, v := range tt.env {
				e[k] = v
			}
			_, err := bramley(t, envOf(e), append([]string{"enroll", "token", "create"}, tt.args...)...)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v, want it to mention %q", err, want)
				}
			}
		})
	}
}
