package profile

import (
	"crypto/x509"
	"errors"
	"slices"
)

// EnrollmentOptions describe an enrollment profile. Identifier, ServerURL,
// Topic and exactly one of SCEP and PKCS12 are required.
type EnrollmentOptions struct {
	// Identifier is the top-level PayloadIdentifier. Keep it the same for
	// every enrollment profile of one server, so that a newer profile
	// replaces the installed one instead of failing as a second MDM
	// enrollment (MCMDMErrorDomain 12001).
	Identifier   string
	DisplayName  string
	Description  string
	Organization string

	// Roots are the certificates the device must trust to reach the
	// server over TLS — the root and any intermediates — each installed
	// as a com.apple.security.root payload (DER). Leave empty when the
	// server's certificate chains to a root the device already trusts.
	Roots []*x509.Certificate

	// SCEP makes the device create its identity key and get it certified
	// over SCEP: Apple's recommendation, since the key never leaves the
	// device. Keysize 0 becomes 2048 (the device's default is 1024),
	// an empty KeyType "RSA", and KeyUsage 0 becomes 5 (signing and
	// encryption: the identity signs TLS handshakes and Mdm-Signature
	// headers, and profiles are encrypted to it).
	SCEP *SCEPContent
	// PKCS12 and PKCS12Password carry an identity made by the server
	// instead. Encrypt such a profile to the device if it can be.
	PKCS12         []byte
	PKCS12Password string

	ServerURL  string // https:// URL of the connect endpoint
	CheckInURL string // https:// URL of the check-in endpoint; ServerURL when empty
	Topic      string // the push certificate's UID
	// SignMessage makes devices sign every request in an Mdm-Signature
	// header: needed when a proxy in front of bramley ends TLS.
	SignMessage bool
	// AccessRights 0 means AccessAll (8191).
	AccessRights int
	// ServerCapabilities nil means per-user connections (macOS and Shared
	// iPad user channels) and bootstrap-token escrow (macOS 11+).
	ServerCapabilities []string
	UseDevelopmentAPNS bool

	// NewUUID makes PayloadUUIDs; nil means mdm.NewUUID. Tests pin it.
	NewUUID func() string
}

// EnrollmentProfile builds the profile that enrolls a device, holding what
// Apple's MDM best practice asks of it and nothing more: the trust anchors,
// then the device identity, then the com.apple.mdm payload whose
// IdentityCertificateUUID names that identity. Certificate payloads come
// first because the device installs payloads in order. Everything else is
// for InstallProfile once the device is enrolled.
func EnrollmentProfile(opts EnrollmentOptions) (*Profile, error) {
	switch {
	case opts.Identifier == "":
		return nil, errors.New("enrollment profile: no identifier")
	case opts.ServerURL == "":
		return nil, errors.New("enrollment profile: no server URL")
	case opts.Topic == "":
		return nil, errors.New("enrollment profile: no push topic")
	case opts.SCEP == nil && opts.PKCS12 == nil:
		return nil, errors.New("enrollment profile: no identity (SCEP or PKCS#12)")
	case opts.SCEP != nil && opts.PKCS12 != nil:
		return nil, errors.New("enrollment profile: both a SCEP and a PKCS#12 identity")
	}
	var popts []Option
	if opts.NewUUID != nil {
		popts = append(popts, WithUUIDs(opts.NewUUID))
	}
	p := New(opts.Identifier, popts...)
	p.PayloadDisplayName = opts.DisplayName
	p.PayloadDescription = opts.Description
	p.PayloadOrganization = opts.Organization

	for _, c := range opts.Roots {
		p.Add(NewRoot(c))
	}

	var identity Payload
	if opts.SCEP != nil {
		content := *opts.SCEP
		if content.Keysize == 0 {
			content.Keysize = 2048
		}
		if content.KeyType == "" {
			content.KeyType = "RSA"
		}
		if content.KeyUsage == 0 {
			content.KeyUsage = 5
		}
		identity = &SCEP{PayloadContent: content}
	} else {
		identity = &PKCS12{PayloadContent: opts.PKCS12, Password: opts.PKCS12Password}
	}
	p.Add(identity)

	rights := opts.AccessRights
	if rights == 0 {
		rights = AccessAll
	}
	caps := opts.ServerCapabilities
	if caps == nil {
		caps = []string{CapabilityPerUserConnections, CapabilityBootstrapToken}
	}
	p.Add(&MDM{
		IdentityCertificateUUID: identity.PayloadHeader().PayloadUUID,
		Topic:                   opts.Topic,
		ServerURL:               opts.ServerURL,
		CheckInURL:              opts.CheckInURL,
		SignMessage:             opts.SignMessage,
		AccessRights:            rights,
		UseDevelopmentAPNS:      opts.UseDevelopmentAPNS,
		CheckOutWhenRemoved:     true,
		ServerCapabilities:      slices.Clone(caps),
	})
	if err := Validate(p); err != nil {
		return nil, err
	}
	return p, nil
}

// NewProfileService returns the "Profile Service" profile of OTA
// enrollment phase 1: installing it makes the device post its attributes,
// signed by its Apple-issued identity, to svc.URL, with svc.Challenge as
// CHALLENGE. Nil DeviceAttributes ask for UDID, SERIAL, PRODUCT, VERSION
// and DEVICE_NAME: enough to recognise the device again in phase 3.
func NewProfileService(identifier string, svc Service, opts ...Option) *Profile {
	p := New(identifier, opts...)
	p.PayloadType = TypeProfileService
	if svc.DeviceAttributes == nil {
		svc.DeviceAttributes = []string{"UDID", "SERIAL", "PRODUCT", "VERSION", "DEVICE_NAME"}
	}
	p.Service = &svc
	return p
}
