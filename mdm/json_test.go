package mdm

import (
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
)

// miniProfile is a minimal .mobileconfig, enough to pass the "looks like a
// profile" check.
const miniProfile = `<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>PayloadIdentifier</key><string>com.example.test</string></dict></plist>`

func TestCommandFromJSON(t *testing.T) {
	profileB64 := base64.StdEncoding.EncodeToString([]byte(miniProfile))
	tests := []struct {
		name string
		json string
		want map[string]any // the Command dictionary, RequestType included
	}{
		{"DeviceInformation", `{"request_type":"DeviceInformation","queries":["UDID","Model"]}`,
			map[string]any{"RequestType": "DeviceInformation", "Queries": []any{"UDID", "Model"}}},
		{"DeviceInformation generic form", `{"request_type":"DeviceInformation","payload":{"Queries":["UDID"]}}`,
			map[string]any{"RequestType": "DeviceInformation", "Queries": []any{"UDID"}}},
		{"ProfileList", `{"request_type":"ProfileList","managed_only":true}`,
			map[string]any{"RequestType": "ProfileList", "ManagedOnly": true}},
		// false is Apple's default, so it is left out.
		{"ProfileList explicit false", `{"request_type":"ProfileList","managed_only":false}`,
			map[string]any{"RequestType": "ProfileList"}},
		{"InstallProfile", `{"request_type":"InstallProfile","profile":"` + profileB64 + `"}`,
			map[string]any{"RequestType": "InstallProfile", "Payload": []byte(miniProfile)}},
		{"RemoveProfile", `{"request_type":"RemoveProfile","identifier":"com.example.test"}`,
			map[string]any{"RequestType": "RemoveProfile", "Identifier": "com.example.test"}},
		{"InstalledApplicationList", `{"request_type":"InstalledApplicationList","identifiers":["com.apple.Pages"],"managed_apps_only":true}`,
			map[string]any{"RequestType": "InstalledApplicationList", "Identifiers": []any{"com.apple.Pages"}, "ManagedAppsOnly": true}},
		{"SecurityInfo", `{"request_type":"SecurityInfo"}`, map[string]any{"RequestType": "SecurityInfo"}},
		{"CertificateList", `{"request_type":"CertificateList","managed_only":true}`,
			map[string]any{"RequestType": "CertificateList", "ManagedOnly": true}},
		{"RestartDevice", `{"request_type":"RestartDevice","notify_user":true}`,
			map[string]any{"RequestType": "RestartDevice", "NotifyUser": true}},
		{"DeviceLock", `{"request_type":"DeviceLock","pin":"012345","message":"Call IT","phone_number":"+1 555 0100"}`,
			map[string]any{"RequestType": "DeviceLock", "PIN": "012345", "Message": "Call IT", "PhoneNumber": "+1 555 0100"}},
		{"EraseDevice", `{"request_type":"EraseDevice","pin":"123456","preserve_data_plan":true,"disallow_proximity_setup":true,"obliteration_behavior":"DoNotObliterate"}`,
			map[string]any{"RequestType": "EraseDevice", "PIN": "123456", "PreserveDataPlan": true, "DisallowProximitySetup": true, "ObliterationBehavior": "DoNotObliterate"}},
		{"EraseDevice typed and payload", `{"request_type":"EraseDevice","preserve_data_plan":true,"payload":{"ReturnToService":{"Enabled":true}}}`,
			map[string]any{"RequestType": "EraseDevice", "PreserveDataPlan": true, "ReturnToService": map[string]any{"Enabled": true}}},
		{"DeviceLock PIN in payload", `{"request_type":"DeviceLock","payload":{"PIN":"654321"}}`,
			map[string]any{"RequestType": "DeviceLock", "PIN": "654321"}},
		// JSON has one number type; the plist gets the one the value reads
		// as (the plist decoder returns a non-negative <integer> as uint64).
		{"generic numbers", `{"request_type":"Settings","payload":{"Settings":[{"Item":"MaximumResidentUsers","MaximumResidentUsers":4,"Ratio":0.5,"Big":18446744073709551615}]}}`,
			map[string]any{"RequestType": "Settings", "Settings": []any{map[string]any{
				"Item": "MaximumResidentUsers", "MaximumResidentUsers": uint64(4), "Ratio": 0.5, "Big": uint64(18446744073709551615)}}}},
		{"generic without payload", `{"request_type":"DeviceConfigured"}`, map[string]any{"RequestType": "DeviceConfigured"}},
		{"payload null", `{"request_type":"DeviceConfigured","payload":null}`, map[string]any{"RequestType": "DeviceConfigured"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := CommandFromJSON([]byte(tt.json))
			if err != nil {
				t.Fatalf("CommandFromJSON: %v", err)
			}
			env := commandDict(t, cmd.Raw)
			if env["CommandUUID"] != cmd.CommandUUID || !uuidPattern.MatchString(cmd.CommandUUID) {
				t.Errorf("CommandUUID %q, plist says %v", cmd.CommandUUID, env["CommandUUID"])
			}
			if got := env["Command"]; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Command = %#v\nwant %#v", got, tt.want)
			}
			if cmd.RequestType != tt.want["RequestType"] {
				t.Errorf("RequestType = %q", cmd.RequestType)
			}
			// What the API accepts, the raw-plist path accepts too.
			if again, err := DecodeCommand(cmd.Raw); err != nil || again.CommandUUID != cmd.CommandUUID {
				t.Errorf("DecodeCommand(Raw) = %v, %v", again, err)
			}
		})
	}
}

