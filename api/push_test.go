package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/push"
)

// fakePushCerts records uploads and answers with info, list or err.
type fakePushCerts struct {
	uploads []push.Upload
	info    *push.CertificateInfo
	list    []push.CertificateInfo
	err     error
}

func (f *fakePushCerts) Upload(_ context.Context, u push.Upload) (*push.CertificateInfo, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.uploads = append(f.uploads, u)
	return f.info, nil
}

func (f *fakePushCerts) List(context.Context) ([]push.CertificateInfo, error) {
	return f.list, f.err
}

// fakePusher answers each pushed ID with its entry in results and skips
// the others, as push.Service skips what it cannot push. err comes with
// the results when partial, alone otherwise.
type fakePusher struct {
	calls   [][]string
	results map[string]push.Result
	err     error
	partial bool
}

func (f *fakePusher) PushEnrollments(_ context.Context, ids []string) ([]push.Result, error) {
	f.calls = append(f.calls, slices.Clone(ids))
	if f.err != nil && !f.partial {
		return nil, f.err
	}
	var out []push.Result
	for _, id := range ids {
		if r, ok := f.results[id]; ok {
			r.EnrollmentID = id
			out = append(out, r)
		}
	}
	return out, f.err
}

const (
	pushTopic  = "com.apple.mgmt.External.0b5e6b7f-2d6c-4c57-9b1e-6f1b0e2a7c11"
	otherTopic = "com.apple.mgmt.External.7f3c1d2e-9a8b-4c5d-8e7f-0a1b2c3d4e5f"
)

