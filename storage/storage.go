// Package storage holds what the storage backends and their consumers share:
// the records they exchange and the sentinel errors callers branch on.
//
// The interfaces themselves are declared by the packages that use them
// (checkin.Store, queue.Store, api.Store …); storage/sqlite and
// storage/postgres implement all of them, and storage/storagetest is the one
// conformance suite both must pass.
package storage

import (
	"errors"
	"time"
)

var (
	// ErrNotFound means the row asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means the write would break a uniqueness rule, for
	// example a CommandUUID that is already queued.
	ErrConflict = errors.New("conflict")
)

// Device is a device as bramley knows it, keyed by its device ID (the UDID,
// or the EnrollmentID for User Enrollment).
type Device struct {
	ID           string    `json:"id"`
	UDID         string    `json:"udid,omitempty"`
	SerialNumber string    `json:"serial_number,omitempty"`
	Model        string    `json:"model,omitempty"`
	ModelName    string    `json:"model_name,omitempty"`
	ProductName  string    `json:"product_name,omitempty"`
	DeviceName   string    `json:"device_name,omitempty"`
	OSVersion    string    `json:"os_version,omitempty"`
	BuildVersion string    `json:"build_version,omitempty"`
	IMEI         string    `json:"imei,omitempty"`
	MEID         string    `json:"meid,omitempty"`
	HostName     string    `json:"host_name,omitempty"`
	Topic        string    `json:"topic"`
	Enrolled     bool      `json:"enrolled"`
	HasBootstrap bool      `json:"bootstrap_token_escrowed"`
	LastSeen     time.Time `json:"last_seen"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Enrollment is one channel of a device: the device channel (ID equals the
// device ID) or a user channel (ID is "deviceID:userID").
type Enrollment struct {
	ID                    string    `json:"id"`
	DeviceID              string    `json:"device_id"`
	UserID                string    `json:"user_id,omitempty"`
	UserShortName         string    `json:"user_short_name,omitempty"`
	UserLongName          string    `json:"user_long_name,omitempty"`
	Topic                 string    `json:"topic"`
	PushToken             []byte    `json:"-"`
	PushMagic             string    `json:"-"`
	AwaitingConfiguration bool      `json:"awaiting_configuration"`
	Enabled               bool      `json:"enabled"`
	LastSeen              time.Time `json:"last_seen"`
	UpdatedAt             time.Time `json:"updated_at"`
}

// DeviceFilter selects devices for a listing. Empty fields match everything.
// After is the ID of the last device of the previous page; pages are ordered
// by ID.
type DeviceFilter struct {
	SerialNumber string
	UDID         string
	After        string
	Limit        int
}

// Queue statuses of a command for one enrollment. A device's own statuses
// (mdm.StatusAcknowledged …) are stored as they came; these are bramley's.
const (
	StatusPending   = "Pending"   // queued, not answered yet (may have been sent)
	StatusCancelled = "Cancelled" // cancelled before the device answered
	StatusExpired   = "Expired"   // its TTL ran out before the device answered
)

// NewCommand is a command to enqueue.
type NewCommand struct {
	UUID        string
	RequestType string
	Raw         []byte
	Priority    int
	// ExpiresAt, when not zero, is when an undelivered command stops being sent.
	ExpiresAt time.Time
	CreatedAt time.Time
}

// CommandTarget is the state of one command on one enrollment.
type CommandTarget struct {
	EnrollmentID string    `json:"enrollment_id"`
	Status       string    `json:"status"`
	DeliveredAt  time.Time `json:"delivered_at,omitzero"`
	UpdatedAt    time.Time `json:"updated_at"`
	// Result is the device's complete result plist, when it sent one.
	Result []byte `json:"-"`
}

// Command is a stored command and where it stands on each target.
type Command struct {
	UUID        string          `json:"command_uuid"`
	RequestType string          `json:"request_type"`
	Priority    int             `json:"priority"`
	ExpiresAt   time.Time       `json:"expires_at,omitzero"`
	CreatedAt   time.Time       `json:"created_at"`
	Raw         []byte          `json:"-"`
	Targets     []CommandTarget `json:"targets"`
}

// QueueItem is one not-yet-answered command in an enrollment's queue.
type QueueItem struct {
	CommandUUID string    `json:"command_uuid"`
	RequestType string    `json:"request_type"`
	Status      string    `json:"status"`
	Priority    int       `json:"priority"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	CreatedAt   time.Time `json:"created_at"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
}

// Certificate is a certificate bramley issued.
type Certificate struct {
	Serial    string    `json:"serial"` // hex
	SHA256    []byte    `json:"-"`      // of the DER
	Subject   string    `json:"subject"`
	DeviceID  string    `json:"device_id,omitempty"` // set when issued to a known device (a renewal)
	NotAfter  time.Time `json:"not_after"`
	Revoked   bool      `json:"revoked"`
	CreatedAt time.Time `json:"created_at"`
}
