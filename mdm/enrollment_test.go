package mdm

import (
	"errors"
	"testing"
)

// TestEnrollmentID pins how bramley names an enrollment from a request's
// identifiers ("apple-protocols.md" sections d and i).
func TestEnrollmentID(t *testing.T) {
	tests := []struct {
		name     string
		e        Enrollment
		id       string
		deviceID string
		user     bool
		err      error // from Validate; errAny for any error
	}{
		{"device channel", Enrollment{UDID: "66ADE930-5FDF-5EC4-8429-15640684C489"},
			"66ADE930-5FDF-5EC4-8429-15640684C489", "66ADE930-5FDF-5EC4-8429-15640684C489", false, nil},
		{"macOS user", Enrollment{UDID: "DEV", UserID: "A1B2-GUID", UserShortName: "alice", UserLongName: "Alice"},
			"DEV:A1B2-GUID", "DEV", true, nil},
		// A Shared iPad's UserID is the same for everyone: the short name
		// (the Managed Apple Account) tells users apart.
		{"Shared iPad user", Enrollment{UDID: "IPAD", UserID: SharedIPadUserID, UserShortName: "bob@example.com"},
			"IPAD:bob@example.com", "IPAD", true, nil},
		{"User Enrollment device", Enrollment{EnrollmentID: "ENR"}, "ENR", "ENR", false, nil},
		{"User Enrollment user", Enrollment{EnrollmentID: "ENR", EnrollmentUserID: "ENRUSER"}, "ENR:ENRUSER", "ENR", true, nil},
		{"UDID wins over EnrollmentID", Enrollment{UDID: "DEV", EnrollmentID: "ENR"}, "DEV", "DEV", false, nil},
		{"no identifier", Enrollment{UserID: "U"}, ":U", "", true, ErrNoIdentifier},
		// A colon in the device part could name another device's user.
		{"UDID with colon", Enrollment{UDID: "DEV:U"}, "DEV:U", "DEV:U", false, errAny},
		{"EnrollmentID with colon", Enrollment{EnrollmentID: "ENR:U"}, "ENR:U", "ENR:U", false, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.e.ID(); got != tt.id {
				t.Errorf("ID() = %q, want %q", got, tt.id)
			}
			if got := tt.e.DeviceID(); got != tt.deviceID {
				t.Errorf("DeviceID() = %q, want %q", got, tt.deviceID)
			}
			if got := tt.e.IsUserChannel(); got != tt.user {
				t.Errorf("IsUserChannel() = %v, want %v", got, tt.user)
			}
			err := tt.e.Validate()
			switch {
			case tt.err == nil && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.err == errAny && err == nil, tt.err != nil && tt.err != errAny && !errors.Is(err, tt.err):
				t.Errorf("Validate() = %v, want %v", err, tt.err)
			}
			if tt.err == nil {
				device, user := SplitID(tt.e.ID())
				if device != tt.deviceID || (user != "") != tt.user {
					t.Errorf("SplitID(%q) = %q, %q", tt.e.ID(), device, user)
				}
			}
		})
	}
}

var errAny = errors.New("any error")

func TestSplitID(t *testing.T) {
	tests := []struct{ id, device, user string }{
		{"DEV", "DEV", ""},
		{"DEV:USER", "DEV", "USER"},
		// Only the first colon splits: a short name may hold one.
		{"DEV:a:b", "DEV", "a:b"},
		{"", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			device, user := SplitID(tt.id)
			if device != tt.device || user != tt.user {
				t.Errorf("SplitID(%q) = %q, %q; want %q, %q", tt.id, device, user, tt.device, tt.user)
			}
		})
	}
}
