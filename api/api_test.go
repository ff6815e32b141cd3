package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/storage"
)

const testKey = "bramley_test-key-0123456789"

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// env is an API over fakes seeded with three devices: UDID-A (device and
// user channel 501, with a SecurityInfo command it answered), UDID-B
// (device channel) and UDID-C (not enrolled).
type env struct {
	api   *API
	store *fakeStore
	cmds  *fakeCommands
	keys  *fakeKeys
	enq   *fakeEnqueuer
	logs  *bytes.Buffer
}

func newEnv(t *testing.T, opts ...Option) *env {
	t.Helper()
	dev := func(id, serial string) storage.Device {
		return storage.Device{ID: id, UDID: id, SerialNumber: serial, Topic: "com.apple.mgmt.test",
			Enrolled: true, CreatedAt: testNow, UpdatedAt: testNow, LastSeen: testNow}
	}
	enr := func(id, user string) storage.Enrollment {
		device, _, _ := strings.Cut(id, ":")
		return storage.Enrollment{ID: id, DeviceID: device, UserID: user, Topic: "com.apple.mgmt.test",
			Enabled: true, UpdatedAt: testNow, LastSeen: testNow}
	}
	store := &fakeStore{
		devices: map[string]storage.Device{
			"UDID-A": dev("UDID-A", "SERIAL-A"),
			"UDID-B": dev("UDID-B", "SERIAL-B"),
			"UDID-C": dev("UDID-C", "SERIAL-C"),
		},
		enrollments: map[string]storage.Enrollment{
			"UDID-A":     enr("UDID-A", ""),
			"UDID-A:501": enr("UDID-A:501", "501"),
			"UDID-B":     enr("UDID-B", ""),
		},
	}
	cmds := &fakeCommands{
		commands: map[string]*storage.Command{
			"ABCUUID": {
				UUID: "ABCUUID", RequestType: "SecurityInfo", CreatedAt: testNow,
				Raw: readTestdata(t, "nanocmd-SecurityInfo.command.plist"),
				Targets: []storage.CommandTarget{
					{EnrollmentID: "UDID-A", Status: "Acknowledged", DeliveredAt: testNow, UpdatedAt: testNow,
						Result: readTestdata(t, "nanocmd-SecurityInfo.macos.plist")},
					{EnrollmentID: "UDID-B", Status: storage.StatusPending, UpdatedAt: testNow},
				},
			},
			"FRESH": {UUID: "FRESH", RequestType: "SecurityInfo", CreatedAt: testNow,
				Raw: readTestdata(t, "nanocmd-SecurityInfo.command.plist")},
		},
		queues: map[string][]storage.QueueItem{
			"UDID-B": {{CommandUUID: "ABCUUID", RequestType: "SecurityInfo", Status: storage.StatusPending,
				CreatedAt: testNow}},
		},
		cancellable: map[string]int{"ABCUUID": 0, "FRESH": 2},
	}
	keys := &fakeKeys{hashes: map[string]bool{hex.EncodeToString(HashKey(testKey)): true}}
	logs := new(bytes.Buffer)
	e := &env{store: store, cmds: cmds, keys: keys, enq: &fakeEnqueuer{store: store}, logs: logs}
	opts = append([]Option{
		WithClock(func() time.Time { return testNow }),
		WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}, opts...)
	e.api = New(store, cmds, keys, e.enq, opts...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	return e
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// request returns an authenticated request; contentType is set when not empty.
func request(method, target, contentType string, body []byte) *http.Request {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+testKey)
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

func (e *env) serve(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.api.Handler().ServeHTTP(rec, r)
	return rec
}

func (e *env) get(target string) *httptest.ResponseRecorder {
	return e.serve(request(http.MethodGet, target, "", nil))
}

// decode checks the answer is JSON with the status, and decodes it.
func decode[T any](t *testing.T, rec *httptest.ResponseRecorder, status int) T {
	t.Helper()
	var v T
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != mediaJSON {
		t.Fatalf("Content-Type = %q, want %q", ct, mediaJSON)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decoding %s: %v", rec.Body, err)
	}
	return v
}

// wantError checks an error answer: the status, and a JSON {"error"} that
// says something.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int) string {
	t.Helper()
	body := decode[map[string]string](t, rec, status)
	if body["error"] == "" || len(body) != 1 {
		t.Fatalf("error body = %s, want {\"error\": \"...\"}", rec.Body)
	}
	return body["error"]
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name   string
		path   string
		header string // Authorization; "" sends none
		want   int
	}{
		{"missing", "/api/v1/devices", "", http.StatusUnauthorized},
		{"wrong key", "/api/v1/devices", "Bearer bramley_wrong", http.StatusUnauthorized},
		{"wrong scheme", "/api/v1/devices", "Basic " + testKey, http.StatusUnauthorized},
		{"empty token", "/api/v1/devices", "Bearer ", http.StatusUnauthorized},
		{"no scheme", "/api/v1/devices", testKey, http.StatusUnauthorized},
		{"right key", "/api/v1/devices", "Bearer " + testKey, http.StatusOK},
		{"scheme in lower case", "/api/v1/devices", "bearer " + testKey, http.StatusOK},
		{"every route needs it", "/api/v1/commands/ABCUUID", "", http.StatusUnauthorized},
		{"unknown routes need it too", "/api/v1/nope", "", http.StatusUnauthorized},
		{"openapi.yaml is public", "/api/v1/openapi.yaml", "", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			r := httptest.NewRequest(http.MethodGet, tt.path, nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			rec := e.serve(r)
			if rec.Code != tt.want {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.want, rec.Body)
			}
			if tt.want == http.StatusUnauthorized {
				wantError(t, rec, http.StatusUnauthorized)
				if got := rec.Header().Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("WWW-Authenticate = %q, want Bearer", got)
				}
			}
		})
	}
}

