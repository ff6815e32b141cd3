package ade

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseErrorBody(t *testing.T) {
	tests := []struct {
		name, body    string
		code, message string
	}{
		{"bare code", "EXPIRED_CURSOR", "EXPIRED_CURSOR", ""},
		{"code and newline", "UNAUTHORIZED\n", "UNAUTHORIZED", ""},
		{"quoted, as depsim", `"INVALID_CURSOR"`, "INVALID_CURSOR", ""},
		{"JSON object", `{"code":"T_C_NOT_SIGNED","message":"Terms and conditions not signed"}`, "T_C_NOT_SIGNED", "Terms and conditions not signed"},
		{"JSON error key", `{"error":"ACCESS_DENIED"}`, "ACCESS_DENIED", ""},
		{"text", "Service Unavailable", "", "Service Unavailable"},
		{"empty", "", "", ""},
		{"HTML", "<html><body>502</body></html>", "", "<html><body>502</body></html>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := parseErrorBody([]byte(tt.body))
			if code != tt.code || msg != tt.message {
				t.Errorf("got %q, %q; want %q, %q", code, msg, tt.code, tt.message)
			}
		})
	}
	_, msg := parseErrorBody([]byte(strings.Repeat("é", 1000)))
	if len(msg) > maxErrorMessage+len("…") || !strings.HasSuffix(msg, "…") {
		t.Errorf("long message not clipped: %d bytes", len(msg))
	}
}

func TestErrorSentinels(t *testing.T) {
	tests := []struct {
		status int
		code   string
		want   []error
	}{
		{400, "EXPIRED_CURSOR", []error{ErrExpiredCursor}},
		{400, "INVALID_CURSOR", []error{ErrInvalidCursor}},
		{400, "EXHAUSTED_CURSOR", []error{ErrExhaustedCursor}},
		{403, "T_C_NOT_SIGNED", []error{ErrTermsNotSigned}},
		{400, "FLAGS_INVALID", []error{ErrFlagsInvalid, ErrInvalidProfile}},
		{400, "CONFIG_URL_INVALID", []error{ErrInvalidProfile}},
		{403, "ACCESS_DENIED", []error{ErrAccessDenied}},
		{401, "UNAUTHORIZED", []error{ErrUnauthorized}},
		{404, "NOT_FOUND", []error{ErrNotFound}},
		{429, "", []error{ErrRateLimited}},
		{503, "", []error{ErrUnavailable}},
	}
	all := []error{ErrExpiredCursor, ErrInvalidCursor, ErrExhaustedCursor, ErrTermsNotSigned, ErrFlagsInvalid,
		ErrInvalidProfile, ErrAccessDenied, ErrUnauthorized, ErrNotFound, ErrRateLimited, ErrUnavailable}
	for _, tt := range tests {
		err := error(&Error{Endpoint: "POST /x", Status: tt.status, Code: tt.code})
		for _, s := range all {
			want := false
			for _, w := range tt.want {
				want = want || w == s
			}
			if errors.Is(err, s) != want {
				t.Errorf("%d %s: errors.Is(%v) = %v", tt.status, tt.code, s, !want)
			}
		}
	}
	msg := (&Error{Endpoint: "GET /account", Status: 403, Code: "T_C_NOT_SIGNED"}).Error()
	if !strings.Contains(msg, "accept the new terms") || !strings.Contains(msg, "T_C_NOT_SIGNED") {
		t.Errorf("message %q", msg)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in    string
		want  time.Duration
		asked bool
	}{
		{"", 0, false},
		{"30", 30 * time.Second, true},
		{" 0 ", 0, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"99999999999", 24 * time.Hour, true},
	}
	for _, tt := range tests {
		got, asked := retryAfter(tt.in, now)
		if got != tt.want || asked != tt.asked {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tt.in, got, asked, tt.want, tt.asked)
		}
	}
}

func FuzzParseErrorBody(f *testing.F) {
	for _, s := range []string{"EXPIRED_CURSOR", `"INVALID_CURSOR"`, `{"code":"T_C_NOT_SIGNED","message":"x"}`, "", "<html>", "A\nB"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		code, msg := parseErrorBody(body)
		if code != "" && !codeRE.MatchString(code) {
			t.Fatalf("code %q", code)
		}
		if len(msg) > maxErrorMessage+len("…") {
			t.Fatalf("message of %d bytes", len(msg))
		}
	})
}
