package mdm

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// TypedCommand is the payload of a command bramley knows field by field:
// a struct whose fields carry Apple's key (the plist tag, or the field name)
// and the admin API's snake_case name (the json tag). The same struct backs
// the Go constructors, CommandFromJSON and the checks in DecodeCommand, so a
// command is validated alike whichever way it arrives.
type TypedCommand interface {
	// RequestType is the command's RequestType in Apple's schema.
	RequestType() string
	// Validate reports what Apple's schema forbids in the payload.
	Validate() error
}

// DeviceInformationCommand asks for device attributes
// (commands/information.device.yaml).
type DeviceInformationCommand struct {
	// Queries names the attributes wanted. The schema makes it required;
	// the device silently drops queries the access rights do not cover.
	Queries []string `json:"queries" plist:",omitempty"`
}

// ProfileListCommand lists installed profiles (commands/profile.list.yaml).
type ProfileListCommand struct {
	ManagedOnly bool `json:"managed_only" plist:",omitempty"`
}

// InstallProfileCommand installs a configuration profile
// (commands/profile.install.yaml). The admin API takes the .mobileconfig
// as base64 under "profile" because JSON has no bytes; on the wire it is
// the <data> key Payload.
type InstallProfileCommand struct {
	// Payload is the profile: an XML or binary plist, or a CMS-signed or
	// -encrypted one (DER).
	Payload []byte `json:"profile" plist:",omitempty"`
}

// RemoveProfileCommand removes a profile by its top-level
// PayloadIdentifier (commands/profile.remove.yaml).
type RemoveProfileCommand struct {
	Identifier string `json:"identifier" plist:",omitempty"`
}

// InstalledApplicationListCommand lists apps
// (commands/application.installed.list.yaml).
type InstalledApplicationListCommand struct {
	// Identifiers limits the answer to these bundle identifiers.
	Identifiers     []string `json:"identifiers" plist:",omitempty"`
	ManagedAppsOnly bool     `json:"managed_apps_only" plist:",omitempty"`
}

// SecurityInfoCommand asks for the security state (commands/information.security.yaml).
// It has no payload keys.
type SecurityInfoCommand struct{}

// CertificateListCommand lists installed certificates (commands/certificate.list.yaml).
type CertificateListCommand struct {
	ManagedOnly bool `json:"managed_only" plist:",omitempty"`
}

// RestartDeviceCommand restarts the device (commands/device.restart.yaml).
type RestartDeviceCommand struct {
	NotifyUser bool `json:"notify_user" plist:",omitempty"`
	// RebuildKernelCache and KextPaths are macOS 11+ only.
	RebuildKernelCache bool     `json:"rebuild_kernel_cache" plist:",omitempty"`
	KextPaths          []string `json:"kext_paths" plist:",omitempty"`
}

// DeviceLockCommand locks the device (commands/device.lock.yaml).
type DeviceLockCommand struct {
	// PIN is the Find My PIN a Mac asks for to unlock; six digits.
	PIN         string `json:"pin" plist:"PIN,omitempty"`
	Message     string `json:"message" plist:",omitempty"`
	PhoneNumber string `json:"phone_number" plist:",omitempty"`
}

// EraseDeviceCommand erases the device (commands/device.erase.yaml).
type EraseDeviceCommand struct {
	// PIN is the Find My PIN a Mac asks for after the erase; six digits.
	PIN                    string `json:"pin" plist:"PIN,omitempty"`
	PreserveDataPlan       bool   `json:"preserve_data_plan" plist:",omitempty"`
	DisallowProximitySetup bool   `json:"disallow_proximity_setup" plist:",omitempty"`
	// ObliterationBehavior is macOS 12+: Default, DoNotObliterate,
	// ObliterateWithWarning or Always.
	ObliterationBehavior string `json:"obliteration_behavior" plist:",omitempty"`
}

// RequestType implements TypedCommand.
func (DeviceInformationCommand) RequestType() string { return "DeviceInformation" }

