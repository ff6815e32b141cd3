package mdm

import (
	"reflect"
	"strings"
	"testing"
)

// TestTypedConstructors builds each command the simulator and tests use
// and checks the Command dictionary a device receives.
func TestTypedConstructors(t *testing.T) {
	build := func(c *Command, err error) func() (*Command, error) {
		return func() (*Command, error) { return c, err }
	}
	tests := []struct {
		name string
		new  func() (*Command, error)
		want map[string]any
	}{
		{"DeviceInformation", build(NewDeviceInformation("UDID", "OSVersion")),
			map[string]any{"RequestType": "DeviceInformation", "Queries": []any{"UDID", "OSVersion"}}},
		{"ProfileList", build(NewProfileList(true)), map[string]any{"RequestType": "ProfileList", "ManagedOnly": true}},
		{"ProfileList all", build(NewProfileList(false)), map[string]any{"RequestType": "ProfileList"}},
		{"InstallProfile", build(NewInstallProfile([]byte(miniProfile))),
			map[string]any{"RequestType": "InstallProfile", "Payload": []byte(miniProfile)}},
		{"InstallProfile signed", build(NewInstallProfile([]byte{0x30, 0x82, 0x01})),
			map[string]any{"RequestType": "InstallProfile", "Payload": []byte{0x30, 0x82, 0x01}}},
		{"RemoveProfile", build(NewRemoveProfile("com.example.test")),
			map[string]any{"RequestType": "RemoveProfile", "Identifier": "com.example.test"}},
		{"InstalledApplicationList", build(NewInstalledApplicationList(true, "com.apple.Pages")),
			map[string]any{"RequestType": "InstalledApplicationList", "Identifiers": []any{"com.apple.Pages"}, "ManagedAppsOnly": true}},
		{"InstalledApplicationList all", build(NewInstalledApplicationList(false)),
			map[string]any{"RequestType": "InstalledApplicationList"}},
		{"SecurityInfo", build(NewSecurityInfo()), map[string]any{"RequestType": "SecurityInfo"}},
		{"CertificateList", build(NewCertificateList(true)), map[string]any{"RequestType": "CertificateList", "ManagedOnly": true}},
		{"RestartDevice", build(NewRestartDevice(true)), map[string]any{"RequestType": "RestartDevice", "NotifyUser": true}},
		{"DeviceLock", build(NewDeviceLock("123456", "Lost", "")),
			map[string]any{"RequestType": "DeviceLock", "PIN": "123456", "Message": "Lost"}},
		{"DeviceLock bare", build(NewDeviceLock("", "", "")), map[string]any{"RequestType": "DeviceLock"}},
		{"EraseDevice", build(NewEraseDevice("123456")), map[string]any{"RequestType": "EraseDevice", "PIN": "123456"}},
		{"EraseDevice typed", build(NewTypedCommand("", EraseDeviceCommand{PreserveDataPlan: true, ObliterationBehavior: "Always"})),
			map[string]any{"RequestType": "EraseDevice", "PreserveDataPlan": true, "ObliterationBehavior": "Always"}},
		{"RestartDevice kext", build(NewTypedCommand("", &RestartDeviceCommand{RebuildKernelCache: true, KextPaths: []string{"/Library/Extensions/x.kext"}})),
			map[string]any{"RequestType": "RestartDevice", "RebuildKernelCache": true, "KextPaths": []any{"/Library/Extensions/x.kext"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := tt.new()
			if err != nil {
				t.Fatal(err)
			}
			if !uuidPattern.MatchString(cmd.CommandUUID) || cmd.RequestType != tt.want["RequestType"] {
				t.Errorf("CommandUUID %q, RequestType %q", cmd.CommandUUID, cmd.RequestType)
			}
			if got := commandDict(t, cmd.Raw)["Command"]; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Command = %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestTypedConstructorErrors(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		wantErr string
	}{
		{"DeviceInformation without queries", second(NewDeviceInformation()), "queries (Queries) is required"},
		{"InstallProfile without a profile", second(NewInstallProfile(nil)), "profile (Payload) is required"},
		{"InstallProfile of base64 text", second(NewInstallProfile([]byte("PD94bWwg"))), "neither a plist"},
		{"RemoveProfile without identifier", second(NewRemoveProfile("")), "identifier (Identifier) is required"},
		{"InstalledApplicationList empty identifier", second(NewInstalledApplicationList(false, "")), "empty string"},
		{"DeviceLock PIN", second(NewDeviceLock("1234", "", "")), "6 digits"},
		{"EraseDevice PIN", second(NewEraseDevice("abcdef")), "6 digits"},
		{"EraseDevice obliteration", second(NewTypedCommand("", EraseDeviceCommand{ObliterationBehavior: "Never"})), "not one of"},
		{"nil payload", second(NewTypedCommand("", (*DeviceLockCommand)(nil))), "not a struct"},
		{"chosen UUID too long", second(NewTypedCommand(strings.Repeat("u", maxCommandUUID+1), SecurityInfoCommand{})), "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil || !strings.Contains(tt.err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one mentioning %q", tt.err, tt.wantErr)
			}
		})
	}
}

func second(_ *Command, err error) error { return err }
