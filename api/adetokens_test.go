package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/ade"
)

func (f *fakeADE) RotateCertificate(ctx context.Context, _ bool) ([]byte, error) {
	return f.CertificatePEM(ctx)
}

// rotatingADE is fakeADE with tokens of its own and a rotation that
// records force and fails with err.
type rotatingADE struct {
	*fakeADE
	tokens  []ade.Token
	err     error
	rotated int
	force   bool
}

func (f *rotatingADE) Tokens(context.Context) ([]ade.Token, error) { return f.tokens, nil }

func (f *rotatingADE) RotateCertificate(_ context.Context, force bool) ([]byte, error) {
	f.rotated++
	f.force = force
	if f.err != nil {
		return nil, f.err
	}
	return []byte("-----BEGIN CERTIFICATE-----\nNEW\n-----END CERTIFICATE-----\n"), nil
}

func TestADETokensExpiry(t *testing.T) {
	f := &rotatingADE{fakeADE: &fakeADE{}, tokens: []ade.Token{
		{ID: "YEAR", AccessTokenExpiry: testNow.AddDate(1, 0, 0)},
		{ID: "MONTH", AccessTokenExpiry: testNow.Add(31*24*time.Hour + time.Hour)},
		{ID: "WEEK", AccessTokenExpiry: testNow.Add(7*24*time.Hour + time.Hour)},
		{ID: "GONE", AccessTokenExpiry: testNow.Add(-2 * 24 * time.Hour)},
	}}
	e := newEnv(t, WithADE(f, f))
	got := decode[struct {
		Tokens []struct {
			ID       string `json:"id"`
			DaysLeft int    `json:"days_left"`
			Expiring bool   `json:"expiring"`
		} `json:"tokens"`
	}](t, e.get("/api/v1/ade/tokens"), http.StatusOK)
	want := map[string]struct {
		days     int
		expiring bool
	}{"YEAR": {365, false}, "MONTH": {31, false}, "WEEK": {7, true}, "GONE": {-2, true}}
	if len(got.Tokens) != len(want) {
		t.Fatalf("tokens %+v", got.Tokens)
	}
	for _, tok := range got.Tokens {
		if w := want[tok.ID]; tok.DaysLeft != w.days || tok.Expiring != w.expiring {
			t.Errorf("%s: days_left %d expiring %v, want %d %v", tok.ID, tok.DaysLeft, tok.Expiring, w.days, w.expiring)
		}
	}
}

func TestADECertificateRotate(t *testing.T) {
	tests := []struct {
		name      string
		query     string
		err       error
		status    int
		wantForce bool
		want      string // in the error message
	}{
		{name: "rotated", status: http.StatusOK},
		{name: "forced", query: "?force=true", status: http.StatusOK, wantForce: true},
		{name: "bad force", query: "?force=maybe", status: http.StatusBadRequest, want: "force"},
		{name: "in use", err: fmt.Errorf("%w (tokens not uploaded again yet: T1)", ade.ErrPreviousCertificateInUse),
			status: http.StatusConflict, want: "T1"},
		{name: "internal", err: fmt.Errorf("storing settings: disk on fire"), status: http.StatusInternalServerError, want: "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &rotatingADE{fakeADE: &fakeADE{}, err: tt.err}
			e := newEnv(t, WithADE(f, f))
			rec := e.serve(request(http.MethodPost, "/api/v1/ade/certificate/rotate"+tt.query, "", nil))
			if tt.status != http.StatusOK {
				if msg := wantError(t, rec, tt.status); !strings.Contains(msg, tt.want) || strings.Contains(msg, "disk on fire") {
					t.Errorf("error %q, want it to contain %q", msg, tt.want)
				}
				return
			}
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/x-pem-file" ||
				!strings.Contains(rec.Body.String(), "NEW") || f.rotated != 1 || f.force != tt.wantForce {
				t.Fatalf("answer %d %q: %s (rotated %d, force %v)", rec.Code, rec.Header().Get("Content-Type"), rec.Body, f.rotated, f.force)
			}
		})
	}
	if rec := newEnv(t, WithADE(&fakeADE{}, &fakeADE{})).get("/api/v1/ade/certificate/rotate"); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET rotate: %d", rec.Code)
	}
}