// RequestType implements TypedCommand.
func (ProfileListCommand) RequestType() string { return "ProfileList" }

// RequestType implements TypedCommand.
func (InstallProfileCommand) RequestType() string { return "InstallProfile" }

// RequestType implements TypedCommand.
func (RemoveProfileCommand) RequestType() string { return "RemoveProfile" }

// RequestType implements TypedCommand.
func (InstalledApplicationListCommand) RequestType() string { return "InstalledApplicationList" }

// RequestType implements TypedCommand.
func (SecurityInfoCommand) RequestType() string { return "SecurityInfo" }

// RequestType implements TypedCommand.
func (CertificateListCommand) RequestType() string { return "CertificateList" }

// RequestType implements TypedCommand.
func (RestartDeviceCommand) RequestType() string { return "RestartDevice" }

// RequestType implements TypedCommand.
func (DeviceLockCommand) RequestType() string { return "DeviceLock" }

// RequestType implements TypedCommand.
func (EraseDeviceCommand) RequestType() string { return "EraseDevice" }

// Validate implements TypedCommand: Queries is required.
func (c DeviceInformationCommand) Validate() error {
	if len(c.Queries) == 0 {
		return errors.New("queries (Queries) is required: name at least one query")
	}
	return nonEmptyStrings("queries (Queries)", c.Queries)
}

// Validate implements TypedCommand.
func (ProfileListCommand) Validate() error { return nil }

// Validate implements TypedCommand: Payload is required and must look like
// a profile, which catches a profile base64-encoded twice or a file name.
func (c InstallProfileCommand) Validate() error {
	if len(c.Payload) == 0 {
		return errors.New("profile (Payload) is required")
	}
	if !looksLikeProfile(c.Payload) {
		return errors.New("profile (Payload) is neither a plist nor a signed or encrypted profile")
	}
	return nil
}

// Validate implements TypedCommand: Identifier is required.
func (c RemoveProfileCommand) Validate() error {
	if c.Identifier == "" {
		return errors.New("identifier (Identifier) is required")
	}
	return nil
}

// Validate implements TypedCommand.
func (c InstalledApplicationListCommand) Validate() error {
	return nonEmptyStrings("identifiers (Identifiers)", c.Identifiers)
}

// Validate implements TypedCommand.
func (SecurityInfoCommand) Validate() error { return nil }

// Validate implements TypedCommand.
func (CertificateListCommand) Validate() error { return nil }

// Validate implements TypedCommand.
func (c RestartDeviceCommand) Validate() error {
	return nonEmptyStrings("kext_paths (KextPaths)", c.KextPaths)
}

// Validate implements TypedCommand: see checkPIN.
func (c DeviceLockCommand) Validate() error { return checkPIN(c.PIN) }

// Validate implements TypedCommand: see checkPIN; ObliterationBehavior
// must be one of the schema's rangelist values.
func (c EraseDeviceCommand) Validate() error {
	if err := checkPIN(c.PIN); err != nil {
		return err
	}
	switch c.ObliterationBehavior {
	case "", "Default", "DoNotObliterate", "ObliterateWithWarning", "Always":
		return nil
	}
	return fmt.Errorf("obliteration_behavior (ObliterationBehavior) %q is not one of Default, DoNotObliterate, ObliterateWithWarning, Always", c.ObliterationBehavior)
}

// checkPIN enforces the Find My PIN of device.lock.yaml and
// device.erase.yaml. The schema says "six-character"; the Mac's lock screen
// offers a number pad, so anything but six digits would lock the Mac with a
// PIN nobody can type.
func checkPIN(pin string) error {
	if pin == "" {
		return nil
	}
	if len(pin) != 6 || strings.Trim(pin, "0123456789") != "" {
		return errors.New("pin (PIN) must be exactly 6 digits")
	}
	return nil
}

func nonEmptyStrings(name string, list []string) error {
	if slices.Contains(list, "") {
		return fmt.Errorf("%s contains an empty string", name)
	}
	return nil
}