// TestCommandFromJSONGolden pins the exact bytes sent for each typed
// command, so a change of the plist encoder or of a key shows up in review.
func TestCommandFromJSONGolden(t *testing.T) {
	profileB64 := base64.StdEncoding.EncodeToString([]byte(miniProfile))
	for rt, fields := range map[string]string{
		"DeviceInformation":        `"queries":["UDID","SerialNumber","OSVersion"]`,
		"ProfileList":              `"managed_only":true`,
		"InstallProfile":           `"profile":"` + profileB64 + `"`,
		"RemoveProfile":            `"identifier":"com.example.test"`,
		"InstalledApplicationList": `"identifiers":["com.apple.Pages","com.apple.Keynote"],"managed_apps_only":true`,
		"SecurityInfo":             `"payload":{}`,
		"CertificateList":          `"managed_only":true`,
		"RestartDevice":            `"notify_user":true`,
		"DeviceLock":               `"pin":"123456","message":"Call IT","phone_number":"+1 555 0100"`,
		"EraseDevice":              `"pin":"123456","preserve_data_plan":true,"disallow_proximity_setup":true`,
	} {
		t.Run(rt, func(t *testing.T) {
			cmd, err := CommandFromJSON([]byte(`{"request_type":"` + rt + `","command_uuid":"GOLDEN-` + rt + `",` + fields + `}`))
			if err != nil {
				t.Fatal(err)
			}
			if cmd.CommandUUID != "GOLDEN-"+rt {
				t.Errorf("CommandUUID = %q", cmd.CommandUUID)
			}
			golden(t, "CommandFromJSON."+rt+".plist", cmd.Raw)
		})
	}
}

