package mdm

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDecodeCommandResultsCaptures decodes the real command results as
// ../shared/fixtures/INDEX.md (connect/) says a server must.
func TestDecodeCommandResultsCaptures(t *testing.T) {
	tests := []struct {
		file        string
		commandUUID string
		status      string
		udid        string
		errorChain  []ErrorChainItem
	}{
		{"nanomdm-DeviceInformation.1.imac-macos10.12.6.plist", "76eda240-5488-4989-8339-f2ae160113c4", StatusAcknowledged, "66ADE930-5FDF-5EC4-8429-15640684C489", nil},
		// Placeholders from nanocmd: a CommandUUID that is not a UUID is still a CommandUUID.
		{"nanocmd-DeviceInformation.iphone-ios15.7.plist", "DevInfo001", StatusAcknowledged, "UDID001", nil},
		{"nanocmd-DeviceInformation.macbookpro11,3.plist", "53115671-3f45-49f5-b7cb-22ede8b8afdb", StatusAcknowledged, "AAABBBCCC111222333", nil},
		{"nanocmd-SecurityInfo.macos.plist", "53115671-3f45-49f5-b7cb-22ede8b8afdc", StatusAcknowledged, "AAABBBCCC111222333", nil},
		{"nanocmd-CertificateList.macos.plist", "CERT-LIST-01", StatusAcknowledged, "6362F867-FFF2-4EA6-905C-3C796DF4EF68", nil},
		{"nanocmd-Acknowledged.macos.plist", "D053EE3A-EE0E-4E82-87D2-BB3624186694", StatusAcknowledged, "6362F867-FFF2-4EA6-905C-3C796DF4EF68", nil},
		// The description starts with a space, and its <> arrive XML-escaped.
		{"nanocmd-Error-909.macos.plist", "D053EE3A-EE0E-4E82-87D2-BB3624186694", StatusError, "6362F867-FFF2-4EA6-905C-3C796DF4EF68",
			[]ErrorChainItem{{ErrorCode: -909, ErrorDomain: "NSOSStatusErrorDomain", LocalizedDescription: " <NSOSStatusErrorDomain:-909>"}}},
		{"micromdm-ProfileList.macos.plist", "1a82029c-4a30-46ca-9ca3-18a4daf5e3a9", StatusAcknowledged, "BC5E2DA4-7FB6-5E70-9928-4981680DAFBF", nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			body := readTestdata(t, tt.file)
			res, err := DecodeCommandResults(body)
			if err != nil {
				t.Fatalf("DecodeCommandResults: %v", err)
			}
			if res.CommandUUID != tt.commandUUID || res.Status != tt.status || res.UDID != tt.udid || res.ID() != tt.udid {
				t.Errorf("got %s %s from %s (ID %s); want %s %s from %s",
					res.CommandUUID, res.Status, res.UDID, res.ID(), tt.commandUUID, tt.status, tt.udid)
			}
			if !reflect.DeepEqual(res.ErrorChain, tt.errorChain) {
				t.Errorf("ErrorChain = %#v, want %#v", res.ErrorChain, tt.errorChain)
			}
			if !bytes.Equal(res.Raw, body) {
				t.Error("Raw is not the body")
			}
		})
	}
}