func TestAuthKeysStayHashedAndUnlogged(t *testing.T) {
	e := newEnv(t)
	const wrong = "bramley_not-a-real-key"
	for _, key := range []string{testKey, wrong} {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/devices", nil)
		r.Header.Set("Authorization", "Bearer "+key)
		e.serve(r)
	}
	if want := [][]byte{HashKey(testKey), HashKey(wrong)}; !slices.EqualFunc(e.keys.asked, want, bytes.Equal) {
		t.Errorf("KeyStore was asked %x, want the keys' SHA-256 %x", e.keys.asked, want)
	}
	for _, key := range []string{testKey, wrong} {
		if strings.Contains(e.logs.String(), key) {
			t.Errorf("log contains key %q:\n%s", key, e.logs)
		}
	}
}

func TestAuthStoreFailure(t *testing.T) {
	e := newEnv(t)
	e.keys.err = errors.New("key table unreadable")
	msg := wantError(t, e.get("/api/v1/devices"), http.StatusInternalServerError)
	if msg != "internal error" {
		t.Errorf("error = %q, want the generic message", msg)
	}
	if !strings.Contains(e.logs.String(), "key table unreadable") {
		t.Errorf("log lacks the cause:\n%s", e.logs)
	}
}

func TestInternalErrorsStayInTheLog(t *testing.T) {
	e := newEnv(t)
	e.store.err = errors.New("disk on fire")
	msg := wantError(t, e.get("/api/v1/devices/UDID-A"), http.StatusInternalServerError)
	if strings.Contains(msg, "disk") {
		t.Errorf("error %q leaks the cause", msg)
	}
	if !strings.Contains(e.logs.String(), "disk on fire") || !strings.Contains(e.logs.String(), "http_status=500") {
		t.Errorf("log lacks the cause:\n%s", e.logs)
	}
}

