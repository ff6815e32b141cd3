package vpp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Code is an Apple error number. Codes are errors themselves, so callers
// branch with errors.Is(err, vpp.ErrAlreadyAssigned) whether the number
// came in a synchronous answer (*Error unwraps to its Code), in an
// event's failures, or from a local check such as ContentToken.Check.
type Code int

// Error numbers callers branch on. Apple adds numbers without notice
// ("Handling error responses"); the service configuration lists the
// current ones, and any other number is still a Code.
const (
	ErrMissingArgument         Code = 9600 // v1: a required argument is missing
	ErrLoginRequired           Code = 9601
	ErrInvalidArgument         Code = 9602
	ErrInternal                Code = 9603 // retried; Apple says back off to minutes after 5 failures
	ErrUserNotFound            Code = 9609 // no registered user with that clientUserId
	ErrLicenseNotFound         Code = 9610 // v1
	ErrAlreadyRetired          Code = 9618 // v1
	ErrLicenseNotHeld          Code = 9619 // v1: the licence is not associated
	ErrTokenExpired            Code = 9621 // the content token has expired: the administrator must download a new one
	ErrTokenInvalid            Code = 9622 // not a token Apple issued; Apple has been seen to answer it with HTTP 200
	ErrTokenRevoked            Code = 9625 // the content token was revoked (a newer one was downloaded)
	ErrAssignedToOther         Code = 9626 // v1: the licence is assigned to a different user; try another licence
	ErrItemNotDeviceAssignable Code = 9628 // v1: the item cannot be assigned to a device
	ErrServiceRemoved          Code = 9634
	ErrAppleIDNotUsable        Code = 9635 // e.g. a Managed Apple Account of another organisation
	ErrAppleIDInUse            Code = 9641 // the Apple Account is already associated with another user
	ErrMaintenance             Code = 9644
	ErrTooManyRequests         Code = 9646 // HTTP 429: back off and retry
	ErrBadPageIndex            Code = 9650
	ErrNotDeviceAssignable     Code = 9707
	ErrUnknownEvent            Code = 9708
	ErrNotEnoughLicenses       Code = 9709
	ErrUserExists              Code = 9716 // an active user already has that clientUserId
	ErrBadVersionID            Code = 9721
	ErrBadAuthorization        Code = 9722
	ErrUnavailable             Code = 9729 // HTTP 503: back off and retry

	// ErrAlreadyAssigned (9616, "License already assigned") means the user,
	// or another user on the same Apple account (same idHash), already
	// holds the item. It is an answer, not a failure: the user has the
	// item, and asking again only earns ErrTooManyAlreadyAssigned. Never
	// retried.
	ErrAlreadyAssigned Code = 9616
	// ErrTooManyAlreadyAssigned (9630) means too many recent 9616s: Apple
	// wants the client to slow down. Retried with a long back-off.
	ErrTooManyAlreadyAssigned Code = 9630
)

var codeMessages = map[Code]string{
	ErrMissingArgument:         "missing required argument",
	ErrLoginRequired:           "login required",
	ErrInvalidArgument:         "invalid argument",
	ErrInternal:                "internal error",
	ErrUserNotFound:            "registered user not found",
	ErrLicenseNotFound:         "license not found",
	ErrAlreadyAssigned:         "license already assigned",
	ErrAlreadyRetired:          "user already retired",
	ErrLicenseNotHeld:          "license not associated",
	ErrTokenExpired:            "content token expired",
	ErrTokenInvalid:            "invalid content token",
	ErrTokenRevoked:            "content token revoked",
	ErrAssignedToOther:         "license assigned to a different user",
	ErrItemNotDeviceAssignable: "item not device-assignable",
	ErrTooManyAlreadyAssigned:  "too many recent already-assigned errors",
	ErrServiceRemoved:          "service removed",
	ErrAppleIDNotUsable:        "Apple Account cannot be associated with this user",
	ErrAppleIDInUse:            "Apple Account already associated with another user",
	ErrMaintenance:             "service in maintenance",
	ErrTooManyRequests:         "too many requests",
	ErrBadPageIndex:            "invalid page index",
	ErrNotDeviceAssignable:     "asset not device-assignable",
	ErrUnknownEvent:            "unknown eventId",
	ErrNotEnoughLicenses:       "not enough licenses",
	ErrUserExists:              "a registered user already exists with this clientUserId",
	ErrBadVersionID:            "invalid versionId",
	ErrBadAuthorization:        "invalid Authorization header",
	ErrUnavailable:             "service temporarily unavailable",
}

func (c Code) Error() string {
	if m, ok := codeMessages[c]; ok {
		return fmt.Sprintf("Apps and Books error %d: %s", int(c), m)
	}
	return fmt.Sprintf("Apps and Books error %d", int(c))
}