func jsonBody(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPushNotConfigured(t *testing.T) {
	e := newEnv(t)
	for _, r := range []*http.Request{
		request(http.MethodGet, "/api/v1/push-certificates", "", nil),
		request(http.MethodPut, "/api/v1/push-certificates", mediaJSON, []byte(`{}`)),
		request(http.MethodPost, "/api/v1/devices/UDID-A/push", "", nil),
		request(http.MethodPost, "/api/v1/push", mediaJSON, []byte(`{"enrollment_ids":["UDID-A"]}`)),
	} {
		if msg := wantError(t, e.serve(r), http.StatusServiceUnavailable); msg != "push is not configured" {
			t.Errorf("%s %s: error = %q", r.Method, r.URL, msg)
		}
	}
}

func TestUploadPushCertificate(t *testing.T) {
	p12 := []byte("\x30\x82 not really a p12, but the manager decides that")
	wrapped := base64.StdEncoding.EncodeToString(p12)
	wrapped = wrapped[:20] + "\n" + wrapped[20:] + "\n"
	info := &push.CertificateInfo{Topic: pushTopic, NotAfter: testNow.Add(90 * 24 * time.Hour),
		DaysLeft: 90, Enrollments: 4}
	tests := []struct {
		name        string
		query       string
		contentType string // mediaJSON when empty
		body        string
		err         error // from the manager
		want        int
		wantUpload  *push.Upload
		wantMsg     string // in the error
	}{
		{name: "PEM", body: `{"certificate":"CERT","private_key":"KEY"}`, want: http.StatusOK,
			wantUpload: &push.Upload{CertPEM: []byte("CERT"), KeyPEM: []byte("KEY")}},
		{name: "force", query: "?force=true", body: `{"certificate":"CERT","private_key":"KEY"}`, want: http.StatusOK,
			wantUpload: &push.Upload{CertPEM: []byte("CERT"), KeyPEM: []byte("KEY"), Force: true}},
		{name: "bare force", query: "?force", body: `{"certificate":"CERT","private_key":"KEY"}`, want: http.StatusOK,
			wantUpload: &push.Upload{CertPEM: []byte("CERT"), KeyPEM: []byte("KEY"), Force: true}},
		{name: "force=false", query: "?force=false", body: `{"certificate":"CERT","private_key":"KEY"}`, want: http.StatusOK,
			wantUpload: &push.Upload{CertPEM: []byte("CERT"), KeyPEM: []byte("KEY")}},
		{name: "p12 with line breaks", body: fmt.Sprintf(`{"pkcs12":%q,"password":"pw"}`, wrapped), want: http.StatusOK,
			wantUpload: &push.Upload{PKCS12: p12, Password: "pw"}},
		{name: "force not a boolean", query: "?force=maybe", body: `{"certificate":"CERT","private_key":"KEY"}`,
			want: http.StatusBadRequest, wantMsg: "force"},
		{name: "p12 not base64", body: `{"pkcs12":"!!!"}`, want: http.StatusBadRequest, wantMsg: "base64"},
		{name: "PEM and p12", body: `{"certificate":"CERT","private_key":"KEY","pkcs12":"AAAA"}`,
			want: http.StatusBadRequest, wantMsg: "not both"},
		{name: "certificate without key", body: `{"certificate":"CERT"}`, want: http.StatusBadRequest, wantMsg: "private_key"},
		{name: "nothing", body: `{}`, want: http.StatusBadRequest, wantMsg: "certificate"},
		{name: "unknown field", body: `{"cert":"CERT","private_key":"KEY"}`, want: http.StatusBadRequest, wantMsg: "unknown field"},
		{name: "malformed JSON", body: `{"certificate":`, want: http.StatusBadRequest, wantMsg: "malformed"},
		{name: "not JSON", contentType: "application/x-pem-file", body: "CERT", want: http.StatusUnsupportedMediaType},
		{name: "refused certificate", body: `{"certificate":"CERT","private_key":"KEY"}`,
			err:  &push.CertificateError{Err: push.ErrExpired, Detail: "topic x expired 2022-02-10"},
			want: http.StatusBadRequest, wantMsg: "the push certificate has expired (topic x expired 2022-02-10)"},
		{name: "topic change", body: `{"certificate":"CERT","private_key":"KEY"}`,
			err:  &push.TopicChangeError{Topic: otherTopic, InUse: map[string]int{pushTopic: 12}},
			want: http.StatusConflict, wantMsg: "every such device would have to re-enroll"},
		{name: "store failure", body: `{"certificate":"CERT","private_key":"KEY"}`,
			err: errors.New("disk on fire"), want: http.StatusInternalServerError, wantMsg: "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs := &fakePushCerts{info: info, err: tt.err}
			e := newEnv(t, WithPush(certs, &fakePusher{}))
			ct := cmpOr(tt.contentType, mediaJSON)
			rec := e.serve(request(http.MethodPut, "/api/v1/push-certificates"+tt.query, ct, []byte(tt.body)))
			if tt.want != http.StatusOK {
				if msg := wantError(t, rec, tt.want); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("error = %q, want it to contain %q", msg, tt.wantMsg)
				}
				if tt.err == nil && len(certs.uploads) != 0 {
					t.Errorf("the manager was called: %+v", certs.uploads)
				}
				return
			}
			got := decode[push.CertificateInfo](t, rec, http.StatusOK)
			if got != *info {
				t.Errorf("answer = %+v, want %+v", got, *info)
			}
			if len(certs.uploads) != 1 {
				t.Fatalf("uploads = %d, want 1", len(certs.uploads))
			}
			u, w := certs.uploads[0], *tt.wantUpload
			if !bytes.Equal(u.CertPEM, w.CertPEM) || !bytes.Equal(u.KeyPEM, w.KeyPEM) || !bytes.Equal(u.PKCS12, w.PKCS12) ||
				u.Password != w.Password || u.Force != w.Force {
				t.Errorf("upload = %+v, want %+v", u, w)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestUploadPushCertificateTooLarge(t *testing.T) {
	e := newEnv(t, WithMaxBody(64), WithPush(&fakePushCerts{}, &fakePusher{}))
	body := jsonBody(t, map[string]string{"certificate": strings.Repeat("A", 100), "private_key": "KEY"})
	wantError(t, e.serve(request(http.MethodPut, "/api/v1/push-certificates", mediaJSON, body)),
		http.StatusRequestEntityTooLarge)
}

func TestUploadPushCertificateKeyStaysOutOfTheLog(t *testing.T) {
	const secret = "-----BEGIN PRIVATE KEY-----\nTOP-SECRET-KEY\n-----END PRIVATE KEY-----\n"
	certs := &fakePushCerts{err: &push.CertificateError{Err: push.ErrKeyMismatch, Detail: "topic " + pushTopic}}
	e := newEnv(t, WithPush(certs, &fakePusher{}))
	body := jsonBody(t, map[string]string{"certificate": "CERT", "private_key": secret})
	wantError(t, e.serve(request(http.MethodPut, "/api/v1/push-certificates", mediaJSON, body)), http.StatusBadRequest)
	if strings.Contains(e.logs.String(), "TOP-SECRET") {
		t.Errorf("the private key reached the log:\n%s", e.logs)
	}
}

func TestListPushCertificates(t *testing.T) {
	t.Run("none", func(t *testing.T) {
		e := newEnv(t, WithPush(&fakePushCerts{}, &fakePusher{}))
		rec := e.get("/api/v1/push-certificates")
		if got := strings.TrimSpace(rec.Body.String()); got != `{"push_certificates":[]}` {
			t.Errorf("body = %s, want an empty list", got)
		}
	})
	t.Run("some", func(t *testing.T) {
		list := []push.CertificateInfo{
			{Topic: pushTopic, NotAfter: testNow.Add(10 * 24 * time.Hour), DaysLeft: 10, Enrollments: 3, Expiring: true},
			{Topic: otherTopic, NotAfter: testNow.Add(300 * 24 * time.Hour), DaysLeft: 300},
		}
		e := newEnv(t, WithPush(&fakePushCerts{list: list}, &fakePusher{}))
		got := decode[pushCertificateList](t, e.get("/api/v1/push-certificates"), http.StatusOK)
		if !slices.Equal(got.PushCertificates, list) {
			t.Errorf("list = %+v, want %+v", got.PushCertificates, list)
		}
	})
	t.Run("store failure", func(t *testing.T) {
		e := newEnv(t, WithPush(&fakePushCerts{err: errors.New("disk on fire")}, &fakePusher{}))
		wantError(t, e.get("/api/v1/push-certificates"), http.StatusInternalServerError)
	})
}

func TestPushDevice(t *testing.T) {
	ok := push.Result{Status: http.StatusOK, APNsID: "APNS-1"}
	gone := push.Result{Status: http.StatusGone, Reason: "Unregistered", Unregistered: true,
		Err: &push.StatusError{Status: http.StatusGone, Reason: "Unregistered"}}
	tests := []struct {
		name    string
		id      string
		enabled bool
		token   []byte
		results map[string]push.Result
		want    pushResult
	}{
		{name: "pushed", id: "UDID-A", enabled: true, token: []byte("tok"), results: map[string]push.Result{"UDID-A": ok},
			want: pushResult{EnrollmentID: "UDID-A", Status: http.StatusOK, APNsID: "APNS-1"}},
		{name: "user channel", id: "UDID-A:501", enabled: true, token: []byte("tok"), results: map[string]push.Result{"UDID-A:501": ok},
			want: pushResult{EnrollmentID: "UDID-A:501", Status: http.StatusOK, APNsID: "APNS-1"}},
		{name: "refused by APNs", id: "UDID-B", enabled: true, token: []byte("tok"), results: map[string]push.Result{"UDID-B": gone},
			want: pushResult{EnrollmentID: "UDID-B", Status: http.StatusGone, Reason: "Unregistered",
				Error: "APNs answered 410 Unregistered"}},
		{name: "no token yet", id: "UDID-B", enabled: true,
			want: pushResult{EnrollmentID: "UDID-B", Error: "not pushed: " + push.ErrNoToken.Error()}},
		{name: "disabled", id: "UDID-B", token: []byte("tok"),
			want: pushResult{EnrollmentID: "UDID-B", Error: "not pushed: the enrollment is disabled (checked out, or replaced by a new enrollment)"}},
		{name: "token refused earlier", id: "UDID-B", enabled: true, token: []byte("tok"),
			want: pushResult{EnrollmentID: "UDID-B", Error: "not pushed: APNs refused the enrollment's push token; it is pushed again after the device's next TokenUpdate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pusher := &fakePusher{results: tt.results}
			e := newEnv(t, WithPush(&fakePushCerts{}, pusher))
			enr := e.store.enrollments[tt.id]
			enr.Enabled, enr.PushToken = tt.enabled, tt.token
			e.store.enrollments[tt.id] = enr
			got := decode[pushResults](t, e.serve(request(http.MethodPost, "/api/v1/devices/"+tt.id+"/push", "", nil)), http.StatusOK)
			if len(got.Results) != 1 || got.Results[0] != tt.want {
				t.Errorf("results = %+v, want [%+v]", got.Results, tt.want)
			}
			if len(pusher.calls) != 1 || !slices.Equal(pusher.calls[0], []string{tt.id}) {
				t.Errorf("pushed %v, want [[%s]]", pusher.calls, tt.id)
			}
		})
	}
	t.Run("unknown enrollment", func(t *testing.T) {
		pusher := &fakePusher{}
		e := newEnv(t, WithPush(&fakePushCerts{}, pusher))
		wantError(t, e.serve(request(http.MethodPost, "/api/v1/devices/UDID-C/push", "", nil)), http.StatusNotFound)
		if len(pusher.calls) != 0 {
			t.Errorf("pushed %v", pusher.calls)
		}
	})
	t.Run("store failure", func(t *testing.T) {
		e := newEnv(t, WithPush(&fakePushCerts{}, &fakePusher{err: errors.New("database gone")}))
		wantError(t, e.serve(request(http.MethodPost, "/api/v1/devices/UDID-A/push", "", nil)), http.StatusInternalServerError)
	})
}

func TestPushMany(t *testing.T) {
	results := map[string]push.Result{
		"UDID-A": {Status: http.StatusOK, APNsID: "APNS-A"},
		"UDID-B": {Err: errors.New("sending push: connection reset"), Retryable: true},
	}
	tests := []struct {
		name    string
		body    string
		err     error
		partial bool
		want    int
		pushed  []string
		results []pushResult
		wantMsg string
	}{
		{name: "sorted, repeats once, skipped ones said", body: `{"enrollment_ids":["UDID-B","UDID-C","UDID-A","UDID-B"]}`,
			want: http.StatusOK, pushed: []string{"UDID-A", "UDID-B", "UDID-C"},
			results: []pushResult{
				{EnrollmentID: "UDID-A", Status: http.StatusOK, APNsID: "APNS-A"},
				{EnrollmentID: "UDID-B", Error: "sending push: connection reset"},
				{EnrollmentID: "UDID-C", Error: "not pushed: unknown or disabled enrollment, no push token yet (no TokenUpdate), or a token APNs refused (it is pushed again after the device's next TokenUpdate)"},
			}},
		{name: "recording failed after pushing", body: `{"enrollment_ids":["UDID-A"]}`,
			err: errors.New("record failed"), partial: true, want: http.StatusOK, pushed: []string{"UDID-A"},
			results: []pushResult{{EnrollmentID: "UDID-A", Status: http.StatusOK, APNsID: "APNS-A"}}},
		{name: "store failure", body: `{"enrollment_ids":["UDID-A"]}`, err: errors.New("database gone"),
			want: http.StatusInternalServerError, pushed: []string{"UDID-A"}, wantMsg: "internal error"},
		{name: "empty", body: `{"enrollment_ids":[]}`, want: http.StatusBadRequest, wantMsg: "enrollment_ids is required"},
		{name: "missing", body: `{}`, want: http.StatusBadRequest, wantMsg: "enrollment_ids is required"},
		{name: "blank ID", body: `{"enrollment_ids":["UDID-A"," "]}`, want: http.StatusBadRequest, wantMsg: "empty"},
		{name: "unknown field", body: `{"enrollment_ids":["UDID-A"],"force":true}`, want: http.StatusBadRequest, wantMsg: "unknown field"},
		{name: "too many", body: string(jsonBody(t, pushRequest{EnrollmentIDs: manyIDs(maxPushIDs + 1)})),
			want: http.StatusBadRequest, wantMsg: "at most 10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pusher := &fakePusher{results: results, err: tt.err, partial: tt.partial}
			e := newEnv(t, WithPush(&fakePushCerts{}, pusher))
			rec := e.serve(request(http.MethodPost, "/api/v1/push", mediaJSON, []byte(tt.body)))
			if tt.want != http.StatusOK {
				if msg := wantError(t, rec, tt.want); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("error = %q, want it to contain %q", msg, tt.wantMsg)
				}
			} else {
				got := decode[pushResults](t, rec, http.StatusOK)
				if !slices.Equal(got.Results, tt.results) {
					t.Errorf("results =\n  %+v\nwant\n  %+v", got.Results, tt.results)
				}
			}
			var pushed []string
			if len(pusher.calls) == 1 {
				pushed = pusher.calls[0]
			}
			if len(pusher.calls) > 1 || !slices.Equal(pushed, tt.pushed) {
				t.Errorf("pushed %v, want %v", pusher.calls, tt.pushed)
			}
			if tt.partial && !strings.Contains(e.logs.String(), "record failed") {
				t.Errorf("the recording failure is not logged:\n%s", e.logs)
			}
		})
	}
	t.Run("the largest list fits the default body cap", func(t *testing.T) {
		pusher := &fakePusher{}
		e := newEnv(t, WithPush(&fakePushCerts{}, pusher))
		ids := manyIDs(maxPushIDs)
		rec := e.serve(request(http.MethodPost, "/api/v1/push", mediaJSON, jsonBody(t, pushRequest{EnrollmentIDs: ids})))
		if got := decode[pushResults](t, rec, http.StatusOK); len(got.Results) != maxPushIDs {
			t.Errorf("%d results, want %d", len(got.Results), maxPushIDs)
		}
	})
}

// manyIDs returns n enrollment IDs shaped like user channels of real UDIDs.
func manyIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("00008030-%016X:%d", i, 500+i%3)
	}
	return ids
}

