package vpp

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Content tokens are uploaded by administrators, and error bodies come
// from the network: both are outside input.

func FuzzParseContentToken(f *testing.F) {
	f.Add([]byte(appleExample))
	f.Add([]byte(b64(`{"token":"x","expDate":"2030-11-08T22:33:22Z","orgName":"O"}`)))
	f.Add([]byte(b64(`{"token":"x","expDate":null}`)))
	f.Add([]byte("====\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := ParseContentToken(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("error %v does not wrap ErrMalformedToken", err)
			}
			return
		}
		if strings.TrimSpace(tok.Token) == "" {
			t.Errorf("accepted an incomplete token: %+v", tok)
		}
		if strings.ContainsAny(tok.Raw, " \t\r\n") || len(tok.Raw) > maxTokenSize {
			t.Errorf("Raw %q cannot go in a header", tok.Raw)
		}
		_ = tok.DaysLeft(time.Now())
		_ = tok.String()
	})
}

func FuzzParseErrorBody(f *testing.F) {
	f.Add([]byte(`{"errorNumber":9722,"errorMessage":"bad header"}`))
	f.Add([]byte(`{"errorInfo":{"clientUserIds":["u1"],"assets":[{"adamId":"1"}]},"errorNumber":9609}`))
	f.Add([]byte(`{"status":-1,"errorNumber":"9616","regUsersAlreadyAssigned":[{"itsIdHash":"h","clientUserIdStr":"u"}]}`))
	f.Add([]byte(`{"eventId":"e"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e := parseErrorBody(body)
		if e == nil {
			return
		}
		if e.Number == 0 {
			t.Fatal("an error without a number")
		}
		if len(e.Message) > maxErrorMessage {
			t.Errorf("message of %d bytes", len(e.Message))
		}
		if !errors.Is(e, Code(e.Number)) {
			t.Error("does not unwrap to its code")
		}
		_ = e.Error()
	})
}
