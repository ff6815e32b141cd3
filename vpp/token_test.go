package vpp

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
)

// appleExample is the content token of Apple's "Managing Apps and Books
// Through Web Services".
const appleExample = "ewogICAgInRva2VuIjogIlZGZHdRbVZWTVZSUldGSktVbGRTTlZkc1pHcGpNR3hIVTI1Q2FrMXRhRzlhUjJ3eldqRkdkVk50ZUd0VFJrWjZVMVZhVDJGSFRuUlNiVGxOVVRCS1ExcEdhRTlOUjBaWVRrUXdQUT09IiwKICAgICJleHBEYXRlIjogIjIwMzAtMTEtMDhUMjI6MzM6MjIrMDAwMCIsCiAgICAib3JnTmFtZSI6ICJPUkcxMjM0NSIKfQ=="

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseContentToken(t *testing.T) {
	wantExp := time.Date(2030, 11, 8, 22, 33, 22, 0, time.UTC)
	tests := []struct {
		name    string
		in      string
		wantErr bool
		exp     time.Time
		org     string
	}{
		{name: "Apple's example", in: appleExample, exp: wantExp, org: "ORG12345"},
		{name: "trailing newline", in: appleExample + "\r\n", exp: wantExp, org: "ORG12345"},
		{name: "wrapped at 64 columns", in: appleExample[:64] + "\n" + appleExample[64:128] + "\n" + appleExample[128:], exp: wantExp, org: "ORG12345"},
		{name: "padding stripped", in: strings.TrimRight(appleExample, "="), exp: wantExp, org: "ORG12345"},
		{name: "RFC 3339 date", in: b64(`{"token":"x","expDate":"2030-11-08T22:33:22Z","orgName":"O"}`), exp: wantExp, org: "O"},
		{name: "empty", in: "  \n", wantErr: true},
		{name: "not base64", in: "not a token!", wantErr: true},
		{name: "not JSON", in: b64("hello"), wantErr: true},
		{name: "JSON then more", in: b64(`{"token":"x","expDate":"2030-11-08T22:33:22+0000"}{}`), wantErr: true},
		{name: "no token", in: b64(`{"expDate":"2030-11-08T22:33:22+0000","orgName":"O"}`), wantErr: true},
		{name: "empty token", in: b64(`{"token":" ","expDate":"2030-11-08T22:33:22+0000"}`), wantErr: true},
		{name: "no expDate", in: b64(`{"token":"x","orgName":"O"}`), wantErr: true},
		{name: "bad expDate", in: b64(`{"token":"x","expDate":"next year"}`), wantErr: true},
		{name: "expDate a number", in: b64(`{"token":"x","expDate":1900000000}`), wantErr: true},
		{name: "too large", in: strings.Repeat("A", maxTokenSize+4), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ParseContentToken([]byte(tt.in))
			if tt.wantErr {
				if !errors.Is(err, ErrMalformedToken) {
					t.Fatalf("err = %v, want ErrMalformedToken", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tok.ExpiresAt.Equal(tt.exp) || tok.OrgName != tt.org || tok.Token == "" {
				t.Errorf("got %+v", tok)
			}
			if strings.ContainsAny(tok.Raw, " \r\n") {
				t.Errorf("Raw %q keeps white space; it goes in a header", tok.Raw)
			}
		})
	}
}

func TestContentTokenExpiry(t *testing.T) {
	tok, err := ParseContentToken([]byte(appleExample))
	if err != nil {
		t.Fatal(err)
	}
	exp := tok.ExpiresAt
	tests := []struct {
		name     string
		now      time.Time
		daysLeft int
		expired  bool
		warn     bool // within Apple's 15-day warning period
	}{
		{name: "a year before", now: exp.AddDate(-1, 0, 0), daysLeft: 365},
		{name: "16 days before", now: exp.Add(-16 * 24 * time.Hour), daysLeft: 16},
		{name: "15 days before", now: exp.Add(-15 * 24 * time.Hour), daysLeft: 15, warn: true},
		{name: "last hours", now: exp.Add(-time.Hour), daysLeft: 0, warn: true},
		{name: "at expiry", now: exp, daysLeft: 0, expired: true, warn: true},
		{name: "a day after", now: exp.Add(25 * time.Hour), daysLeft: -2, expired: true, warn: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tok.DaysLeft(tt.now); got != tt.daysLeft {
				t.Errorf("DaysLeft = %d, want %d", got, tt.daysLeft)
			}
			if got := tok.Expired(tt.now); got != tt.expired {
				t.Errorf("Expired = %v", got)
			}
			if got := tok.ExpiresWithin(tt.now, ExpiryWarningPeriod); got != tt.warn {
				t.Errorf("ExpiresWithin(15 days) = %v", got)
			}
			err := tok.Check(tt.now)
			if tt.expired != errors.Is(err, ErrTokenExpired) {
				t.Errorf("Check = %v", err)
			}
		})
	}
}

func TestContentTokenKeepsItsSecret(t *testing.T) {
	tok, err := ParseContentToken([]byte(appleExample))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("imported", "token", tok)
	for _, out := range []string{buf.String(), tok.String(), fmt.Sprint(tok)} {
		if strings.Contains(out, tok.Token) || strings.Contains(out, tok.Raw) {
			t.Errorf("secret in %q", out)
		}
		if !strings.Contains(out, "ORG12345") {
			t.Errorf("organisation missing from %q", out)
		}
	}
}

func TestFakeContentTokenParses(t *testing.T) {
	exp := time.Now().Add(10 * 24 * time.Hour).Truncate(time.Second)
	fake := appletest.NewVPP(t, appletest.WithVPPTokenExpiry(exp), appletest.WithVPPLocation("Org", "Loc"))
	tok, err := ParseContentToken(fake.ContentToken())
	if err != nil {
		t.Fatal(err)
	}
	if !tok.ExpiresAt.Equal(exp) || tok.OrgName != "Org" || tok.Raw != fake.SToken() {
		t.Errorf("got %v, raw %q", tok, tok.Raw)
	}
	if !tok.ExpiresWithin(time.Now(), ExpiryWarningPeriod) {
		t.Error("10 days left is within the warning period")
	}
}

func TestTimestamp(t *testing.T) {
	var v struct {
		A, B, C, D Timestamp
	}
	if err := jsonUnmarshal(`{"A":"2030-11-08T22:33:22+0000","B":"garbage","C":null,"D":12}`, &v); err != nil {
		t.Fatal(err)
	}
	if !v.A.Equal(time.Date(2030, 11, 8, 22, 33, 22, 0, time.UTC)) || !v.B.IsZero() || !v.C.IsZero() || !v.D.IsZero() {
		t.Errorf("got %+v", v)
	}
	b, _ := v.A.MarshalJSON()
	if string(b) != `"2030-11-08T22:33:22+0000"` {
		t.Errorf("MarshalJSON = %s", b)
	}
}
