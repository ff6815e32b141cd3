package vpp

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func TestParseErrorBody(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    int // 0: not an error
		is      error
		users   []string
		holders []Holder
	}{
		{name: "v2 synchronous", body: `{"errorNumber":9722,"errorMessage":"This request contains an invalid authorization header."}`,
			want: 9722, is: ErrBadAuthorization},
		{name: "v2 with errorInfo", body: `{"errorInfo":{"clientUserIds":["u1","u2"]},"errorNumber":9609,"errorMessage":"Unable to find registered user."}`,
			want: 9609, is: ErrUserNotFound, users: []string{"u1", "u2"}},
		{name: "invalid token, sent with HTTP 200", body: `{"errorNumber": 9622,"errorMessage": "Invalid authentication token"}`,
			want: 9622, is: ErrTokenInvalid},
		{name: "v1 9616 with the other holders", body: `{"status":-1,"errorNumber":"9616","errorMessage":"License already assigned",
			"regUsersAlreadyAssigned":[{"itsIdHash":"h1","clientUserIdStr":"u9","userId":42}]}`,
			want: 9616, is: ErrAlreadyAssigned, holders: []Holder{{ClientUserID: "u9", IDHash: "h1"}}},
		{name: "v1 9630", body: `{"status":-1,"errorNumber":9630}`, want: 9630, is: ErrTooManyAlreadyAssigned},
		{name: "legacy 9626", body: `{"errorNumber":9626,"errorMessage":"License assigned to a different user"}`, want: 9626, is: ErrAssignedToOther},
		{name: "status with failures is no error", body: `{"eventStatus":"FAILED","failures":[{"errorNumber":9609}]}`},
		{name: "success", body: `{"eventId":"e","uId":"1"}`},
		{name: "errorNumber 0", body: `{"errorNumber":0}`},
		{name: "not JSON", body: `<html>busy</html>`},
		{name: "array", body: `[1,2]`},
		{name: "message not a string", body: `{"errorNumber":9603,"errorMessage":{"x":1},"errorInfo":"bad"}`, want: 9603, is: ErrInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := parseErrorBody([]byte(tt.body))
			if tt.want == 0 {
				if e != nil {
					t.Fatalf("got %v, want no error", e)
				}
				return
			}
			if e == nil || e.Number != tt.want {
				t.Fatalf("got %v, want %d", e, tt.want)
			}
			if !errors.Is(e, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", e, tt.is)
			}
			var users []string
			if e.Info != nil {
				users = e.Info.ClientUserIDs
			}
			if strings.Join(users, ",") != strings.Join(tt.users, ",") {
				t.Errorf("clientUserIds = %v, want %v", users, tt.users)
			}
			if len(e.Holders) != len(tt.holders) || (len(tt.holders) > 0 && e.Holders[0] != tt.holders[0]) {
				t.Errorf("holders = %v, want %v", e.Holders, tt.holders)
			}
		})
	}
}

func TestErrorMessages(t *testing.T) {
	long := strings.Repeat("x", 2000)
	e := parseErrorBody([]byte(`{"errorNumber":9603,"errorMessage":"` + long + `"}`))
	if len(e.Message) != maxErrorMessage {
		t.Errorf("message of %d bytes kept", len(e.Message))
	}
	e = &Error{Number: 9616, Status: 400}
	if got := e.Error(); got != "Apps and Books answered HTTP 400, error 9616: license already assigned" {
		t.Errorf("Error() = %q", got)
	}
	if got := Code(9999).Error(); got != "Apps and Books error 9999" {
		t.Errorf("unknown code: %q", got)
	}
	if !errors.Is(&ClaimError{Holder: MDMInfo{ID: "x"}}, ErrLocationClaimed) {
		t.Error("ClaimError is not ErrLocationClaimed")
	}
}

func TestStatusError(t *testing.T) {
	tests := []struct {
		status int
		want   Code
	}{
		{http.StatusTooManyRequests, ErrTooManyRequests},
		{http.StatusServiceUnavailable, ErrUnavailable},
		{http.StatusBadGateway, ErrInternal},
		{http.StatusUnauthorized, ErrLoginRequired},
		{http.StatusNotFound, ErrInvalidArgument},
	}
	for _, tt := range tests {
		if got := statusError(tt.status); !errors.Is(got, tt.want) {
			t.Errorf("statusError(%d) = %v, want %v", tt.status, got, tt.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"120", 2 * time.Minute},
		{" 7 ", 7 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"99999999999999", 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestFailureFor(t *testing.T) {
	st := &EventStatus{EventStatus: EventFailed, Failures: []Error{
		{Number: 9616, Info: &ErrorInfo{ClientUserIDs: []string{"u2"}}},
		{Number: 9709, Info: &ErrorInfo{SerialNumbers: []string{"S1"}}},
	}}
	if f := st.FailureFor("u2", ""); f == nil || f.Number != 9616 {
		t.Errorf("u2: %v", f)
	}
	if f := st.FailureFor("", "S1"); f == nil || f.Number != 9709 {
		t.Errorf("S1: %v", f)
	}
	if f := st.FailureFor("u1", ""); f != nil {
		t.Errorf("u1 did not fail: %v", f)
	}
	st.Failures = append(st.Failures, Error{Number: 9603})
	if f := st.FailureFor("u1", ""); f == nil || f.Number != 9603 {
		t.Errorf("a failure naming no one applies to all: %v", f)
	}
}