// looksLikeProfile reports whether b starts like an XML plist (after an
// optional byte-order mark and white space), a binary plist, or DER (a CMS
// signed or encrypted profile starts with a SEQUENCE).
func looksLikeProfile(b []byte) bool {
	if b[0] == 0x30 || bytes.HasPrefix(b, []byte("bplist")) {
		return true
	}
	b = bytes.TrimLeft(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")), " \t\r\n")
	return len(b) > 0 && b[0] == '<'
}

// newTypedCommand returns a zero typed payload for requestType, or nil when
// bramley knows the request type only generically.
func newTypedCommand(requestType string) TypedCommand {
	switch requestType {
	case "DeviceInformation":
		return new(DeviceInformationCommand)
	case "ProfileList":
		return new(ProfileListCommand)
	case "InstallProfile":
		return new(InstallProfileCommand)
	case "RemoveProfile":
		return new(RemoveProfileCommand)
	case "InstalledApplicationList":
		return new(InstalledApplicationListCommand)
	case "SecurityInfo":
		return new(SecurityInfoCommand)
	case "CertificateList":
		return new(CertificateListCommand)
	case "RestartDevice":
		return new(RestartDeviceCommand)
	case "DeviceLock":
		return new(DeviceLockCommand)
	case "EraseDevice":
		return new(EraseDeviceCommand)
	}
	return nil
}

// typedField ties a typed payload's struct field to its two names.
type typedField struct {
	json  string // the admin API's snake_case name
	key   string // Apple's key in the Command dictionary
	index int
}

// typedFields lists the fields of a typed payload struct (or a pointer to one).
func typedFields(tc TypedCommand) []typedField {
	t := reflect.TypeOf(tc)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	fields := make([]typedField, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("plist"), ",")
		if key == "" {
			key = f.Name
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		fields = append(fields, typedField{json: name, key: key, index: i})
	}
	return fields
}

// typedPayload returns the Command dictionary keys of a typed payload,
// leaving out zero values: every optional key of these commands defaults to
// false or absent in Apple's schema, so sending the zero would say nothing.
func typedPayload(tc TypedCommand) map[string]any {
	v := reflect.Indirect(reflect.ValueOf(tc))
	payload := make(map[string]any)
	for _, f := range typedFields(tc) {
		fv := v.Field(f.index)
		if fv.IsZero() || (fv.Kind() == reflect.Slice && fv.Len() == 0) {
			continue
		}
		payload[f.key] = fv.Interface()
	}
	return payload
}

// NewTypedCommand validates a typed payload, a struct or a pointer to one,
// and builds its command. An empty uuid gets a fresh one.
func NewTypedCommand(uuid string, tc TypedCommand) (*Command, error) {
	if tc == nil || reflect.Indirect(reflect.ValueOf(tc)).Kind() != reflect.Struct {
		return nil, fmt.Errorf("typed command %T is not a struct", tc)
	}
	if err := tc.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", tc.RequestType(), err)
	}
	return NewCommand(uuid, tc.RequestType(), typedPayload(tc))
}

// validateTypedPayload checks a Command dictionary against the typed
// payload of its request type, if bramley has one: a key of the wrong plist
// type or a value Validate refuses is an error. Keys the struct does not
// name pass through unchecked, so every other key of Apple's stays usable.
func validateTypedPayload(requestType string, payload map[string]any) error {
	tc := newTypedCommand(requestType)
	if tc == nil {
		return nil
	}
	v := reflect.ValueOf(tc).Elem()
	for _, f := range typedFields(tc) {
		val, ok := payload[f.key]
		if !ok {
			continue
		}
		if err := setTyped(v.Field(f.index), val); err != nil {
			return fmt.Errorf("%s: %s %w", requestType, f.key, err)
		}
	}
	if err := tc.Validate(); err != nil {
		return fmt.Errorf("%s: %w", requestType, err)
	}
	return nil
}

