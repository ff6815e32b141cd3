// Package mdm holds Apple's MDM wire types: check-in messages, the command
// envelope, command results and enrollment identifiers, with their plist codec.
//
// It is pure: no I/O, no storage, no HTTP. The types follow Apple's schema in
// apple-device-management/mdm (checkin/*.yaml, commands/*.yaml); where a real
// device deviates from the schema, the comment at the field says so.
package mdm

import (
	"errors"
	"strings"
)

// SharedIPadUserID is the UserID a Shared iPad sends on its user channel: it
// names no one, so the user is told apart by UserShortName instead.
const SharedIPadUserID = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"

// Enrollment holds the identifiers every check-in and connect request carries.
// Device enrollments send UDID; User Enrollment (BYOD) sends EnrollmentID
// instead. User-channel requests (macOS users, Shared iPad) add the user keys.
type Enrollment struct {
	UDID             string `plist:",omitempty"`
	EnrollmentID     string `plist:",omitempty"`
	UserID           string `plist:",omitempty"`
	UserShortName    string `plist:",omitempty"`
	UserLongName     string `plist:",omitempty"`
	EnrollmentUserID string `plist:",omitempty"`
}

// ErrNoIdentifier means a message named neither a UDID nor an EnrollmentID.
var ErrNoIdentifier = errors.New("message has neither UDID nor EnrollmentID")

// Validate reports whether the identifiers can name an enrollment.
func (e Enrollment) Validate() error {
	if e.UDID == "" && e.EnrollmentID == "" {
		return ErrNoIdentifier
	}
	if strings.Contains(e.DeviceID(), ":") {
		// The colon separates device and user in enrollment IDs; a device
		// identifier holding one could impersonate another device's user.
		return errors.New("device identifier contains ':'")
	}
	if e.UserID == SharedIPadUserID && e.UserShortName == "" {
		// Every Shared iPad user sends this UserID; without the short name
		// all of them would share one enrollment.
		return errors.New("Shared iPad user channel without UserShortName")
	}
	return nil
}

// DeviceID is the identifier of the device channel: the UDID, or the
// EnrollmentID for User Enrollment.
func (e Enrollment) DeviceID() string {
	if e.UDID != "" {
		return e.UDID
	}
	return e.EnrollmentID
}

// IsUserChannel reports whether the request came from a user channel.
func (e Enrollment) IsUserChannel() bool {
	return e.userPart() != ""
}

func (e Enrollment) userPart() string {
	switch {
	case e.UserID == SharedIPadUserID && e.UserShortName != "":
		return e.UserShortName
	case e.UserID != "":
		return e.UserID
	case e.EnrollmentUserID != "":
		return e.EnrollmentUserID
	}
	return ""
}

// ID is the enrollment ID bramley keys everything by: the device ID for the
// device channel and "deviceID:userID" for a user channel.
func (e Enrollment) ID() string {
	if u := e.userPart(); u != "" {
		return e.DeviceID() + ":" + u
	}
	return e.DeviceID()
}

// SplitID splits an enrollment ID into its device part and, for a user
// channel, its user part.
func SplitID(id string) (device, user string) {
	device, user, _ = strings.Cut(id, ":")
	return device, user
}