func TestCommandFromJSONErrors(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		wantErr string
	}{
		{"not JSON", `request_type=SecurityInfo`, "decoding command JSON"},
		{"array", `[]`, "decoding command JSON"},
		{"null", `null`, "must be an object"},
		{"no request_type", `{"payload":{}}`, "request_type is required"},
		{"request_type not a string", `{"request_type":5}`, "request_type must be a string"},
		{"unknown request_type", `{"request_type":"MakeCoffee"}`, `unknown request_type "MakeCoffee"`},
		{"command_uuid not a string", `{"request_type":"SecurityInfo","command_uuid":1}`, "command_uuid must be a string"},
		{"command_uuid too long", `{"request_type":"SecurityInfo","command_uuid":"` + strings.Repeat("a", maxCommandUUID+1) + `"}`, "too long"},
		{"payload not an object", `{"request_type":"SecurityInfo","payload":[1]}`, "payload must be an object"},
		{"payload with null", `{"request_type":"Settings","payload":{"Settings":[{"Item":null}]}}`, "payload.Settings[0].Item is null"},
		{"payload number out of range", `{"request_type":"Settings","payload":{"X":1e400}}`, "out of range"},
		{"unknown typed field", `{"request_type":"DeviceLock","PIN":"123456"}`, `unknown field "PIN" for DeviceLock`},
		{"typed field of another command", `{"request_type":"ProfileList","queries":["UDID"]}`, `unknown field "queries" for ProfileList`},
		{"field on a generic command", `{"request_type":"Settings","settings":[]}`, `unknown field "settings": Settings takes only`},
		{"typed and payload set one key", `{"request_type":"DeviceLock","pin":"123456","payload":{"PIN":"123456"}}`, "pin and payload.PIN set the same key"},
		{"typed field of the wrong JSON type", `{"request_type":"RestartDevice","notify_user":"yes"}`, "notify_user:"},
		{"payload key of the wrong plist type", `{"request_type":"RestartDevice","payload":{"NotifyUser":"yes"}}`, "NotifyUser must be <boolean>, not <string>"},
		{"queries missing", `{"request_type":"DeviceInformation"}`, "queries (Queries) is required"},
		{"queries empty", `{"request_type":"DeviceInformation","queries":[]}`, "queries (Queries) is required"},
		{"queries with an empty name", `{"request_type":"DeviceInformation","queries":["UDID",""]}`, "empty string"},
		{"queries not strings", `{"request_type":"DeviceInformation","payload":{"Queries":[1]}}`, "array of <string>, not of <integer>"},
		{"profile missing", `{"request_type":"InstallProfile"}`, "profile (Payload) is required"},
		{"profile empty", `{"request_type":"InstallProfile","profile":""}`, "profile (Payload) is required"},
		{"profile not base64", `{"request_type":"InstallProfile","profile":"<plist>"}`, "profile:"},
		{"profile not a profile", `{"request_type":"InstallProfile","profile":"aGVsbG8="}`, "neither a plist"},
		{"profile as a payload string", `{"request_type":"InstallProfile","payload":{"Payload":"PD94"}}`, "Payload must be <data>, not <string>"},
		{"identifier missing", `{"request_type":"RemoveProfile","identifier":""}`, "identifier (Identifier) is required"},
		{"identifiers not strings", `{"request_type":"InstalledApplicationList","identifiers":[1]}`, "identifiers:"},
		{"lock PIN too short", `{"request_type":"DeviceLock","pin":"12345"}`, "6 digits"},
		{"lock PIN too long", `{"request_type":"DeviceLock","pin":"1234567"}`, "6 digits"},
		{"lock PIN not digits", `{"request_type":"DeviceLock","pin":"12345a"}`, "6 digits"},
		{"lock PIN full-width digits", `{"request_type":"DeviceLock","pin":"１２３４５６"}`, "6 digits"},
		{"lock PIN in payload", `{"request_type":"DeviceLock","payload":{"PIN":"abc"}}`, "6 digits"},
		{"erase PIN", `{"request_type":"EraseDevice","pin":"1"}`, "6 digits"},
		{"erase PIN as a number", `{"request_type":"EraseDevice","pin":123456}`, "pin:"},
		{"obliteration behaviour", `{"request_type":"EraseDevice","obliteration_behavior":"Sometimes"}`, "not one of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := CommandFromJSON([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("CommandFromJSON = %v, %v; want an error mentioning %q", cmd, err, tt.wantErr)
			}
		})
	}
}