// setTyped stores a plist value in a typed payload field of the same type.
func setTyped(dst reflect.Value, val any) error {
	ok := false
	switch dst.Interface().(type) {
	case string:
		var s string
		if s, ok = val.(string); ok {
			dst.SetString(s)
		}
	case bool:
		var b bool
		if b, ok = val.(bool); ok {
			dst.SetBool(b)
		}
	case []byte:
		var b []byte
		if b, ok = val.([]byte); ok {
			dst.SetBytes(b)
		}
	case []string:
		var list []string
		switch x := val.(type) {
		case []string:
			list, ok = x, true
		case []any:
			ok = true
			for _, e := range x {
				s, isString := e.(string)
				if !isString {
					return fmt.Errorf("must be an array of <string>, not of %s", plistType(e))
				}
				list = append(list, s)
			}
		}
		if ok {
			dst.Set(reflect.ValueOf(list))
		}
	}
	if !ok {
		return fmt.Errorf("must be %s, not %s", plistType(dst.Interface()), plistType(val))
	}
	return nil
}

// plistType names a value's plist type the way Apple's schema does.
func plistType(v any) string {
	switch v.(type) {
	case string:
		return "<string>"
	case bool:
		return "<boolean>"
	case []byte:
		return "<data>"
	case int64, uint64, int:
		return "<integer>"
	case float64:
		return "<real>"
	case time.Time:
		return "<date>"
	case []any, []string:
		return "<array>"
	case map[string]any:
		return "<dictionary>"
	}
	return fmt.Sprintf("%T", v)
}

// NewDeviceInformation builds a DeviceInformation command for the queries.
func NewDeviceInformation(queries ...string) (*Command, error) {
	return NewTypedCommand("", DeviceInformationCommand{Queries: queries})
}

// NewProfileList builds a ProfileList command.
func NewProfileList(managedOnly bool) (*Command, error) {
	return NewTypedCommand("", ProfileListCommand{ManagedOnly: managedOnly})
}

// NewInstallProfile builds an InstallProfile command for the profile bytes
// (a .mobileconfig, signed or not).
func NewInstallProfile(profile []byte) (*Command, error) {
	return NewTypedCommand("", InstallProfileCommand{Payload: profile})
}

// NewRemoveProfile builds a RemoveProfile command for a profile's
// top-level PayloadIdentifier.
func NewRemoveProfile(identifier string) (*Command, error) {
	return NewTypedCommand("", RemoveProfileCommand{Identifier: identifier})
}

// NewInstalledApplicationList builds an InstalledApplicationList command,
// limited to the bundle identifiers when any are given.
func NewInstalledApplicationList(managedAppsOnly bool, identifiers ...string) (*Command, error) {
	return NewTypedCommand("", InstalledApplicationListCommand{Identifiers: identifiers, ManagedAppsOnly: managedAppsOnly})
}

// NewSecurityInfo builds a SecurityInfo command.
func NewSecurityInfo() (*Command, error) {
	return NewTypedCommand("", SecurityInfoCommand{})
}

// NewCertificateList builds a CertificateList command.
func NewCertificateList(managedOnly bool) (*Command, error) {
	return NewTypedCommand("", CertificateListCommand{ManagedOnly: managedOnly})
}

// NewRestartDevice builds a RestartDevice command.
func NewRestartDevice(notifyUser bool) (*Command, error) {
	return NewTypedCommand("", RestartDeviceCommand{NotifyUser: notifyUser})
}

// NewDeviceLock builds a DeviceLock command; every argument may be empty.
func NewDeviceLock(pin, message, phoneNumber string) (*Command, error) {
	return NewTypedCommand("", DeviceLockCommand{PIN: pin, Message: message, PhoneNumber: phoneNumber})
}

// NewEraseDevice builds an EraseDevice command; use NewTypedCommand with an
// EraseDeviceCommand for the other options.
func NewEraseDevice(pin string) (*Command, error) {
	return NewTypedCommand("", EraseDeviceCommand{PIN: pin})
}
