package mdm

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"
)

// seedCaptures adds every plist capture in testdata to the corpus: check-in
// and connect bodies alike, since a device may send either to either URL.
func seedCaptures(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.plist"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no captures in testdata: %v", err)
	}
	for _, file := range files {
		f.Add(readTestdata(f, filepath.Base(file)))
	}
	f.Add(checkinPlist(`<key>MessageType</key><string>TokenUpdate</string>` + tokenKeys + udidKey +
		`<key>UserID</key><string>` + SharedIPadUserID + `</string><key>UserShortName</key><string>a</string>`))
	f.Add(cyclicBinaryPlist)
	f.Add(resultPlist(udidKey + `<key>Status</key><string>Idle</string><key>X</key><real>nan</real>`))
}

func FuzzDecodeCheckin(f *testing.F) {
	seedCaptures(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		msg, err := DecodeCheckin(body)
		if err != nil {
			return
		}
		if !bytes.Equal(msg.Raw(), body) {
			t.Error("Raw() is not the body")
		}
		if err := msg.Identifiers().Validate(); err != nil {
			t.Errorf("decoded a message whose identifiers are invalid: %v", err)
		}
		if msg.Type() == "" {
			t.Error("decoded a message without a type")
		}
	})
}

func FuzzDecodeCommandResults(f *testing.F) {
	seedCaptures(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := DecodeCommandResults(body)
		if err != nil {
			return
		}
		if res.Status == "" || !bytes.Equal(res.Raw, body) {
			t.Errorf("Status %q, Raw kept: %v", res.Status, bytes.Equal(res.Raw, body))
		}
		// What the queue stores, the admin API must be able to show.
		m, err := ResultJSON(res.Raw)
		if err != nil {
			t.Fatalf("ResultJSON of a decoded result: %v", err)
		}
		if _, err := json.Marshal(m); err != nil {
			t.Fatalf("json.Marshal(ResultJSON): %v", err)
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	seedCaptures(f)
	f.Add([]byte(`<plist><dict><key>Command</key><dict><key>RequestType</key><string>DeviceLock</string><key>PIN</key><string>123456</string></dict></dict></plist>`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		cmd, err := DecodeCommand(raw)
		if err != nil {
			return
		}
		// Accepting is a fixed point: the plist sent is accepted again as is.
		again, err := DecodeCommand(cmd.Raw)
		if err != nil {
			t.Fatalf("DecodeCommand(Raw): %v", err)
		}
		if again.CommandUUID != cmd.CommandUUID || again.RequestType != cmd.RequestType || !bytes.Equal(again.Raw, cmd.Raw) {
			t.Errorf("second decode gave %s %s, first %s %s", again.CommandUUID, again.RequestType, cmd.CommandUUID, cmd.RequestType)
		}
	})
}

func FuzzCommandFromJSON(f *testing.F) {
	for _, s := range []string{
		`{"request_type":"DeviceInformation","queries":["UDID","Model"]}`,
		`{"request_type":"DeviceInformation","payload":{"Queries":["UDID"]}}`,
		`{"request_type":"InstallProfile","profile":"PD94bWw+"}`,
		`{"request_type":"InstalledApplicationList","identifiers":["a"],"managed_apps_only":true}`,
		`{"request_type":"DeviceLock","pin":"123456","message":"m","phone_number":"p"}`,
		`{"request_type":"EraseDevice","pin":"123456","preserve_data_plan":true,"disallow_proximity_setup":false,"obliteration_behavior":"Always"}`,
		`{"request_type":"RestartDevice","notify_user":true,"command_uuid":"X"}`,
		`{"request_type":"Settings","payload":{"Settings":[{"Item":"DeviceName","DeviceName":"x","N":1,"R":1.5,"B":true}]}}`,
		`{"request_type":"ProfileList","managed_only":true,"payload":{"X":[[{}]]}}`,
		`{"request_type":"RemoveProfile","identifier":"com.example"}`,
		`{"request_type":"SecurityInfo","command_uuid":"\u0001"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := CommandFromJSON(data)
		if err != nil {
			return
		}
		// Whatever the admin API accepts, the raw-plist path accepts too,
		// and the device sees the CommandUUID bramley stored.
		again, err := DecodeCommand(cmd.Raw)
		if err != nil {
			t.Fatalf("DecodeCommand(Raw): %v\n%s", err, cmd.Raw)
		}
		if again.CommandUUID != cmd.CommandUUID || again.RequestType != cmd.RequestType {
			t.Errorf("plist carries %q %q, command says %q %q", again.CommandUUID, again.RequestType, cmd.CommandUUID, cmd.RequestType)
		}
	})
}
