package ade

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Profile is an ADE profile definition ([S3] "Profile", nanodep's
// ProfileJson, g.3): what a device learns from Apple when it activates —
// where to enroll, how tightly, and which Setup Assistant panes to skip.
//
// Flags are always sent, so that false means false: Apple's defaults are
// not all false (is_mdm_removable and allow_pairing default to true), and
// omitting a false would turn it into Apple's default. Decoding presets
// those two to true for the same reason.
type Profile struct {
	ProfileName string `json:"profile_name"`
	// ProfileUUID is Apple's, in GET /profile answers; never sent.
	ProfileUUID string `json:"profile_uuid,omitempty"`
	// URL receives the device's MachineInfo POST (bramley's /ade/enroll).
	URL string `json:"url"`
	// ConfigurationWebURL, when set, makes Setup Assistant show a web
	// view for the person to sign in (iOS 13+, macOS 10.15+).
	ConfigurationWebURL string `json:"configuration_web_url,omitempty"`
	// IsSupervised is ignored since iOS 13: ADE devices are supervised.
	IsSupervised bool `json:"is_supervised"`
	// IsMandatory: the person cannot skip enrollment (always so since
	// iOS 13).
	IsMandatory bool `json:"is_mandatory"`
	// IsMDMRemovable: the person may remove the enrollment profile. False
	// requires IsSupervised (Apple answers FLAGS_INVALID otherwise).
	IsMDMRemovable bool `json:"is_mdm_removable"`
	// AwaitDeviceConfigured holds Setup Assistant until the server sends
	// DeviceConfigured; ignored on unsupervised iOS.
	AwaitDeviceConfigured bool `json:"await_device_configured"`
	// IsMultiUser configures Shared iPad.
	IsMultiUser bool `json:"is_multi_user"`
	// AutoAdvanceSetup walks Setup Assistant on its own (tvOS, macOS 11+).
	AutoAdvanceSetup bool `json:"auto_advance_setup"`
	// AllowPairing is deprecated since iOS 13.
	AllowPairing bool `json:"allow_pairing"`
	// DoNotUseProfileFromBackup and IsReturnToService are iOS and
	// visionOS 26 keys, sent only when true so that older parts of
	// Apple's service never see them.
	DoNotUseProfileFromBackup bool `json:"do_not_use_profile_from_backup,omitempty"`
	IsReturnToService         bool `json:"is_return_to_service,omitempty"`
	// SkipSetupItems are Setup Assistant panes to skip: keys of Apple's
	// other/skipkeys.yaml (KnownSkipSetupItem).
	SkipSetupItems []string `json:"skip_setup_items,omitempty"`
	// AnchorCerts are base64 DER certificates the device trusts for the
	// TLS connection to URL: bramley's CA when its server certificate is
	// not publicly trusted.
	AnchorCerts []string `json:"anchor_certs,omitempty"`
	// SupervisingHostCerts are base64 DER certificates of Macs allowed to
	// pair with a supervised device.
	SupervisingHostCerts []string `json:"supervising_host_certs,omitempty"`
	Department           string   `json:"department,omitempty"`
	SupportPhoneNumber   string   `json:"support_phone_number,omitempty"`
	SupportEmailAddress  string   `json:"support_email_address,omitempty"`
	OrgMagic             string   `json:"org_magic,omitempty"`
	// Language is ISO 639-1 or 639-2, Region ISO 3166-1 alpha-2 (tvOS,
	// macOS 11+).
	Language string `json:"language,omitempty"`
	Region   string `json:"region,omitempty"`
	// Devices are serial numbers to assign the profile to as it is defined.
	Devices []string `json:"devices,omitempty"`
}

// NewProfile returns a profile named name enrolling at enrollURL, with
// Apple's defaults.
func NewProfile(name, enrollURL string) *Profile {
	return &Profile{ProfileName: name, URL: enrollURL, IsMDMRemovable: true, AllowPairing: true}
}

// UnmarshalJSON decodes a profile with Apple's defaults for what is absent.
func (p *Profile) UnmarshalJSON(b []byte) error {
	type plain Profile
	v := plain{IsMDMRemovable: true, AllowPairing: true}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Profile(v)
	return nil
}

// MarshalJSON encodes the profile as Apple takes it: without ProfileUUID,
// which only Apple assigns.
func (p Profile) MarshalJSON() ([]byte, error) {
	type plain Profile
	v := plain(p)
	v.ProfileUUID = ""
	return json.Marshal(v)
}

// Limits of profile fields ([S3] "Profile", g.3).
const (
	maxProfileName = 125
	maxURL         = 2000
	maxDepartment  = 125
	maxPhone       = 50
	maxEmail       = 250
	maxOrgMagic    = 256
)

var (
	languageRE = regexp.MustCompile(`^[a-z]{2,3}$`)
	regionRE   = regexp.MustCompile(`^[A-Z]{2}$`)
)

// Validate makes the checks Apple makes when a profile is defined, so an
// administrator hears of a mistake at once instead of as a 400 code after
// a round trip. The errors, joined, wrap ErrInvalidProfile, and the flags
// error ErrFlagsInvalid as well.
func (p *Profile) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrInvalidProfile, fmt.Sprintf(format, args...)))
	}
	switch n := utf8.RuneCountInString(p.ProfileName); {
	case strings.TrimSpace(p.ProfileName) == "":
		bad("profile_name is required")
	case n > maxProfileName:
		bad("profile_name is %d characters, at most %d", n, maxProfileName)
	}
	if p.URL == "" {
		bad("url is required: the enrollment URL devices post their MachineInfo to")
	} else if err := checkHTTPSURL(p.URL); err != nil {
		bad("url: %v", err)
	}
	if p.ConfigurationWebURL != "" {
		if err := checkHTTPSURL(p.ConfigurationWebURL); err != nil {
			bad("configuration_web_url: %v", err)
		}
	}
	if !p.IsMDMRemovable && !p.IsSupervised {
		errs = append(errs, fmt.Errorf("%w: %w", ErrInvalidProfile, ErrFlagsInvalid))
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"department", p.Department, maxDepartment},
		{"support_phone_number", p.SupportPhoneNumber, maxPhone},
		{"support_email_address", p.SupportEmailAddress, maxEmail},
		{"org_magic", p.OrgMagic, maxOrgMagic},
	} {
		if n := utf8.RuneCountInString(f.value); n > f.max {
			bad("%s is %d characters, at most %d", f.name, n, f.max)
		}
	}
	if p.SupportEmailAddress != "" {
		if a, err := mail.ParseAddress(p.SupportEmailAddress); err != nil || a.Address != p.SupportEmailAddress {
			bad("support_email_address %q is not an email address", p.SupportEmailAddress)
		}
	}
	if p.Language != "" && !languageRE.MatchString(p.Language) {
		bad("language %q is not an ISO 639 code such as \"en\"", p.Language)
	}
	if p.Region != "" && !regionRE.MatchString(p.Region) {
		bad("region %q is not an ISO 3166-1 code such as \"US\"", p.Region)
	}
	var unknown []string
	for _, k := range p.SkipSetupItems {
		if !KnownSkipSetupItem(k) {
			unknown = append(unknown, fmt.Sprintf("%q", k))
		}
	}
	if len(unknown) > 0 {
		bad("unknown skip_setup_items %s (Apple's keys are case-sensitive)", strings.Join(unknown, ", "))
	}
	for _, c := range []struct {
		name  string
		certs []string
	}{{"anchor_certs", p.AnchorCerts}, {"supervising_host_certs", p.SupervisingHostCerts}} {
		for i, s := range c.certs {
			if err := checkBase64Cert(s); err != nil {
				bad("%s[%d]: %v", c.name, i, err)
			}
		}
	}
	for i, s := range p.Devices {
		if strings.TrimSpace(s) == "" {
			bad("devices[%d] is empty", i)
		}
	}
	return errors.Join(errs...)
}

