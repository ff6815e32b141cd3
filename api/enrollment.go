package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
)

// EnrollmentTokens mints enrollment tokens.
type EnrollmentTokens interface {
	CreateToken(ctx context.Context, req enroll.TokenRequest) (*enroll.NewToken, error)
}

// WithEnrollment serves /enrollment-tokens with tokens.
func WithEnrollment(tokens EnrollmentTokens) Option { return func(a *API) { a.tokens = tokens } }

type tokenRequest struct {
	ExpiresIn json.RawMessage `json:"expires_in"`
	MaxUses   int             `json:"max_uses"`
	Label     string          `json:"label"`
}

type tokenResponse struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	URL       string    `json:"url"`
	Label     string    `json:"label,omitempty"`
	MaxUses   int       `json:"max_uses"`
	ExpiresAt time.Time `json:"expires_at"`
}

// createEnrollmentToken mints a token; its secret is in this answer only.
func (a *API) createEnrollmentToken(w http.ResponseWriter, r *http.Request) error {
	if a.tokens == nil {
		return handler.Errorf(http.StatusServiceUnavailable, "enrollment is not configured")
	}
	if media, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); r.ContentLength != 0 && (err != nil || media != mediaJSON) {
		return handler.Errorf(http.StatusUnsupportedMediaType, "send application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		return err
	}
	var req tokenRequest
	if len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return badRequest("malformed JSON: %v", err)
		}
	}
	var expiresIn time.Duration
	if len(req.ExpiresIn) > 0 && string(req.ExpiresIn) != "null" {
		if expiresIn, err = jsonTTL(req.ExpiresIn); err != nil {
			return badRequest(`expires_in must be a duration like "24h" or a whole number of seconds`)
		}
		if expiresIn == 0 {
			return badRequest("expires_in must be positive")
		}
	}
	if req.MaxUses < 0 {
		return badRequest("max_uses must be positive")
	}
	tok, err := a.tokens.CreateToken(r.Context(), enroll.TokenRequest{Label: req.Label, ExpiresIn: expiresIn, MaxUses: req.MaxUses})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, tokenResponse{
		ID: tok.ID, Token: tok.Secret, URL: tok.URL, Label: tok.Label, MaxUses: tok.MaxUses, ExpiresAt: tok.ExpiresAt,
	})
}
