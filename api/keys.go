package api

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/bramley-mdm/bramley/handler"
)

// keyPrefix marks bramley API keys, so that secret scanners and people can
// tell one apart from other tokens.
const keyPrefix = "bramley_"

// maxKeyLength bounds what is hashed; keys NewKey makes are 51 bytes, and
// keys set by an operator have no reason to be near this.
const maxKeyLength = 512

// NewKey returns a new random API key: "bramley_" and 32 random bytes,
// base64url-encoded.
func NewKey() string {
	var b [32]byte
	// crypto/rand.Read never returns an error: it aborts the program
	// rather than hand out weak bytes.
	_, _ = rand.Read(b[:])
	return keyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// HashKey returns the SHA-256 of an API key, the form KeyStore keeps. Keys
// are only ever compared as hashes, so a lookup's timing says nothing useful
// about the key, and a database leak does not leak keys.
func HashKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// authenticate lets the request through to next only with a known key.
// Administrators, not devices, call this API, so 401 is the right answer.
func (a *API) authenticate(next handler.Func) handler.Func {
	return func(w http.ResponseWriter, r *http.Request) error {
		key, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", "Bearer")
			return handler.Errorf(http.StatusUnauthorized, "missing API key: send Authorization: Bearer <key>")
		}
		known, err := a.keys.APIKeyExists(r.Context(), HashKey(key))
		if err != nil {
			return fmt.Errorf("looking up API key: %w", err)
		}
		if !known {
			w.Header().Set("WWW-Authenticate", "Bearer")
			return handler.Errorf(http.StatusUnauthorized, "invalid API key")
		}
		return next(w, r)
	}
}

// bearer returns the token of an Authorization header of the Bearer scheme,
// whose name is case-insensitive (RFC 9110 section 11.1).
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	if token == "" || len(token) > maxKeyLength {
		return "", false
	}
	return token, true
}
