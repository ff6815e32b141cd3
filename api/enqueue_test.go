package api

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/queue"
)

// commandDict returns the Command dictionary of a command plist.
func commandDict(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var env struct {
		CommandUUID string
		Command     map[string]any
	}
	if err := plist.Unmarshal(raw, &env); err != nil {
		t.Fatalf("command plist does not decode: %v\n%s", err, raw)
	}
	return env.Command
}

func TestEnqueueForDevice(t *testing.T) {
	fixture := readTestdata(t, "nanocmd-SecurityInfo.command.plist")
	tests := []struct {
		name        string
		id          string // enrollment in the path; UDID-A when empty
		query       string
		contentType string
		body        string
		want        int
		// check looks at the one Enqueue call of a 201.
		check func(t *testing.T, c enqueued, uuid string)
	}{
		{
			name: "generic JSON", contentType: mediaJSON,
			body: `{"request_type":"DeviceInformation","payload":{"Queries":["DeviceName"]}}`,
			want: http.StatusCreated,
			check: func(t *testing.T, c enqueued, uuid string) {
				cmd := commandDict(t, c.cmd.Raw)
				if cmd["RequestType"] != "DeviceInformation" || !reflect.DeepEqual(cmd["Queries"], []any{"DeviceName"}) {
					t.Errorf("command = %v", cmd)
				}
				if c.opts != (queue.EnqueueOptions{}) {
					t.Errorf("options = %+v, want defaults", c.opts)
				}
			},
		},
		{
			name: "typed JSON", contentType: mediaJSON,
			body: `{"request_type":"DeviceInformation","queries":["DeviceName"]}`,
			want: http.StatusCreated,
			check: func(t *testing.T, c enqueued, _ string) {
				if q := commandDict(t, c.cmd.Raw)["Queries"]; !reflect.DeepEqual(q, []any{"DeviceName"}) {
					t.Errorf("Queries = %v, want [DeviceName]", q)
				}
			},
		},
		{
			name: "JSON options", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","priority":5,"ttl":"24h","no_push":true}`,
			want: http.StatusCreated,
			check: func(t *testing.T, c enqueued, _ string) {
				if want := (queue.EnqueueOptions{Priority: 5, TTL: 24 * time.Hour, NoPush: true}); c.opts != want {
					t.Errorf("options = %+v, want %+v", c.opts, want)
				}
				// The options are the API's: they must not reach the device.
				for k := range commandDict(t, c.cmd.Raw) {
					if k != "RequestType" {
						t.Errorf("command carries %q", k)
					}
				}
			},
		},
		{
			name: "ttl in seconds", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","ttl":3600,"priority":-2}`,
			want: http.StatusCreated,
			check: func(t *testing.T, c enqueued, _ string) {
				if want := (queue.EnqueueOptions{Priority: -2, TTL: time.Hour}); c.opts != want {
					t.Errorf("options = %+v, want %+v", c.opts, want)
				}
			},
		},
		{
			name: "ttl in seconds as a string", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","ttl":"60"}`,
			want: http.StatusCreated,
			check: func(t *testing.T, c enqueued, _ string) {
				if c.opts.TTL != time.Minute {
					t.Errorf("TTL = %v, want 1m", c.opts.TTL)
				}
			},
		},
		{
			name: "chosen command_uuid", contentType: mediaJSON + "; charset=utf-8",
			body: `{"request_type":"SecurityInfo","command_uuid":"MY-UUID"}`,
			want: http.StatusCreated,
			check: func(t *testing.T, c enqueued, uuid string) {
				if uuid != "MY-UUID" || c.cmd.CommandUUID != "MY-UUID" {
					t.Errorf("uuid = %q, command's %q, want MY-UUID", uuid, c.cmd.CommandUUID)
				}
			},
		},
		{
			name: "raw plist", contentType: mediaPlist, body: string(fixture),
			want: http.StatusCreated,
			check: func(t *testing.T, c enqueued, uuid string) {
				if uuid != "ABCUUID" || c.cmd.RequestType != "SecurityInfo" || !bytes.Equal(c.cmd.Raw, fixture) {
					t.Errorf("queued %q %s, want the fixture as it is", uuid, c.cmd.RequestType)
				}
			},
		},
		{
			name: "raw plist with query options", contentType: mediaPlist, body: string(fixture),
			query: "?priority=3&ttl=90m&no_push", want: http.StatusCreated,
			check: func(t *testing.T, c enqueued, _ string) {
				if want := (queue.EnqueueOptions{Priority: 3, TTL: 90 * time.Minute, NoPush: true}); c.opts != want {
					t.Errorf("options = %+v, want %+v", c.opts, want)
				}
			},
		},
		{
			name: "raw plist with no_push=false", contentType: mediaPlist, body: string(fixture),
			query: "?no_push=false&ttl=120", want: http.StatusCreated,
			check: func(t *testing.T, c enqueued, _ string) {
				if want := (queue.EnqueueOptions{TTL: 2 * time.Minute}); c.opts != want {
					t.Errorf("options = %+v, want %+v", c.opts, want)
				}
			},
		},
		{
			name: "user channel", id: "UDID-A:501", contentType: mediaJSON,
			body: `{"request_type":"DeviceInformation","queries":["DeviceName"]}`, want: http.StatusCreated,
			check: func(t *testing.T, c enqueued, _ string) {
				if !slices.Equal(c.ids, []string{"UDID-A:501"}) {
					t.Errorf("targets = %v", c.ids)
				}
			},
		},
		{name: "device-only command on a user channel", id: "UDID-A:501", contentType: mediaJSON,
			body: `{"request_type":"AvailableOSUpdates"}`, want: http.StatusBadRequest},
		{name: "unknown device", id: "UDID-Z", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo"}`, want: http.StatusNotFound},
		{name: "known device, no enrollment", id: "UDID-C", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo"}`, want: http.StatusNotFound},
		{name: "malformed JSON", contentType: mediaJSON, body: `{"request_type":`, want: http.StatusBadRequest},
		{name: "JSON not an object", contentType: mediaJSON, body: `["SecurityInfo"]`, want: http.StatusBadRequest},
		{name: "empty JSON body", contentType: mediaJSON, body: ``, want: http.StatusBadRequest},
		{name: "no request_type", contentType: mediaJSON, body: `{"payload":{}}`, want: http.StatusBadRequest},
		{name: "unknown RequestType in JSON", contentType: mediaJSON,
			body: `{"request_type":"MakeCoffee"}`, want: http.StatusBadRequest},
		{name: "unknown RequestType in plist", contentType: mediaPlist,
			body: strings.Replace(string(fixture), "SecurityInfo", "MakeCoffee", 1), want: http.StatusBadRequest},
		{name: "malformed plist", contentType: mediaPlist, body: `<plist><dict><key>Command`, want: http.StatusBadRequest},
		{name: "plist without Command", contentType: mediaPlist,
			body: `<plist version="1.0"><dict><key>CommandUUID</key><string>X</string></dict></plist>`,
			want: http.StatusBadRequest},
		{name: "priority not an integer", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","priority":1.5}`, want: http.StatusBadRequest},
		{name: "priority out of range", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","priority":9999999999}`, want: http.StatusBadRequest},
		{name: "priority in the query not an integer", contentType: mediaPlist, body: string(fixture),
			query: "?priority=high", want: http.StatusBadRequest},
		{name: "ttl not a duration", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","ttl":"soon"}`, want: http.StatusBadRequest},
		{name: "ttl negative", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","ttl":-5}`, want: http.StatusBadRequest},
		{name: "ttl negative duration", contentType: mediaPlist, body: string(fixture),
			query: "?ttl=-1h", want: http.StatusBadRequest},
		{name: "ttl overflowing", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","ttl":99999999999999}`, want: http.StatusBadRequest},
		{name: "ttl fractional seconds", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","ttl":1.5}`, want: http.StatusBadRequest},
		{name: "no_push not a boolean", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","no_push":"yes"}`, want: http.StatusBadRequest},
		{name: "no_push in the query not a boolean", contentType: mediaPlist, body: string(fixture),
			query: "?no_push=maybe", want: http.StatusBadRequest},
		{name: "enrollment_ids where the path names it", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","enrollment_ids":["UDID-B"]}`, want: http.StatusBadRequest},
		{name: "enrollment_id query where the path names it", contentType: mediaPlist, body: string(fixture),
			query: "?enrollment_id=UDID-B", want: http.StatusBadRequest},
		{name: "JSON with query options", contentType: mediaJSON, body: `{"request_type":"SecurityInfo"}`,
			query: "?no_push=true", want: http.StatusBadRequest},
		{name: "command_uuid taken", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","command_uuid":"TAKEN"}`, want: http.StatusConflict},
		{name: "body over the cap", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","payload":{"X":"` + strings.Repeat("a", 1<<20) + `"}}`,
			want: http.StatusRequestEntityTooLarge},
		{name: "wrong content type", contentType: "text/plain", body: `{"request_type":"SecurityInfo"}`,
			want: http.StatusUnsupportedMediaType},
		{name: "no content type", body: `{"request_type":"SecurityInfo"}`, want: http.StatusUnsupportedMediaType},
		{name: "form content type", contentType: "application/x-www-form-urlencoded",
			body: `request_type=SecurityInfo`, want: http.StatusUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.enq.calls = []enqueued{queuedBefore("TAKEN")}
			id := tt.id
			if id == "" {
				id = "UDID-A"
			}
			rec := e.serve(request(http.MethodPost, "/api/v1/devices/"+id+"/commands"+tt.query,
				tt.contentType, []byte(tt.body)))
			calls := e.enq.calls[1:]
			if tt.want != http.StatusCreated {
				wantError(t, rec, tt.want)
				if len(calls) != 0 {
					t.Errorf("queued %d commands on a %d", len(calls), tt.want)
				}
				return
			}
			got := decode[map[string]string](t, rec, http.StatusCreated)
			if len(calls) != 1 {
				t.Fatalf("queued %d commands, want 1", len(calls))
			}
			c := calls[0]
			if got["command_uuid"] != c.cmd.CommandUUID || c.cmd.CommandUUID == "" {
				t.Errorf("answered %s for command %q", rec.Body, c.cmd.CommandUUID)
			}
			if loc := rec.Header().Get("Location"); loc != "/api/v1/commands/"+c.cmd.CommandUUID {
				t.Errorf("Location = %q", loc)
			}
			if !slices.Equal(c.ids, []string{id}) {
				t.Errorf("targets = %v, want [%s]", c.ids, id)
			}
			tt.check(t, c, got["command_uuid"])
		})
	}
}

// queuedBefore is a command already queued, so its UUID is taken.
func queuedBefore(uuid string) enqueued {
	return enqueued{cmd: &mdm.Command{CommandUUID: uuid, RequestType: "SecurityInfo"}, ids: []string{"UDID-B"}}
}

func TestEnqueueForMany(t *testing.T) {
	fixture := readTestdata(t, "nanocmd-SecurityInfo.command.plist")
	tests := []struct {
		name        string
		query       string
		contentType string
		body        string
		want        int
		wantIDs     []string
	}{
		{name: "JSON", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","enrollment_ids":["UDID-B","UDID-A","UDID-A:501","UDID-A"]}`,
			want: http.StatusCreated, wantIDs: []string{"UDID-A", "UDID-A:501", "UDID-B"}},
		{name: "typed JSON", contentType: mediaJSON,
			body: `{"request_type":"DeviceInformation","queries":["DeviceName"],"enrollment_ids":["UDID-B"]}`,
			want: http.StatusCreated, wantIDs: []string{"UDID-B"}},
		{name: "raw plist", contentType: mediaPlist, body: string(fixture),
			query: "?enrollment_id=UDID-B&enrollment_id=UDID-A&priority=1", want: http.StatusCreated,
			wantIDs: []string{"UDID-A", "UDID-B"}},
		{name: "no enrollment_ids", contentType: mediaJSON, body: `{"request_type":"SecurityInfo"}`,
			want: http.StatusBadRequest},
		{name: "empty enrollment_ids", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","enrollment_ids":[]}`, want: http.StatusBadRequest},
		{name: "an empty ID", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","enrollment_ids":["UDID-A",""]}`, want: http.StatusBadRequest},
		{name: "enrollment_ids not an array", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","enrollment_ids":"UDID-A"}`, want: http.StatusBadRequest},
		{name: "one unknown enrollment", contentType: mediaJSON,
			body: `{"request_type":"SecurityInfo","enrollment_ids":["UDID-A","UDID-Z"]}`, want: http.StatusNotFound},
		{name: "device-only command on a user channel", contentType: mediaJSON,
			body: `{"request_type":"AvailableOSUpdates","enrollment_ids":["UDID-A","UDID-A:501"]}`,
			want: http.StatusBadRequest},
		{name: "raw plist without enrollment_id", contentType: mediaPlist, body: string(fixture),
			want: http.StatusBadRequest},
		{name: "malformed plist", contentType: mediaPlist, body: "<plist", query: "?enrollment_id=UDID-A",
			want: http.StatusBadRequest},
		{name: "wrong content type", contentType: "application/xml", body: string(fixture),
			query: "?enrollment_id=UDID-A", want: http.StatusUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			rec := e.serve(request(http.MethodPost, "/api/v1/commands"+tt.query, tt.contentType, []byte(tt.body)))
			if tt.want != http.StatusCreated {
				wantError(t, rec, tt.want)
				if len(e.enq.calls) != 0 {
					t.Errorf("queued on a %d", tt.want)
				}
				return
			}
			got := decode[struct {
				CommandUUID   string   `json:"command_uuid"`
				EnrollmentIDs []string `json:"enrollment_ids"`
			}](t, rec, http.StatusCreated)
			if len(e.enq.calls) != 1 {
				t.Fatalf("queued %d commands, want 1", len(e.enq.calls))
			}
			c := e.enq.calls[0]
			if got.CommandUUID != c.cmd.CommandUUID || !slices.Equal(got.EnrollmentIDs, tt.wantIDs) ||
				!slices.Equal(c.ids, tt.wantIDs) {
				t.Errorf("answered %s, queued %s for %v; want targets %v", rec.Body, c.cmd.CommandUUID, c.ids, tt.wantIDs)
			}
		})
	}
}

func TestEnqueueSmallerCap(t *testing.T) {
	e := newEnv(t, WithMaxBody(64))
	body := `{"request_type":"SecurityInfo","payload":{"Padding":"` + strings.Repeat("x", 64) + `"}}`
	msg := wantError(t, e.serve(request(http.MethodPost, "/api/v1/devices/UDID-A/commands", mediaJSON, []byte(body))),
		http.StatusRequestEntityTooLarge)
	if !strings.Contains(msg, "64") {
		t.Errorf("error %q does not name the cap", msg)
	}
	rec := e.serve(request(http.MethodPost, "/api/v1/devices/UDID-A/commands", mediaJSON,
		[]byte(`{"request_type":"SecurityInfo"}`)))
	decode[map[string]string](t, rec, http.StatusCreated)
}

func TestEnqueueFailures(t *testing.T) {
	t.Run("queue fails", func(t *testing.T) {
		e := newEnv(t)
		e.enq.err = errors.New("queue table locked")
		msg := wantError(t, e.serve(request(http.MethodPost, "/api/v1/devices/UDID-A/commands", mediaJSON,
			[]byte(`{"request_type":"SecurityInfo","command_uuid":"U-1"}`))), http.StatusInternalServerError)
		if msg != "internal error" || !strings.Contains(e.logs.String(), "queue table locked") {
			t.Errorf("error %q; log:\n%s", msg, e.logs)
		}
	})
	t.Run("body read fails", func(t *testing.T) {
		e := newEnv(t)
		r := httptest.NewRequest(http.MethodPost, "/api/v1/devices/UDID-A/commands", errReader{})
		r.Header.Set("Authorization", "Bearer "+testKey)
		r.Header.Set("Content-Type", mediaJSON)
		wantError(t, e.serve(r), http.StatusBadRequest)
	})
}

// errReader fails mid-body, as a client hanging up does.
type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
