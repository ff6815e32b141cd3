package vpp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"
)

// ErrMalformedToken means the bytes are not a content token: not base64,
// not the JSON inside, or missing the token or its expiry date.
var ErrMalformedToken = errors.New("malformed content token")

// ExpiryWarningPeriod is how long before expiry Apple starts warning: from
// then on its answers carry tokenExpirationDate (apple-protocols.md h.1).
// Administrators need a new token from Apple Business or School Manager
// before it runs out, or every call fails with 9621.
const ExpiryWarningPeriod = 15 * 24 * time.Hour

// maxTokenSize caps what ParseContentToken reads. Apple's tokens are a few
// hundred bytes; the cap keeps an upload from making us decode megabytes.
const maxTokenSize = 16 << 10

// ContentToken is a location's content token (sToken), the .vpptoken file
// downloaded from Apple Business or School Manager: base64 of the JSON
// {"token","expDate","orgName"} ("Managing Apps and Books Through Web
// Services"). It is a secret: whoever holds it manages the location's
// licences. String and LogValue leave it out.
type ContentToken struct {
	// Raw is the token as Apple wants it back, the whole base64 text, in
	// "Authorization: Bearer <Raw>". It is what storage keeps, sealed.
	Raw string
	// Token is the secret inside; Apple never asks for it alone.
	Token string
	// ExpiresAt is expDate: Apple issues tokens for one year.
	ExpiresAt time.Time
	// OrgName is the organisation the location belongs to.
	OrgName string
}

// ParseContentToken parses the contents of a .vpptoken file. Surrounding
// white space and line breaks inside the base64 (a token pasted from an
// e-mail) are tolerated. Errors wrap ErrMalformedToken. It does not check
// expiry: see Check.
func ParseContentToken(data []byte) (*ContentToken, error) {
	if len(data) > maxTokenSize {
		return nil, fmt.Errorf("%w: %d bytes is more than a content token holds", ErrMalformedToken, len(data))
	}
	compact := strings.Join(strings.Fields(string(data)), "")
	if compact == "" {
		return nil, fmt.Errorf("%w: empty", ErrMalformedToken)
	}
	raw, err := base64.StdEncoding.DecodeString(compact)
	if err != nil {
		// Some tools strip the padding.
		if raw, err = base64.RawStdEncoding.DecodeString(compact); err != nil {
			return nil, fmt.Errorf("%w: not base64", ErrMalformedToken)
		}
	}
	var v struct {
		Token   *string `json:"token"`
		ExpDate *string `json:"expDate"`
		OrgName string  `json:"orgName"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: not JSON inside the base64", ErrMalformedToken)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON", ErrMalformedToken)
	}
	if v.Token == nil || strings.TrimSpace(*v.Token) == "" {
		return nil, fmt.Errorf("%w: no token", ErrMalformedToken)
	}
	if v.ExpDate == nil {
		return nil, fmt.Errorf("%w: no expDate", ErrMalformedToken)
	}
	exp, err := parseAppleTime(*v.ExpDate)
	if err != nil {
		return nil, fmt.Errorf("%w: expDate %q: %v", ErrMalformedToken, *v.ExpDate, err)
	}
	return &ContentToken{Raw: compact, Token: *v.Token, ExpiresAt: exp, OrgName: v.OrgName}, nil
}

// Expired reports whether the token has run out at now.
func (t *ContentToken) Expired(now time.Time) bool { return !now.Before(t.ExpiresAt) }

// DaysLeft is the number of whole days until the token expires: 0 on its
// last day, negative once it has expired.
func (t *ContentToken) DaysLeft(now time.Time) int {
	return int(math.Floor(t.ExpiresAt.Sub(now).Hours() / 24))
}

// ExpiresWithin reports whether the token expires (or has expired) within
// d of now, for warnings: ExpiryWarningPeriod is Apple's own, and
// administrators usually want earlier notice.
func (t *ContentToken) ExpiresWithin(now time.Time, d time.Duration) bool {
	return t.ExpiresAt.Sub(now) <= d
}

// Check returns an error wrapping ErrTokenExpired (Apple's 9621) when the
// token has run out: importing it would only fail at Apple.
func (t *ContentToken) Check(now time.Time) error {
	if t.Expired(now) {
		return fmt.Errorf("content token of %q expired on %s: %w", t.OrgName,
			t.ExpiresAt.UTC().Format(time.DateOnly), ErrTokenExpired)
	}
	return nil
}

// String describes the token without its secret.
func (t *ContentToken) String() string {
	return fmt.Sprintf("content token of %q, expires %s", t.OrgName, t.ExpiresAt.UTC().Format(time.RFC3339))
}

// LogValue keeps the secret out of logs.
func (t *ContentToken) LogValue() slog.Value {
	return slog.GroupValue(slog.String("org_name", t.OrgName), slog.Time("expires_at", t.ExpiresAt))
}

// appleTimeLayouts are the forms Apple writes dates in: its documents show
// "2030-11-08T22:33:22+0000" (no colon in the offset, which RFC 3339
// requires), and some answers use RFC 3339 proper.
var appleTimeLayouts = []string{
	"2006-01-02T15:04:05Z0700",
	"2006-01-02T15:04:05.000Z0700",
	time.RFC3339Nano,
}

func parseAppleTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, layout := range appleTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("not a date Apple writes")
}

// Timestamp is a date in an Apple answer, such as tokenExpirationDate. A
// value that does not parse decodes as the zero time rather than failing
// the whole answer: the dates are informative, the rest of it is not.
type Timestamp struct{ time.Time }

// UnmarshalJSON accepts Apple's date forms, null and "".
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		t.Time = time.Time{}
		return nil
	}
	t.Time, _ = parseAppleTime(s)
	return nil
}

// MarshalJSON writes the date as Apple does; the zero time as "".
func (t Timestamp) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte(`""`), nil
	}
	return json.Marshal(t.UTC().Format("2006-01-02T15:04:05-0700"))
}
