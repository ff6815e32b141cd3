// Package profile builds, validates, signs, encrypts and parses the
// configuration profiles bramley hands to devices: the enrollment profile
// (trust anchors, a device identity and the com.apple.mdm payload), the OTA
// "Profile Service" profile, and profiles that ride in InstallProfile.
//
// Payload types follow Apple's schema in apple-device-management
// (mdm/profiles/*.yaml). schema_gen.go is generated from those files, and
// every profile is checked against it before Marshal returns, because a
// device that rejects a profile tells the person holding it little more
// than "invalid profile" — a schema error found here names the key.
//
// Signing and encryption follow Apple's "Configuration Profile Reference"
// (sections "Signing a Profile" and "Encrypted Profiles"): a signed profile
// is a DER CMS SignedData carrying the plist, served as ContentType; an
// encrypted one keeps its payloads in EncryptedPayloadContent, a CMS
// EnvelopedData to a certificate whose key is on the device.
package profile

//go:generate go run ./internal/schemagen/gen -schema ../../shared/apple-device-management -o schema_gen.go