func TestUnknownRoutes(t *testing.T) {
	tests := []struct {
		name, method, path string
		want               int
		allow              string
	}{
		{"unknown path", http.MethodGet, "/api/v1/nope", http.StatusNotFound, ""},
		{"unknown subpath", http.MethodGet, "/api/v1/devices/UDID-A/nope", http.StatusNotFound, ""},
		{"wrong method on a collection", http.MethodPut, "/api/v1/devices", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"wrong method on an item", http.MethodDelete, "/api/v1/devices/UDID-A", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"wrong method on commands", http.MethodGet, "/api/v1/commands", http.StatusMethodNotAllowed, "POST"},
		{"two methods allowed", http.MethodPut, "/api/v1/commands/ABCUUID", http.StatusMethodNotAllowed, "GET, HEAD, DELETE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newEnv(t).serve(request(tt.method, tt.path, "", nil))
			wantError(t, rec, tt.want)
			if got := rec.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestOpenAPI(t *testing.T) {
	e := newEnv(t)
	rec := e.serve(httptest.NewRequest(http.MethodGet, "/api/v1/openapi.yaml", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("Content-Type = %q", ct)
	}
	doc := rec.Body.Bytes()
	if !bytes.HasPrefix(doc, []byte("openapi: 3.")) {
		t.Fatalf("document does not start with openapi: 3.x:\n%.80s", doc)
	}
	if bytes.Contains(doc, []byte("\t")) {
		t.Error("document contains tabs, which YAML forbids for indentation")
	}
	documented := operations(t, doc)
	var routed []string
	for _, rt := range e.api.routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		routed = append(routed, method+" "+strings.TrimPrefix(path, prefix))
	}
	slices.Sort(routed)
	if !slices.Equal(documented, routed) {
		t.Errorf("openapi.yaml documents\n  %s\nbut the routes are\n  %s",
			strings.Join(documented, "\n  "), strings.Join(routed, "\n  "))
	}
}

// operations lists "METHOD /path" for every operation under paths: in an
// OpenAPI document indented by two spaces, which is how openapi.yaml is
// written; it is no YAML parser, and does not need to be one.
func operations(t *testing.T, doc []byte) []string {
	t.Helper()
	pathLine := regexp.MustCompile(`^  (/\S*):\s*$`)
	opLine := regexp.MustCompile(`^    (get|put|post|delete|patch|head|options):\s*$`)
	var ops []string
	inPaths, path := false, ""
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		line := sc.Text()
		if line != "" && line[0] != ' ' && line[0] != '#' {
			inPaths = line == "paths:"
			continue
		}
		if !inPaths {
			continue
		}
		if m := pathLine.FindStringSubmatch(line); m != nil {
			path = m[1]
		} else if m := opLine.FindStringSubmatch(line); m != nil && path != "" {
			ops = append(ops, strings.ToUpper(m[1])+" "+path)
		}
	}
	if len(ops) == 0 {
		t.Fatal("no operations found under paths:")
	}
	slices.Sort(ops)
	return ops
}

func TestHashKey(t *testing.T) {
	want := sha256.Sum256([]byte("bramley_abc"))
	if got := HashKey("bramley_abc"); !bytes.Equal(got, want[:]) {
		t.Errorf("HashKey = %x, want %x", got, want)
	}
}

func TestNewKey(t *testing.T) {
	a, b := NewKey(), NewKey()
	if a == b {
		t.Fatal("two keys are equal")
	}
	for _, k := range []string{a, b} {
		rest, ok := strings.CutPrefix(k, "bramley_")
		if !ok {
			t.Fatalf("key %q lacks the bramley_ prefix", k)
		}
		raw, err := base64.RawURLEncoding.DecodeString(rest)
		if err != nil || len(raw) < 32 {
			t.Fatalf("key %q: %d random bytes, err %v; want 32 in base64url", k, len(raw), err)
		}
	}
	// A fresh key works once its hash is stored.
	e := newEnv(t)
	if err := e.keys.CreateAPIKey(t.Context(), HashKey(a), "first", testNow); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/api/v1/devices", nil)
	r.Header.Set("Authorization", "Bearer "+a)
	if rec := e.serve(r); rec.Code != http.StatusOK {
		t.Errorf("status with a new key = %d", rec.Code)
	}
}
