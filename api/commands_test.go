package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/storage"
)

// commandBody is GET /commands/{uuid} as a client reads it.
type commandBody struct {
	CommandUUID string         `json:"command_uuid"`
	RequestType string         `json:"request_type"`
	Command     map[string]any `json:"command"`
	Targets     []struct {
		EnrollmentID string         `json:"enrollment_id"`
		Status       string         `json:"status"`
		Result       map[string]any `json:"result"`
	} `json:"targets"`
}

func TestGetCommandJSON(t *testing.T) {
	tests := []struct {
		name        string
		query       string
		accept      string
		wantTargets []string
	}{
		{"all targets", "", "", []string{"UDID-A", "UDID-B"}},
		{"explicit JSON", "?format=json", mediaPlist, []string{"UDID-A", "UDID-B"}},
		{"one target", "?enrollment_id=UDID-A", "", []string{"UDID-A"}},
		{"browser Accept", "", "text/html,application/xhtml+xml,*/*;q=0.8", []string{"UDID-A", "UDID-B"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			r := request(http.MethodGet, "/api/v1/commands/ABCUUID"+tt.query, "", nil)
			if tt.accept != "" {
				r.Header.Set("Accept", tt.accept)
			}
			got := decode[commandBody](t, e.serve(r), http.StatusOK)
			if got.CommandUUID != "ABCUUID" || got.RequestType != "SecurityInfo" {
				t.Errorf("command %q %q", got.CommandUUID, got.RequestType)
			}
			if cmd, _ := got.Command["Command"].(map[string]any); cmd["RequestType"] != "SecurityInfo" {
				t.Errorf("command plist as JSON = %v", got.Command)
			}
			if len(got.Targets) != len(tt.wantTargets) {
				t.Fatalf("targets = %+v, want %v", got.Targets, tt.wantTargets)
			}
			for i, tg := range got.Targets {
				if tg.EnrollmentID != tt.wantTargets[i] {
					t.Errorf("target %d = %q, want %q", i, tg.EnrollmentID, tt.wantTargets[i])
				}
				switch tg.EnrollmentID {
				case "UDID-A":
					info, _ := tg.Result["SecurityInfo"].(map[string]any)
					if tg.Status != "Acknowledged" || tg.Result["Status"] != "Acknowledged" || info["FDE_Enabled"] != false {
						t.Errorf("UDID-A: status %q, result %v", tg.Status, tg.Result)
					}
				case "UDID-B":
					if tg.Status != storage.StatusPending || tg.Result != nil {
						t.Errorf("UDID-B: status %q, result %v", tg.Status, tg.Result)
					}
				}
			}
			if !e.cmds.now.Equal(testNow) {
				t.Errorf("store got time %v, want the API's clock", e.cmds.now)
			}
		})
	}
}

func TestGetCommandPlist(t *testing.T) {
	result := readTestdata(t, "nanocmd-SecurityInfo.macos.plist")
	command := readTestdata(t, "nanocmd-SecurityInfo.command.plist")
	tests := []struct {
		name   string
		query  string
		accept string
		want   int
		body   []byte
	}{
		{"result by query", "?format=plist&enrollment_id=UDID-A", "", http.StatusOK, result},
		{"result by Accept", "?enrollment_id=UDID-A", mediaPlist, http.StatusOK, result},
		{"result by Accept among others", "?enrollment_id=UDID-A", "application/json;q=0.5, " + mediaPlist, http.StatusOK, result},
		{"the command itself", "?format=plist", "", http.StatusOK, command},
		{"no result yet", "?format=plist&enrollment_id=UDID-B", "", http.StatusNotFound, nil},
		{"not a target", "?format=plist&enrollment_id=UDID-Z", "", http.StatusNotFound, nil},
		{"not a target, JSON", "?enrollment_id=UDID-A:501", "", http.StatusNotFound, nil},
		{"unknown format", "?format=xml", "", http.StatusBadRequest, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := request(http.MethodGet, "/api/v1/commands/ABCUUID"+tt.query, "", nil)
			if tt.accept != "" {
				r.Header.Set("Accept", tt.accept)
			}
			rec := newEnv(t).serve(r)
			if tt.want != http.StatusOK {
				wantError(t, rec, tt.want)
				return
			}
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != mediaPlist {
				t.Fatalf("status %d, Content-Type %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			if !bytes.Equal(rec.Body.Bytes(), tt.body) {
				t.Errorf("body is not the stored plist:\n%s", rec.Body)
			}
		})
	}
}

func TestGetCommandUnknown(t *testing.T) {
	for _, q := range []string{"", "?format=plist&enrollment_id=UDID-A"} {
		wantError(t, newEnv(t).get("/api/v1/commands/NOPE"+q), http.StatusNotFound)
	}
}

func TestGetCommandCorruptResult(t *testing.T) {
	e := newEnv(t)
	e.cmds.commands["ABCUUID"].Targets[0].Result = []byte("not a plist")
	got := decode[commandBody](t, e.get("/api/v1/commands/ABCUUID"), http.StatusOK)
	if got.Targets[0].Result != nil {
		t.Errorf("result = %v, want none", got.Targets[0].Result)
	}
	if log := e.logs.String(); !strings.Contains(log, "command_uuid=ABCUUID") || !strings.Contains(log, "enrollment_id=UDID-A") {
		t.Errorf("log does not name the command and enrollment:\n%s", log)
	}
}

func TestCancelCommand(t *testing.T) {
	tests := []struct {
		name string
		uuid string
		want int
	}{
		{"cancelled", "FRESH", http.StatusOK},
		{"every target delivered or answered", "ABCUUID", http.StatusConflict},
		{"unknown", "NOPE", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			rec := e.serve(request(http.MethodDelete, "/api/v1/commands/"+tt.uuid, "", nil))
			if tt.want != http.StatusOK {
				wantError(t, rec, tt.want)
				return
			}
			got := decode[map[string]json.RawMessage](t, rec, http.StatusOK)
			if string(got["command_uuid"]) != `"FRESH"` || string(got["cancelled"]) != "2" {
				t.Errorf("body = %s", rec.Body)
			}
			// Nothing is left: a second cancel conflicts.
			wantError(t, e.serve(request(http.MethodDelete, "/api/v1/commands/"+tt.uuid, "", nil)), http.StatusConflict)
		})
	}
}