// TestCertificateListCapture checks the result keys a server stores: the
// certificate decodes as DER X.509 despite macOS naming it "?Error_-26276?"
// (its subject is empty).
func TestCertificateListCapture(t *testing.T) {
	var res struct {
		CertificateList []struct {
			CommonName string
			Data       []byte
			IsIdentity bool
		}
	}
	if err := unmarshalPlist(readTestdata(t, "nanocmd-CertificateList.macos.plist"), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.CertificateList) != 1 {
		t.Fatalf("%d certificates, want 1", len(res.CertificateList))
	}
	c := res.CertificateList[0]
	if c.CommonName != "?Error_-26276?" || !c.IsIdentity {
		t.Errorf("CommonName %q, IsIdentity %v; want ?Error_-26276?, true", c.CommonName, c.IsIdentity)
	}
	cert, err := x509.ParseCertificate(c.Data)
	if err != nil {
		t.Fatalf("Data is not a DER certificate: %v", err)
	}
	if cert.Subject.String() != "" || cert.Issuer.String() != "CN=ca,OU=SCEP CA,O=scep,C=US" {
		t.Errorf("subject %q issuer %q", cert.Subject, cert.Issuer)
	}
	if cert.SerialNumber.Cmp(big.NewInt(0x62)) != 0 {
		t.Errorf("serial %v, want 0x62", cert.SerialNumber)
	}
	if want := time.Date(2034, 4, 30, 17, 43, 31, 0, time.UTC); !cert.NotAfter.Equal(want) {
		t.Errorf("NotAfter %v, want %v", cert.NotAfter, want)
	}
}

// TestResultJSON pins the JSON the admin API shows for result captures:
// data as base64, nested dictionaries and arrays kept, empty strings and
// arrays kept.
func TestResultJSON(t *testing.T) {
	for _, file := range []string{
		"nanomdm-DeviceInformation.1.imac-macos10.12.6.plist",
		"nanocmd-DeviceInformation.iphone-ios15.7.plist",
		"nanocmd-DeviceInformation.macbookpro11,3.plist",
		"nanocmd-CertificateList.macos.plist",
		"nanocmd-SecurityInfo.macos.plist",
		"nanocmd-Error-909.macos.plist",
		"micromdm-ProfileList.macos.plist",
	} {
		t.Run(file, func(t *testing.T) {
			m, err := ResultJSON(readTestdata(t, file))
			if err != nil {
				t.Fatalf("ResultJSON: %v", err)
			}
			var out bytes.Buffer
			enc := json.NewEncoder(&out)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(m); err != nil {
				t.Fatalf("encoding JSON: %v", err)
			}
			golden(t, "ResultJSON."+strings.TrimSuffix(file, ".plist")+".json", out.Bytes())
		})
	}
}

func TestResultJSONNonFinite(t *testing.T) {
	m, err := ResultJSON(resultPlist(udidKey + `<key>Status</key><string>Idle</string>` +
		`<key>X</key><array><real>nan</real><real>-inf</real><real>1.5</real></array>`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(m["X"])
	if err != nil || string(out) != `["NaN","-Inf",1.5]` {
		t.Errorf("X = %s, %v", out, err)
	}
}

func TestResultJSONErrors(t *testing.T) {
	for name, body := range map[string]string{
		"not a plist": "hello",
		"array":       "<plist><array/></plist>",
		"binary":      "bplist00",
	} {
		t.Run(name, func(t *testing.T) {
			if m, err := ResultJSON([]byte(body)); err == nil {
				t.Errorf("ResultJSON = %v, want an error", m)
			}
		})
	}
}

// resultPlist wraps connect keys in a plist document.
func resultPlist(keys string) []byte {
	return []byte(`<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>` + keys + `</dict></plist>`)
}

func TestDecodeCommandResults(t *testing.T) {
	tests := []struct {
		name    string
		body    []byte
		wantErr string // "" for success
		wantID  string
	}{
		{"Idle without CommandUUID", resultPlist(udidKey + `<key>Status</key><string>Idle</string>`), "", "DEV1"},
		{"macOS user NeedSyncResponse", resultPlist(udidKey + `<key>UserID</key><string>U1</string>` +
			`<key>Status</key><string>Idle</string><key>NeedSyncResponse</key><true/>`), "", "DEV1:U1"},
		{"NotNow", resultPlist(udidKey + `<key>Status</key><string>NotNow</string><key>CommandUUID</key><string>C1</string>`), "", "DEV1"},
		{"CommandFormatError", resultPlist(udidKey + `<key>Status</key><string>CommandFormatError</string><key>CommandUUID</key><string>C1</string>`), "", "DEV1"},
		{"not a plist", []byte("Status=Idle"), "decoding command result plist", ""},
		{"plist array", []byte(`<plist><array/></plist>`), "decoding command result plist", ""},
		{"binary plist", []byte("bplist00"), "binary", ""},
		{"without Status", resultPlist(udidKey + `<key>CommandUUID</key><string>C1</string>`), "no Status", ""},
		{"unknown Status", resultPlist(udidKey + `<key>Status</key><string>Done</string><key>CommandUUID</key><string>C1</string>`), `unknown Status "Done"`, ""},
		{"Acknowledged without CommandUUID", resultPlist(udidKey + `<key>Status</key><string>Acknowledged</string>`), "no CommandUUID", ""},
		{"Error without CommandUUID", resultPlist(udidKey + `<key>Status</key><string>Error</string>`), "no CommandUUID", ""},
		{"NotNow without CommandUUID", resultPlist(udidKey + `<key>Status</key><string>NotNow</string>`), "no CommandUUID", ""},
		{"CommandUUID too long", resultPlist(udidKey + `<key>Status</key><string>Acknowledged</string><key>CommandUUID</key><string>` +
			strings.Repeat("A", maxCommandUUID+1) + `</string>`), "too long", ""},
		{"no identifier", resultPlist(`<key>Status</key><string>Idle</string>`), ErrNoIdentifier.Error(), ""},
		{"ErrorChain of the wrong type", resultPlist(udidKey + `<key>Status</key><string>Error</string><key>CommandUUID</key><string>C1</string>` +
			`<key>ErrorChain</key><string>oops</string>`), "decoding command result plist", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := DecodeCommandResults(tt.body)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DecodeCommandResults = %v, want an error mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeCommandResults: %v", err)
			}
			if res.ID() != tt.wantID {
				t.Errorf("ID() = %q, want %q", res.ID(), tt.wantID)
			}
		})
	}
}

