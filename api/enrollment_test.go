package api

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
)

type fakeTokens struct{ got []enroll.TokenRequest }

func (f *fakeTokens) CreateToken(_ context.Context, req enroll.TokenRequest) (*enroll.NewToken, error) {
	if req.ExpiresIn > 1000*time.Hour {
		return nil, handler.Errorf(http.StatusBadRequest, "expires_in too long")
	}
	f.got = append(f.got, req)
	return &enroll.NewToken{
		Token:  enroll.Token{ID: "tok1", Label: req.Label, MaxUses: max(req.MaxUses, 1), ExpiresAt: testNow.Add(req.ExpiresIn)},
		Secret: "s3cret", URL: "https://mdm.example.com/enroll?token=s3cret",
	}, nil
}

func TestCreateEnrollmentToken(t *testing.T) {
	tokens := &fakeTokens{}
	e := newEnv(t, WithEnrollment(tokens))
	for _, tc := range []struct {
		name, body string
		status     int
		want       enroll.TokenRequest
	}{
		{"defaults", ``, http.StatusCreated, enroll.TokenRequest{}},
		{"duration", `{"expires_in":"24h","max_uses":10,"label":"sales"}`, http.StatusCreated,
			enroll.TokenRequest{ExpiresIn: 24 * time.Hour, MaxUses: 10, Label: "sales"}},
		{"seconds", `{"expires_in":3600}`, http.StatusCreated, enroll.TokenRequest{ExpiresIn: time.Hour}},
		{"bad duration", `{"expires_in":"soon"}`, http.StatusBadRequest, enroll.TokenRequest{}},
		{"zero duration", `{"expires_in":"0s"}`, http.StatusBadRequest, enroll.TokenRequest{}},
		{"negative uses", `{"max_uses":-1}`, http.StatusBadRequest, enroll.TokenRequest{}},
		{"unknown field", `{"uses":3}`, http.StatusBadRequest, enroll.TokenRequest{}},
		{"service refuses", `{"expires_in":"2000h"}`, http.StatusBadRequest, enroll.TokenRequest{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(tokens.got)
			rec := e.serve(request(http.MethodPost, "/api/v1/enrollment-tokens", mediaJSON, []byte(tc.body)))
			if tc.status != http.StatusCreated {
				decode[errorBody](t, rec, tc.status)
				if len(tokens.got) != before {
					t.Fatal("a refused request minted a token")
				}
				return
			}
			got := decode[tokenResponse](t, rec, http.StatusCreated)
			if got.Token != "s3cret" || got.URL == "" || got.ID != "tok1" {
				t.Fatalf("answer = %+v", got)
			}
			if req := tokens.got[len(tokens.got)-1]; req != tc.want {
				t.Fatalf("request = %+v, want %+v", req, tc.want)
			}
		})
	}
	if rec := e.serve(request(http.MethodPost, "/api/v1/enrollment-tokens", "text/plain", []byte("x"))); rec.Code != http.StatusUnsupportedMediaType {
		t.Fatalf("text body: %d", rec.Code)
	}
	unconfigured := newEnv(t)
	if rec := unconfigured.serve(request(http.MethodPost, "/api/v1/enrollment-tokens", mediaJSON, nil)); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("without enrollment: %d", rec.Code)
	}
}
