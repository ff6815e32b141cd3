package profile

// payloadSpec is what Apple's schema says about one payload type, or about
// the top level of a profile. schema_gen.go holds the generated ones.
type payloadSpec struct {
	PayloadType string
	File        string // the schema file it follows
	// Multiple is false when a device takes only one payload of the type.
	Multiple bool
	Keys     []keySpec
}

// keySpec is one key of a dictionary, or the item of an array.
type keySpec struct {
	Name     string
	Type     string // "<string>", "<integer>", "<boolean>", "<data>", "<array>", "<dictionary>", "<real>", "<date>" or "<any>"
	Required bool
	Range    []string // allowed values, written as in the schema's rangelist
	Format   string   // a regular expression a string must match
	// RepeatMin and RepeatMax bound the length of the array this item
	// belongs to; zero means no bound.
	RepeatMin, RepeatMax int
	// Subkeys are a dictionary's keys, or an array's single item. A
	// dictionary whose only subkey is named ANY takes any key.
	Subkeys []keySpec
}

// profileServiceSpec describes the "Profile Service" profile of OTA
// enrollment phase 1. Apple's schema repository has no file for it, so it
// is written by hand from Apple's "Over-the-Air Profile Delivery and
// Configuration" (see docs/apple-protocols.md c.0): unlike other payloads it
// is the top-level dictionary itself, with a dictionary as PayloadContent.
var profileServiceSpec = payloadSpec{
	PayloadType: TypeProfileService,
	File:        "Over-the-Air Profile Delivery and Configuration",
	Keys: []keySpec{
		{Name: "PayloadType", Type: "<string>", Required: true, Range: []string{TypeProfileService}},
		{Name: "PayloadVersion", Type: "<integer>", Required: true, Range: []string{"1"}},
		{Name: "PayloadIdentifier", Type: "<string>", Required: true},
		{Name: "PayloadUUID", Type: "<string>", Required: true},
		{Name: "PayloadDisplayName", Type: "<string>"},
		{Name: "PayloadDescription", Type: "<string>"},
		{Name: "PayloadOrganization", Type: "<string>"},
		{Name: "PayloadContent", Type: "<dictionary>", Required: true, Subkeys: []keySpec{
			{Name: "URL", Type: "<string>", Required: true},
			{Name: "DeviceAttributes", Type: "<array>", Required: true, Subkeys: []keySpec{
				{Name: "DeviceAttributesItem", Type: "<string>", Range: []string{
					"UDID", "VERSION", "PRODUCT", "SERIAL", "MEID", "IMEI", "ICCID", "MAC_ADDRESS_EN0", "DEVICE_NAME",
				}},
			}},
			{Name: "Challenge", Type: "<string>"},
		}},
	},
}