// commandDict decodes a command plist into its envelope for comparisons
// that must not depend on formatting.
func commandDict(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var env map[string]any
	if err := unmarshalPlist(raw, &env); err != nil {
		t.Fatalf("decoding command plist: %v\n%s", err, raw)
	}
	return env
}

var uuidPattern = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$`)

func TestNewUUID(t *testing.T) {
	a, b := NewUUID(), NewUUID()
	if !uuidPattern.MatchString(a) || a == b {
		t.Errorf("NewUUID() = %q, %q; want two distinct upper-case version 4 UUIDs", a, b)
	}
}

// TestNewCommandGolden builds the SecurityInfo command nanocmd's tests
// hold as the plist a server sends, and compares the structures: the
// plist library's formatting is not part of the protocol.
func TestNewCommandGolden(t *testing.T) {
	cmd, err := NewCommand("ABCUUID", "SecurityInfo", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cmd.CommandUUID != "ABCUUID" || cmd.RequestType != "SecurityInfo" {
		t.Errorf("got %s %s", cmd.CommandUUID, cmd.RequestType)
	}
	want := commandDict(t, readTestdata(t, "nanocmd-SecurityInfo.command.plist"))
	if got := commandDict(t, cmd.Raw); !reflect.DeepEqual(got, want) {
		t.Errorf("NewCommand = %v, want %v", got, want)
	}
	golden(t, "NewCommand.SecurityInfo.plist", cmd.Raw)
}

func TestNewCommandErrors(t *testing.T) {
	tests := []struct {
		name        string
		requestType string
		payload     map[string]any
		wantErr     string
	}{
		{"unknown RequestType", "MakeCoffee", nil, `unknown RequestType "MakeCoffee"`},
		{"empty RequestType", "", nil, "unknown RequestType"},
		// The plist library panics on a nil inside a map.
		{"nil value", "Settings", map[string]any{"Settings": nil}, "cannot encode"},
		{"unsupported value", "Settings", map[string]any{"Settings": make(chan int)}, "unsupported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if cmd, err := NewCommand("", tt.requestType, tt.payload); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewCommand = %v, %v; want an error mentioning %q", cmd, err, tt.wantErr)
			}
		})
	}
}

func TestDecodeCommand(t *testing.T) {
	t.Run("capture", func(t *testing.T) {
		raw := readTestdata(t, "nanocmd-SecurityInfo.command.plist")
		cmd, err := DecodeCommand(raw)
		if err != nil {
			t.Fatal(err)
		}
		if cmd.CommandUUID != "ABCUUID" || cmd.RequestType != "SecurityInfo" || !bytes.Equal(cmd.Raw, raw) {
			t.Errorf("got %s %s, Raw changed: %v", cmd.CommandUUID, cmd.RequestType, !bytes.Equal(cmd.Raw, raw))
		}
	})
	t.Run("without CommandUUID", func(t *testing.T) {
		raw := []byte(`<plist><dict><key>Command</key><dict><key>RequestType</key><string>ProfileList</string>` +
			`<key>ManagedOnly</key><true/></dict></dict></plist>`)
		cmd, err := DecodeCommand(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !uuidPattern.MatchString(cmd.CommandUUID) {
			t.Errorf("CommandUUID = %q, want a fresh UUID", cmd.CommandUUID)
		}
		env := commandDict(t, cmd.Raw)
		want := map[string]any{"CommandUUID": cmd.CommandUUID, "Command": map[string]any{"RequestType": "ProfileList", "ManagedOnly": true}}
		if !reflect.DeepEqual(env, want) {
			t.Errorf("re-encoded command = %v, want %v", env, want)
		}
	})

	tests := []struct {
		name    string
		raw     string
		wantErr string
	}{
		{"not a plist", "RequestType=SecurityInfo", "decoding command plist"},
		{"binary plist", "bplist00", "binary"},
		{"no Command", `<plist><dict><key>CommandUUID</key><string>C</string></dict></plist>`, "no Command dictionary"},
		{"Command not a dictionary", `<plist><dict><key>Command</key><string>SecurityInfo</string></dict></plist>`, "no Command dictionary"},
		{"no RequestType", `<plist><dict><key>Command</key><dict/></dict></plist>`, "no RequestType"},
		{"unknown RequestType", `<plist><dict><key>Command</key><dict><key>RequestType</key><string>MakeCoffee</string></dict></dict></plist>`,
			`unknown RequestType "MakeCoffee"`},
		{"CommandUUID not a string", `<plist><dict><key>CommandUUID</key><integer>7</integer>` +
			`<key>Command</key><dict><key>RequestType</key><string>SecurityInfo</string></dict></dict></plist>`, "not a string"},
		{"CommandUUID too long", `<plist><dict><key>CommandUUID</key><string>` + strings.Repeat("x", maxCommandUUID+1) + `</string>` +
			`<key>Command</key><dict><key>RequestType</key><string>SecurityInfo</string></dict></dict></plist>`, "too long"},
		// Typed commands get the same checks as from JSON.
		{"DeviceInformation without Queries", `<plist><dict><key>Command</key><dict><key>RequestType</key><string>DeviceInformation</string></dict></dict></plist>`,
			"Queries"},
		{"DeviceLock with a short PIN", `<plist><dict><key>Command</key><dict><key>RequestType</key><string>DeviceLock</string>` +
			`<key>PIN</key><string>1234</string></dict></dict></plist>`, "6 digits"},
		{"InstallProfile with a string Payload", `<plist><dict><key>Command</key><dict><key>RequestType</key><string>InstallProfile</string>` +
			`<key>Payload</key><string>PD94</string></dict></dict></plist>`, "Payload must be <data>, not <string>"},
		{"DeviceInformation with a number query", `<plist><dict><key>Command</key><dict><key>RequestType</key><string>DeviceInformation</string>` +
			`<key>Queries</key><array><integer>1</integer></array></dict></dict></plist>`, "array of <string>, not of <integer>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := DecodeCommand([]byte(tt.raw))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("DecodeCommand = %v, %v; want an error mentioning %q", cmd, err, tt.wantErr)
			}
		})
	}
}