// Error is Apple's ErrorResponse: a refused request, or one failure in an
// event's status. It unwraps to its Code.
type Error struct {
	Number  int        `json:"errorNumber"`
	Message string     `json:"errorMessage,omitempty"`
	Info    *ErrorInfo `json:"errorInfo,omitempty"`
	// Holders are the other users on the same Apple account that already
	// hold the item, from a legacy 9616 answer's regUsersAlreadyAssigned.
	Holders []Holder `json:"-"`
	// Status is the HTTP status of a synchronous answer; 0 in an event.
	Status int `json:"-"`
	// RetryAfter is the wait Apple asked for (Retry-After), or the back-off
	// the client would have waited had it retried once more: a caller
	// that runs jobs reschedules after it.
	RetryAfter time.Duration `json:"-"`
}

// ErrorInfo names what a failure is about.
type ErrorInfo struct {
	Assets        []AssetRef `json:"assets,omitempty"`
	ClientUserIDs []string   `json:"clientUserIds,omitempty"`
	SerialNumbers []string   `json:"serialNumbers,omitempty"`
}

// Holder is a user that already holds an item, in a legacy 9616 answer.
type Holder struct {
	ClientUserID string
	IDHash       string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Status != 0 {
		fmt.Fprintf(&b, "Apps and Books answered HTTP %d, ", e.Status)
	}
	fmt.Fprintf(&b, "error %d", e.Number)
	if m := e.Message; m != "" {
		fmt.Fprintf(&b, ": %s", m)
	} else if m, ok := codeMessages[Code(e.Number)]; ok {
		fmt.Fprintf(&b, ": %s", m)
	}
	return b.String()
}

// Unwrap returns the error's Code, for errors.Is.
func (e *Error) Unwrap() error { return Code(e.Number) }

// maxErrorMessage caps the message kept from an answer: it ends up in logs
// and API errors, and Apple's are a sentence long.
const maxErrorMessage = 512

// parseErrorBody returns Apple's error in body, or nil when body is not an
// error. Apple answers some errors with HTTP 200 (an invalid token has
// been seen to), so every answer is looked at, whatever its status; an
// answer is an error when its top level has a non-zero errorNumber. v1
// bodies put it there too, with status -1 and numbers sometimes quoted.
func parseErrorBody(body []byte) *Error {
	var v struct {
		ErrorNumber             json.RawMessage `json:"errorNumber"`
		ErrorMessage            json.RawMessage `json:"errorMessage"`
		ErrorInfo               json.RawMessage `json:"errorInfo"`
		RegUsersAlreadyAssigned []struct {
			ClientUserIDStr string `json:"clientUserIdStr"`
			ITSIDHash       string `json:"itsIdHash"`
		} `json:"regUsersAlreadyAssigned"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil
	}
	n := jsonInt(v.ErrorNumber)
	if n == 0 {
		return nil
	}
	e := &Error{Number: n}
	var msg string
	if json.Unmarshal(v.ErrorMessage, &msg) == nil {
		if len(msg) > maxErrorMessage {
			msg = msg[:maxErrorMessage]
		}
		e.Message = msg
	}
	var info ErrorInfo
	if len(v.ErrorInfo) > 0 && json.Unmarshal(v.ErrorInfo, &info) == nil {
		e.Info = &info
	}
	for _, h := range v.RegUsersAlreadyAssigned {
		e.Holders = append(e.Holders, Holder{ClientUserID: h.ClientUserIDStr, IDHash: h.ITSIDHash})
	}
	return e
}

// jsonInt reads a number that may be quoted, as v1 sends them; 0 when it
// is neither.
func jsonInt(raw json.RawMessage) int {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return n
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			return n
		}
	}
	return 0
}

// statusError builds the error for a non-2xx answer without Apple's error
// body (a proxy's page, an empty 503), numbered as Apple numbers the same
// condition so the retry rules see one thing.
func statusError(status int) *Error {
	e := &Error{Status: status, Message: http.StatusText(status)}
	switch {
	case status == http.StatusTooManyRequests:
		e.Number = int(ErrTooManyRequests)
	case status == http.StatusServiceUnavailable:
		e.Number = int(ErrUnavailable)
	case status == http.StatusUnauthorized:
		e.Number = int(ErrLoginRequired)
	case status >= 500:
		e.Number = int(ErrInternal)
	default:
		e.Number = int(ErrInvalidArgument)
	}
	return e
}

// ErrLocationClaimed means another MDM server manages the location: its
// client configuration names another mdmInfo. Apple warns that two
// servers managing one location allocate licences unpredictably, so the
// client stops rather than fight. The error is a *ClaimError.
var ErrLocationClaimed = errors.New("the location is managed by another MDM server")

// ClaimError says which server holds the location.
type ClaimError struct {
	Holder MDMInfo
}

func (e *ClaimError) Error() string {
	return fmt.Sprintf("the location is managed by another MDM server (%q, id %q)", e.Holder.Name, e.Holder.ID)
}

// Unwrap returns ErrLocationClaimed.
func (e *ClaimError) Unwrap() error { return ErrLocationClaimed }
