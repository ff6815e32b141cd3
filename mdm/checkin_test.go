package mdm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const nanomdmTopic = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestDecodeCheckinCaptures decodes the real check-in captures as
// ../shared/fixtures/INDEX.md (checkin/) says a server must.
func TestDecodeCheckinCaptures(t *testing.T) {
	type want struct {
		msgType      string
		udid         string
		topic        string
		serial       string
		deviceName   string
		token        string // hex
		pushMagic    string
		unlockToken  int    // length; 0 for none
		unlockPrefix string // the keybag's magic
	}
	tests := []struct {
		file string
		want want
	}{
		{"nanomdm-Authenticate.1.ipad-ios9.3.5.plist", want{
			// Old iOS: no DeviceName, Model or ModelName, and that is fine.
			msgType: MessageAuthenticate, udid: "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69",
			topic: nanomdmTopic, serial: "F5JM992LF193",
		}},
		{"nanomdm-Authenticate.2.imac-macos10.12.6.plist", want{
			// Carries a Challenge key nothing uses.
			msgType: MessageAuthenticate, udid: "66ADE930-5FDF-5EC4-8429-15640684C489",
			topic: nanomdmTopic, serial: "C02MT66KFLHH", deviceName: "Fruit",
		}},
		{"nanomdm-TokenUpdate.1.ipad-ios9.3.5.plist", want{
			msgType: MessageTokenUpdate, udid: "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69", topic: nanomdmTopic,
			token:     "47e8eec062c2f729ec1703c1b3e18f1971d85f00be76445d34080baa701b5f51",
			pushMagic: "CEFDF0BD-E342-4A27-8742-E930EA116B0A", unlockToken: 1288, unlockPrefix: "DATA",
		}},
		{"nanomdm-TokenUpdate.2.imac-macos10.12.6.plist", want{
			// macOS sends no UnlockToken.
			msgType: MessageTokenUpdate, udid: "66ADE930-5FDF-5EC4-8429-15640684C489", topic: nanomdmTopic,
			token:     "1ba7c90066c50f77689a24f3a425caf68a300f729e88e460a9416022d5d642cc",
			pushMagic: "888CEB39-BFFA-40F6-89FA-B60752EB63C2",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			body := readTestdata(t, tt.file)
			msg, err := DecodeCheckin(body)
			if err != nil {
				t.Fatalf("DecodeCheckin: %v", err)
			}
			if msg.Type() != tt.want.msgType {
				t.Errorf("Type() = %q, want %q", msg.Type(), tt.want.msgType)
			}
			id := msg.Identifiers()
			if id.UDID != tt.want.udid || id.ID() != tt.want.udid || id.IsUserChannel() {
				t.Errorf("identifiers %+v: ID() = %q, want the device channel of %q", id, id.ID(), tt.want.udid)
			}
			if !bytes.Equal(msg.Raw(), body) {
				t.Error("Raw() is not the body")
			}
			switch m := msg.(type) {
			case *Authenticate:
				if m.Topic != tt.want.topic || m.SerialNumber != tt.want.serial || m.DeviceName != tt.want.deviceName {
					t.Errorf("Topic, SerialNumber, DeviceName = %q, %q, %q; want %q, %q, %q",
						m.Topic, m.SerialNumber, m.DeviceName, tt.want.topic, tt.want.serial, tt.want.deviceName)
				}
			case *TokenUpdate:
				if m.Topic != tt.want.topic {
					t.Errorf("Topic = %q, want %q", m.Topic, tt.want.topic)
				}
				if got := hex.EncodeToString(m.Token); got != tt.want.token || len(m.Token) != 32 {
					t.Errorf("Token = %s (%d bytes), want %s (32 bytes)", got, len(m.Token), tt.want.token)
				}
				if m.PushMagic != tt.want.pushMagic {
					t.Errorf("PushMagic = %q, want %q", m.PushMagic, tt.want.pushMagic)
				}
				if len(m.UnlockToken) != tt.want.unlockToken || !bytes.HasPrefix(m.UnlockToken, []byte(tt.want.unlockPrefix)) {
					t.Errorf("UnlockToken: %d bytes starting %q, want %d starting %q",
						len(m.UnlockToken), m.UnlockToken[:min(4, len(m.UnlockToken))], tt.want.unlockToken, tt.want.unlockPrefix)
				}
				if m.AwaitingConfiguration {
					t.Error("AwaitingConfiguration = true, the capture says false")
				}
			default:
				t.Fatalf("decoded as %T", msg)
			}
		})
	}
}