// memCertStore is a minimal push.CertStore, so the routes can be tried
// with the real push.Manager.
type memCertStore struct {
	mu    sync.Mutex
	certs map[string]push.StoredCertificate
	usage map[string]int
}

func (s *memCertStore) PushCertificates(context.Context) ([]push.StoredCertificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []push.StoredCertificate
	for _, topic := range slices.Sorted(maps.Keys(s.certs)) {
		out = append(out, s.certs[topic])
	}
	return out, nil
}

func (s *memCertStore) PutPushCertificate(_ context.Context, c push.StoredCertificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certs[c.Topic] = c
	return nil
}

func (s *memCertStore) TopicUsage(context.Context) (map[string]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.usage), nil
}

func TestPushCertificatesWithManager(t *testing.T) {
	key := make([]byte, pki.SecretKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	sealer, err := pki.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	apns := appletest.NewAPNs(t)
	providers := push.NewProviders()
	t.Cleanup(providers.Close)
	store := &memCertStore{certs: make(map[string]push.StoredCertificate), usage: map[string]int{pushTopic: 12}}
	m := push.NewManager(store, sealer, providers,
		push.WithProviderOptions(push.WithURL(apns.URL()), push.WithRootCAs(apns.RootCAs())))
	e := newEnv(t, WithPush(m, &fakePusher{}))

	upload := func(topic, query string) *httptest.ResponseRecorder {
		certPEM, keyPEM := apns.PushCertificate(topic)
		body := jsonBody(t, map[string]string{"certificate": string(certPEM), "private_key": string(keyPEM)})
		return e.serve(request(http.MethodPut, "/api/v1/push-certificates"+query, mediaJSON, body))
	}
	got := decode[push.CertificateInfo](t, upload(pushTopic, ""), http.StatusOK)
	if got.Topic != pushTopic || got.Enrollments != 12 || got.DaysLeft < 364 || got.Expiring {
		t.Errorf("uploaded = %+v", got)
	}
	msg := wantError(t, upload(otherTopic, ""), http.StatusConflict)
	for _, want := range []string{otherTopic, pushTopic, "12 enrollments", "re-enroll"} {
		if !strings.Contains(msg, want) {
			t.Errorf("409 message lacks %q: %s", want, msg)
		}
	}
	decode[push.CertificateInfo](t, upload(otherTopic, "?force=true"), http.StatusOK)

	list := decode[map[string][]map[string]any](t, e.get("/api/v1/push-certificates"), http.StatusOK)["push_certificates"]
	if len(list) != 2 || list[0]["topic"] != pushTopic || list[0]["enrollments"] != 12.0 || list[1]["topic"] != otherTopic {
		t.Errorf("list = %v", list)
	}
	for _, field := range []string{"topic", "not_after", "days_left", "enrollments", "expiring"} {
		if _, ok := list[0][field]; !ok {
			t.Errorf("certificate lacks %q: %v", field, list[0])
		}
	}

	// An expired certificate: Apple's real one, with any key.
	anyKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodePrivateKeyPEM(anyKey)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := os.ReadFile("../push/testdata/nanomdm-apns-push-cert.pem")
	if err != nil {
		t.Fatal(err)
	}
	body := jsonBody(t, map[string]string{"certificate": string(expired), "private_key": string(keyPEM)})
	msg = wantError(t, e.serve(request(http.MethodPut, "/api/v1/push-certificates", mediaJSON, body)), http.StatusBadRequest)
	if !strings.Contains(msg, "expired") {
		t.Errorf("400 message = %q, want it to say the certificate expired", msg)
	}
	msg = wantError(t, e.serve(request(http.MethodPut, "/api/v1/push-certificates", mediaJSON,
		[]byte(`{"certificate":"not PEM","private_key":"nor this"}`))), http.StatusBadRequest)
	if !strings.Contains(msg, "unreadable push certificate") {
		t.Errorf("400 message = %q", msg)
	}
}
