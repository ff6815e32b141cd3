package ade

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// Sentinels for what callers branch on. An *Error from Apple matches one
// of them with errors.Is when its status and code say so.
var (
	// ErrExpiredCursor: a /devices/sync cursor older than seven days.
	// Fetch everything again from an empty cursor.
	ErrExpiredCursor = errors.New("ADE cursor expired")
	// ErrInvalidCursor: Apple does not know the cursor. Fetch again from
	// an empty cursor.
	ErrInvalidCursor = errors.New("ADE cursor invalid")
	// ErrExhaustedCursor: a fetch cursor that has already returned every
	// device; only /server/devices answers it. Continue with /devices/sync.
	ErrExhaustedCursor = errors.New("ADE cursor exhausted")
	// ErrTermsNotSigned: Apple's T_C_NOT_SIGNED. Nothing works until an
	// administrator of the organization signs in and accepts the terms.
	ErrTermsNotSigned = errors.New("Apple requires the organization to accept the new terms in Apple Business Manager (or Apple School Manager): sign in there and accept them")
	// ErrFlagsInvalid: Apple's FLAGS_INVALID, or the same check made
	// before sending: is_mdm_removable=false needs is_supervised=true.
	ErrFlagsInvalid = errors.New("ADE profile flags invalid: is_mdm_removable may be false only when is_supervised is true")
	// ErrAccessDenied: Apple's ACCESS_DENIED, the token lacks permission.
	ErrAccessDenied = errors.New("Apple denied access to the ADE service for this server token")
	// ErrUnauthorized: Apple refused the server token itself, or a new
	// session was refused too: the token expired or was revoked, or this
	// machine's clock is off (the OAuth timestamp).
	ErrUnauthorized = errors.New("Apple refused the ADE server token: download a new token from Apple Business Manager, and check the server's clock")
	// ErrNotFound: Apple's 404 NOT_FOUND (an unknown profile UUID).
	ErrNotFound = errors.New("not found in the ADE service")
	// ErrRateLimited: 429, still so after the retries Retry-After allowed.
	ErrRateLimited = errors.New("Apple's ADE service is throttling requests")
	// ErrUnavailable: 503 or another 5xx, still so after retries.
	ErrUnavailable = errors.New("Apple's ADE service is unavailable")
	// ErrInvalidProfile: a profile that fails Validate, or that Apple
	// refused with one of its CONFIG_* or *_INVALID codes.
	ErrInvalidProfile = errors.New("invalid ADE profile")
)

// Error is a failed answer from Apple's ADE service. Apple puts a bare code
// such as EXPIRED_CURSOR in the body; the DEP simulators quote it as a JSON
// string; a few answers are JSON objects.
type Error struct {
	// Endpoint is the request, as "POST /devices/sync".
	Endpoint string
	// Status is the HTTP status code.
	Status int
	// Code is Apple's error code, e.g. "EXPIRED_CURSOR"; empty when the
	// body held none.
	Code string
	// Message is the rest of the body when it was not a bare code,
	// trimmed to a few hundred bytes.
	Message string
	// RetryAfter is how long Apple asked the client to wait (429, 503).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ADE %s: %d", e.Endpoint, e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if s := sentinels(e.Status, e.Code); len(s) > 0 {
		b.WriteString(" (" + s[0].Error() + ")")
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Unwrap returns the sentinels for the error's status and code, if any.
func (e *Error) Unwrap() []error { return sentinels(e.Status, e.Code) }

func sentinels(status int, code string) []error {
	if s := sentinel(status, code); s != nil {
		if s == ErrFlagsInvalid {
			return []error{ErrFlagsInvalid, ErrInvalidProfile}
		}
		return []error{s}
	}
	return nil
}

func sentinel(status int, code string) error {
	switch code {
	case "EXPIRED_CURSOR":
		return ErrExpiredCursor
	case "INVALID_CURSOR":
		return ErrInvalidCursor
	case "EXHAUSTED_CURSOR":
		return ErrExhaustedCursor
	case "T_C_NOT_SIGNED":
		return ErrTermsNotSigned
	case "FLAGS_INVALID":
		return ErrFlagsInvalid
	case "ACCESS_DENIED":
		return ErrAccessDenied
	case "CONFIG_URL_REQUIRED", "CONFIG_NAME_REQUIRED", "CONFIG_URL_INVALID", "CONFIG_NAME_INVALID",
		"DEPARTMENT_INVALID", "SUPPORT_PHONE_INVALID", "SUPPORT_EMAIL_INVALID", "MAGIC_INVALID", "LOCALE_INVALID":
		return ErrInvalidProfile
	}
	switch {
	case status == http.StatusUnauthorized:
		return ErrUnauthorized
	case status == http.StatusNotFound:
		return ErrNotFound
	case status == http.StatusTooManyRequests:
		return ErrRateLimited
	case status >= 500:
		return ErrUnavailable
	}
	return nil
}

var codeRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// maxErrorMessage bounds what of an error body reaches logs and admins.
const maxErrorMessage = 300

// parseErrorBody reads Apple's error code out of body: a bare code
// ("EXPIRED_CURSOR"), a quoted one ("\"EXPIRED_CURSOR\"", as depsim
// answers), or a JSON object with a code and a message.
func parseErrorBody(body []byte) (code, message string) {
	body = bytes.TrimSpace(body)
	switch {
	case len(body) == 0:
		return "", ""
	case body[0] == '"':
		var s string
		if json.Unmarshal(body, &s) == nil {
			body = []byte(strings.TrimSpace(s))
		}
	case body[0] == '{':
		var obj map[string]any
		if json.Unmarshal(body, &obj) == nil {
			code, message = codeAndMessage(obj)
			return code, clip(message)
		}
	}
	s := string(body)
	first, rest, _ := strings.Cut(s, "\n")
	if first = strings.TrimSpace(first); codeRE.MatchString(first) {
		return first, clip(strings.TrimSpace(rest))
	}
	return "", clip(s)
}

// codeAndMessage picks the code and message out of a JSON error object,
// whatever the case and spelling of its keys.
func codeAndMessage(obj map[string]any) (code, message string) {
	for k, v := range obj {
		s, ok := v.(string)
		if !ok {
			continue
		}
		switch strings.ToLower(strings.ReplaceAll(k, "_", "")) {
		case "code", "errorcode", "error":
			if codeRE.MatchString(s) {
				code = s
			} else if message == "" {
				message = s
			}
		case "message", "errormessage", "description":
			message = s
		}
	}
	return code, message
}

func clip(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= maxErrorMessage {
		return s
	}
	cut := maxErrorMessage
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