// checkHTTPSURL: devices reach the enrollment URL over TLS only.
func checkHTTPSURL(s string) error {
	if len(s) > maxURL {
		return fmt.Errorf("longer than %d characters", maxURL)
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q is not an https URL", s)
	}
	return nil
}

// checkBase64Cert catches a PEM file or a truncated paste, which Apple
// would take and devices would then fail on.
func checkBase64Cert(s string) error {
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return errors.New("not base64 of a DER certificate (PEM headers must be removed)")
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return fmt.Errorf("not a certificate: %v", err)
	}
	return nil
}

// KnownSkipSetupItem reports whether key is a Setup Assistant skip key:
// one of Apple's other/skipkeys.yaml (device-management release
// iOS-18-1_macOS-15-1, deprecated keys included, since older devices still
// honour them), or UnlockWithWatch, which Apple has dropped from the list
// but Fleet's sample profile still sends.
func KnownSkipSetupItem(key string) bool {
	switch key {
	case "Accessibility", "ActionButton", "Android", "Appearance", "AppleID", "AppStore",
		"Biometric", "CameraButton", "DeviceToDeviceMigration", "Diagnostics", "DisplayTone",
		"EnableLockdownMode", "FileVault", "HomeButtonSensitivity", "iCloudDiagnostics",
		"iCloudStorage", "iMessageAndFaceTime", "Intelligence", "Keyboard", "Location",
		"MessagingActivationUsingPhoneNumber", "OnBoarding", "Passcode", "Payment", "Privacy",
		"Restore", "RestoreCompleted", "ScreenSaver", "Safety", "ScreenTime", "SIMSetup", "Siri",
		"SoftwareUpdate", "SpokenLanguage", "TapToSetup", "TermsOfAddress", "TOS",
		"TVHomeScreenSync", "TVProviderSignIn", "TVRoom", "UpdateCompleted", "Wallpaper",
		"WatchMigration", "Welcome", "Zoom",
		"UnlockWithWatch":
		return true
	}
	return false
}
