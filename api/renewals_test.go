package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
)

// fakeRenewals is a RenewalLister over a fixed list.
type fakeRenewals struct {
	list  []enroll.RenewalStatus
	err   error
	asked []string
}

func (f *fakeRenewals) Renewals(_ context.Context, state string) ([]enroll.RenewalStatus, error) {
	f.asked = append(f.asked, state)
	if f.err != nil {
		return nil, f.err
	}
	if state == "bogus" {
		return nil, handler.Errorf(http.StatusBadRequest, "state must be one of …")
	}
	var out []enroll.RenewalStatus
	for _, st := range f.list {
		if state == "" || st.State == state {
			out = append(out, st)
		}
	}
	return out, nil
}

func TestListRenewals(t *testing.T) {
	failed := enroll.RenewalStatus{DeviceID: "UDID-A", SerialNumber: "SERIAL-A", NotAfter: testNow.Add(3 * 24 * time.Hour),
		Attempts: 2, LastAttempt: testNow.Add(-time.Hour), LastCommandUUID: "CMD-2", LastStatus: "Error",
		State: enroll.RenewalFailed, Reason: enroll.ReasonCommandFailed}
	pending := enroll.RenewalStatus{DeviceID: "UDID-B", NotAfter: testNow.Add(20 * 24 * time.Hour), Attempts: 1,
		LastAttempt: testNow, LastCommandUUID: "CMD-3", LastStatus: "Pending", State: enroll.RenewalPending}
	lister := &fakeRenewals{list: []enroll.RenewalStatus{failed, pending}}
	e := newEnv(t, WithRenewals(lister))

	tests := []struct {
		name, query string
		want        []enroll.RenewalStatus
	}{
		{"all", "", []enroll.RenewalStatus{failed, pending}},
		{"failed", "?state=failed", []enroll.RenewalStatus{failed}},
		{"none", "?state=renewed", []enroll.RenewalStatus{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decode[renewalList](t, e.get("/api/v1/identity-renewals"+tt.query), http.StatusOK)
			if !slices.EqualFunc(got.Renewals, tt.want, func(a, b enroll.RenewalStatus) bool {
				return a.DeviceID == b.DeviceID && a.NotAfter.Equal(b.NotAfter) && a.LastAttempt.Equal(b.LastAttempt) &&
					a.Attempts == b.Attempts && a.LastCommandUUID == b.LastCommandUUID && a.LastStatus == b.LastStatus &&
					a.State == b.State && a.Reason == b.Reason && a.SerialNumber == b.SerialNumber
			}) || got.Renewals == nil {
				t.Errorf("renewals = %+v, want %+v", got.Renewals, tt.want)
			}
		})
	}
	if want := []string{"", "failed", "renewed"}; !slices.Equal(lister.asked, want) {
		t.Errorf("asked for states %q, want %q", lister.asked, want)
	}

	// The JSON names, as openapi.yaml documents them.
	body := e.get("/api/v1/identity-renewals?state=failed").Body.String()
	for _, key := range []string{`"device_id":"UDID-A"`, `"serial_number":"SERIAL-A"`, `"not_after":"2025-03-04T12:00:00Z"`,
		`"attempts":2`, `"last_attempt":"2025-03-01T11:00:00Z"`, `"last_command_uuid":"CMD-2"`, `"last_status":"Error"`,
		`"state":"failed"`, `"reason":"command_failed"`} {
		if !strings.Contains(body, key) {
			t.Errorf("body lacks %s: %s", key, body)
		}
	}

	if msg := wantError(t, e.get("/api/v1/identity-renewals?state=bogus"), http.StatusBadRequest); !strings.Contains(msg, "state") {
		t.Errorf("error = %q", msg)
	}
	lister.err = errors.New("disk on fire")
	if msg := wantError(t, e.get("/api/v1/identity-renewals"), http.StatusInternalServerError); strings.Contains(msg, "disk") {
		t.Errorf("error %q leaks the cause", msg)
	}
}

func TestRenewalsNotConfigured(t *testing.T) {
	e := newEnv(t)
	if msg := wantError(t, e.get("/api/v1/identity-renewals"), http.StatusServiceUnavailable); msg != "identity renewal is not configured" {
		t.Errorf("error = %q", msg)
	}
	// Like every route, it needs a key.
	r := request(http.MethodGet, "/api/v1/identity-renewals", "", nil)
	r.Header.Del("Authorization")
	wantError(t, e.serve(r), http.StatusUnauthorized)
}
