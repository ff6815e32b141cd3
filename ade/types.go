package ade

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Account is the answer of GET /account ([S2] "Device Enrollment
// Program", nanodep's AccountDetailJson): the MDM server as Apple Business
// Manager knows it, and the organization that owns it.
type Account struct {
	ServerName string `json:"server_name"`
	ServerUUID string `json:"server_uuid"`
	// AdminID is the Apple Account that made the token in use.
	AdminID string `json:"admin_id,omitempty"`
	// FacilitatorID is the legacy name of AdminID, still sent.
	FacilitatorID string `json:"facilitator_id,omitempty"`
	OrgName       string `json:"org_name"`
	OrgEmail      string `json:"org_email,omitempty"`
	OrgPhone      string `json:"org_phone,omitempty"`
	OrgAddress    string `json:"org_address,omitempty"`
	OrgID         string `json:"org_id,omitempty"`
	// OrgIDHash matches organizationIdHash in account-driven enrollment.
	OrgIDHash string `json:"org_id_hash,omitempty"`
	// OrgType is "edu", "org" or "tvprovider".
	OrgType string `json:"org_type,omitempty"`
	// OrgVersion is "v1" (Apple Deployment Programs) or "v2" (Apple
	// School Manager / Apple Business Manager).
	OrgVersion string `json:"org_version,omitempty"`
	// URLs lists the endpoints this account may call, with their limits.
	URLs []AccountURL `json:"urls,omitempty"`
}

// AccountURL is one endpoint in Account.URLs.
type AccountURL struct {
	URI        string   `json:"uri"`
	HTTPMethod []string `json:"http_method,omitempty"`
	Limit      *Limit   `json:"limit,omitempty"`
}

// Limit is an endpoint's page size: what Apple uses when the request names
// none, and the most it allows.
type Limit struct {
	Default int `json:"default,omitempty"`
	Maximum int `json:"maximum,omitempty"`
}

// OpType says what happened to a device in a /devices/sync answer.
type OpType string

// The operations Apple reports. Fetch answers carry none.
const (
	OpAdded    OpType = "added"    // assigned to this MDM server
	OpModified OpType = "modified" // its record changed (e.g. a profile was assigned)
	OpDeleted  OpType = "deleted"  // unassigned from this MDM server, or disowned
)

// Device is a device record of the ADE service (nanodep's DeviceJson).
// Dates Apple sends empty or in a form that does not parse are left zero
// rather than failing a page of a thousand devices.
type Device struct {
	SerialNumber string `json:"serial_number"`
	Model        string `json:"model,omitempty"`
	Description  string `json:"description,omitempty"`
	Color        string `json:"color,omitempty"`
	AssetTag     string `json:"asset_tag,omitempty"`
	// ProfileStatus is "empty", "assigned", "pushed" or "removed".
	ProfileStatus     string    `json:"profile_status,omitempty"`
	ProfileUUID       string    `json:"profile_uuid,omitempty"`
	ProfileAssignTime time.Time `json:"profile_assign_time,omitzero"`
	ProfilePushTime   time.Time `json:"profile_push_time,omitzero"`
	// DeviceAssignedDate is when the device was assigned to this server.
	DeviceAssignedDate time.Time `json:"device_assigned_date,omitzero"`
	DeviceAssignedBy   string    `json:"device_assigned_by,omitempty"`
	// OS is "iOS", "iPadOS", "OSX", "tvOS" or "visionOS".
	OS string `json:"os,omitempty"`
	// DeviceFamily is "iPad", "iPhone", "iPod", "Mac", "AppleTV" or "Vision".
	DeviceFamily string `json:"device_family,omitempty"`
	// MDMMigrationDeadline needs protocol version 8.
	MDMMigrationDeadline time.Time `json:"mdm_migration_deadline,omitzero"`
	// OpType and OpDate are set in /devices/sync answers only. OpType is
	// lower-cased on decoding.
	OpType OpType    `json:"op_type,omitempty"`
	OpDate time.Time `json:"op_date,omitzero"`
	// ResponseStatus is set in /devices (details) answers: "SUCCESS" or
	// "NOT_FOUND".
	ResponseStatus string `json:"response_status,omitempty"`
}

// UnmarshalJSON decodes a device record leniently (see Device).
func (d *Device) UnmarshalJSON(b []byte) error {
	type plain Device
	var raw struct {
		plain
		ProfileAssignTime    string `json:"profile_assign_time"`
		ProfilePushTime      string `json:"profile_push_time"`
		DeviceAssignedDate   string `json:"device_assigned_date"`
		MDMMigrationDeadline string `json:"mdm_migration_deadline"`
		OpDate               string `json:"op_date"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*d = Device(raw.plain)
	d.ProfileAssignTime = parseTime(raw.ProfileAssignTime)
	d.ProfilePushTime = parseTime(raw.ProfilePushTime)
	d.DeviceAssignedDate = parseTime(raw.DeviceAssignedDate)
	d.MDMMigrationDeadline = parseTime(raw.MDMMigrationDeadline)
	d.OpDate = parseTime(raw.OpDate)
	d.OpType = OpType(strings.ToLower(string(d.OpType)))
	return nil
}

// parseTime reads Apple's ISO 8601 time stamps ("2018-09-08T16:49:09Z").
func parseTime(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z0700", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// DevicePage is the answer of /server/devices (fetch) and /devices/sync.
type DevicePage struct {
	// Devices are in the order Apple performed the operations.
	Devices []Device `json:"devices"`
	// Cursor is where the next request continues.
	Cursor string `json:"cursor"`
	// FetchedUntil is how far Apple's answer reaches.
	FetchedUntil time.Time `json:"fetched_until,omitzero"`
	// MoreToFollow says to ask again at once with Cursor.
	MoreToFollow bool `json:"more_to_follow"`
}

// UnmarshalJSON decodes a page leniently: a bad fetched_until is left zero.
func (p *DevicePage) UnmarshalJSON(b []byte) error {
	type plain DevicePage
	var raw struct {
		plain
		FetchedUntil string `json:"fetched_until"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*p = DevicePage(raw.plain)
	p.FetchedUntil = parseTime(raw.FetchedUntil)
	return nil
}

// Device statuses in the answers of /profile, /profile/devices and
// /devices/disown, per serial number.
const (
	StatusSuccess       = "SUCCESS"
	StatusNotAccessible = "NOT_ACCESSIBLE"
	StatusFailed        = "FAILED"
	// StatusThrottled: Apple took too many assignments for this device
	// lately; try again after AssignResult.RetryAfter.
	StatusThrottled = "THROTTLED"
	// StatusNotFound answers /devices (details) for an unknown serial.
	StatusNotFound = "NOT_FOUND"
)

// DefineResult is the answer of POST /profile.
type DefineResult struct {
	ProfileUUID string `json:"profile_uuid"`
	// Devices maps each serial number sent with the profile to its status.
	Devices map[string]string `json:"devices,omitempty"`
}

// AssignResult is the answer of POST /profile/devices.
type AssignResult struct {
	ProfileUUID string            `json:"profile_uuid"`
	Devices     map[string]string `json:"devices,omitempty"`
	// RetryAfter comes with THROTTLED devices (retry_after_seconds).
	RetryAfter time.Duration `json:"-"`
}

// Failed returns the serial numbers whose status is not SUCCESS, sorted.
func (r *DefineResult) Failed() []string { return notSucceeded(r.Devices) }

// Failed returns the serial numbers whose status is not SUCCESS, sorted.
func (r *AssignResult) Failed() []string { return notSucceeded(r.Devices) }

func notSucceeded(devices map[string]string) []string {
	var out []string
	for serial, status := range devices {
		if status != StatusSuccess {
			out = append(out, serial)
		}
	}
	slices.Sort(out)
	return out
}