// TestDecodeCheckinSanitizedTokenRejected pins a deliberate choice: the
// sanitized micromdm TokenUpdate carries Token "AAAA=", which is not
// base64. bramley refuses it (the check-in handler answers 400) rather than
// guess a token it would push to.
func TestDecodeCheckinSanitizedTokenRejected(t *testing.T) {
	_, err := DecodeCheckin(readTestdata(t, "micromdm-TokenUpdate.macos-10.11.sanitized.plist"))
	if err == nil || !strings.Contains(err.Error(), "base64") {
		t.Fatalf("DecodeCheckin = %v, want a base64 error", err)
	}
}

// checkinPlist wraps dictionary keys in a plist document.
func checkinPlist(keys string) []byte {
	return []byte(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>` + keys + `</dict></plist>`)
}

const (
	tokenKeys = `<key>Topic</key><string>com.apple.mgmt.External.x</string>` +
		`<key>Token</key><data>AQID</data><key>PushMagic</key><string>magic</string>`
	udidKey = `<key>UDID</key><string>DEV1</string>`
)

// TestDecodeCheckinChannels decodes user-channel check-ins to the
// enrollment IDs bramley keys them by.
func TestDecodeCheckinChannels(t *testing.T) {
	tests := []struct {
		name   string
		keys   string
		wantID string
		user   bool
	}{
		{"macOS user", `<key>MessageType</key><string>TokenUpdate</string>` + tokenKeys + udidKey +
			`<key>UserID</key><string>USER-GUID</string><key>UserShortName</key><string>alice</string><key>NotOnConsole</key><false/>`,
			"DEV1:USER-GUID", true},
		{"Shared iPad user", `<key>MessageType</key><string>TokenUpdate</string>` + tokenKeys + udidKey +
			`<key>UserID</key><string>` + SharedIPadUserID + `</string><key>UserShortName</key><string>bob@example.com</string>`,
			"DEV1:bob@example.com", true},
		{"User Enrollment device", `<key>MessageType</key><string>TokenUpdate</string>` + tokenKeys +
			`<key>EnrollmentID</key><string>ENR-1</string>`, "ENR-1", false},
		{"User Enrollment user", `<key>MessageType</key><string>TokenUpdate</string>` + tokenKeys +
			`<key>EnrollmentID</key><string>ENR-1</string><key>EnrollmentUserID</key><string>ENRUSER-1</string>`,
			"ENR-1:ENRUSER-1", true},
		{"CheckOut", `<key>MessageType</key><string>CheckOut</string>` + udidKey, "DEV1", false},
		{"UserAuthenticate", `<key>MessageType</key><string>UserAuthenticate</string>` + udidKey +
			`<key>UserID</key><string>NETUSER</string>`, "DEV1:NETUSER", true},
		{"SetBootstrapToken without token", `<key>MessageType</key><string>SetBootstrapToken</string>` + udidKey, "DEV1", false},
		{"GetBootstrapToken", `<key>MessageType</key><string>GetBootstrapToken</string>` + udidKey, "DEV1", false},
		{"DeclarativeManagement", `<key>MessageType</key><string>DeclarativeManagement</string>` + udidKey +
			`<key>Endpoint</key><string>tokens</string>`, "DEV1", false},
		{"GetToken", `<key>MessageType</key><string>GetToken</string>` + udidKey +
			`<key>TokenServiceType</key><string>com.apple.maid</string>`, "DEV1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := DecodeCheckin(checkinPlist(tt.keys))
			if err != nil {
				t.Fatalf("DecodeCheckin: %v", err)
			}
			id := msg.Identifiers()
			if id.ID() != tt.wantID || id.IsUserChannel() != tt.user {
				t.Errorf("ID() = %q, IsUserChannel() = %v; want %q, %v", id.ID(), id.IsUserChannel(), tt.wantID, tt.user)
			}
		})
	}
}

// TestDecodeCheckinErrors feeds bodies a device must get a 400 for.
func TestDecodeCheckinErrors(t *testing.T) {
	// Padded past depthCheckMin, since smaller bodies skip the check.
	deep := "<plist>" + strings.Repeat("<array>", maxPlistDepth+1) + strings.Repeat("</array>", maxPlistDepth+1) +
		"</plist><!--" + strings.Repeat(" ", depthCheckMin) + "-->"
	tests := []struct {
		name    string
		body    []byte
		wantErr string
		is      error
	}{
		{"empty body", nil, "decoding check-in plist", nil},
		{"not a plist", []byte("MessageType=Authenticate"), "decoding check-in plist", nil},
		{"JSON", []byte(`{"MessageType":"Authenticate"}`), "decoding check-in plist", nil},
		{"plist array", []byte(`<plist><array><string>Authenticate</string></array></plist>`), "decoding check-in plist", nil},
		{"binary plist", []byte("bplist00\xd1\x01\x02"), "binary", nil},
		{"too deep", []byte(deep), "deeper", nil},
		{"missing MessageType", checkinPlist(udidKey + `<key>Topic</key><string>t</string>`), "no MessageType", nil},
		{"MessageType not a string", checkinPlist(`<key>MessageType</key><integer>1</integer>` + udidKey), "decoding check-in plist", nil},
		{"unknown MessageType", checkinPlist(`<key>MessageType</key><string>Hello</string>` + udidKey), `"Hello"`, ErrUnknownMessageType},
		{"no UDID or EnrollmentID", checkinPlist(`<key>MessageType</key><string>CheckOut</string>`), "", ErrNoIdentifier},
		{"UDID with colon", checkinPlist(`<key>MessageType</key><string>CheckOut</string><key>UDID</key><string>A:B</string>`), "':'", nil},
		{"Authenticate without Topic", checkinPlist(`<key>MessageType</key><string>Authenticate</string>` + udidKey), "missing Topic", nil},
		{"Authenticate on a user channel", checkinPlist(`<key>MessageType</key><string>Authenticate</string>` + udidKey +
			`<key>Topic</key><string>t</string><key>UserID</key><string>U</string>`), "device channel only", nil},
		{"TokenUpdate without Token", checkinPlist(`<key>MessageType</key><string>TokenUpdate</string>` + udidKey +
			`<key>Topic</key><string>t</string><key>PushMagic</key><string>m</string>`), "missing Token", nil},
		{"TokenUpdate with empty Token", checkinPlist(`<key>MessageType</key><string>TokenUpdate</string>` + udidKey +
			`<key>Topic</key><string>t</string><key>Token</key><data></data><key>PushMagic</key><string>m</string>`), "missing Token", nil},
		{"TokenUpdate without PushMagic", checkinPlist(`<key>MessageType</key><string>TokenUpdate</string>` + udidKey +
			`<key>Topic</key><string>t</string><key>Token</key><data>AQID</data>`), "missing PushMagic", nil},
		{"TokenUpdate Token as string", checkinPlist(`<key>MessageType</key><string>TokenUpdate</string>` + udidKey +
			`<key>Topic</key><string>t</string><key>Token</key><string>AQID</string><key>PushMagic</key><string>m</string>`), "decoding TokenUpdate", nil},
		{"UserAuthenticate without UserID", checkinPlist(`<key>MessageType</key><string>UserAuthenticate</string>` + udidKey), "missing UserID", nil},
		{"DeclarativeManagement without Endpoint", checkinPlist(`<key>MessageType</key><string>DeclarativeManagement</string>` + udidKey), "missing Endpoint", nil},
		{"GetToken without TokenServiceType", checkinPlist(`<key>MessageType</key><string>GetToken</string>` + udidKey), "missing TokenServiceType", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := DecodeCheckin(tt.body)
			if err == nil {
				t.Fatalf("DecodeCheckin = %T, want an error", msg)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
		})
	}
}
