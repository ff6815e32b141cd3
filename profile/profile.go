package profile

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/mdm"
)

// ContentType is the media type of a profile, signed or not. Devices need
// it to offer installation (the ADE web view and OTA responses insist).
const ContentType = "application/x-apple-aspen-config"

// PayloadType values of the profiles and payloads this package knows.
const (
	TypeConfiguration  = "Configuration"   // TopLevel.yaml: every ordinary profile
	TypeProfileService = "Profile Service" // OTA phase 1; not in Apple's schema repository
	TypeRoot           = "com.apple.security.root"
	TypePKCS1          = "com.apple.security.pkcs1" // com.apple.security.root is its alias
	TypePEM            = "com.apple.security.pem"
	TypePKCS12         = "com.apple.security.pkcs12"
	TypeSCEP           = "com.apple.security.scep"
	TypeACME           = "com.apple.security.acme"
	TypeMDM            = "com.apple.mdm"
)

// Profile is a configuration profile: the outermost dictionary of a
// .mobileconfig, following mdm/profiles/TopLevel.yaml. Its PayloadType is
// TypeConfiguration, whose PayloadContent is an array of payloads, or
// TypeProfileService, whose PayloadContent is the Service dictionary.
//
// Build one with New, EnrollmentProfile or NewProfileService, or read one
// with Parse; turn it into bytes with Marshal.
type Profile struct {
	PayloadType       string
	PayloadVersion    Version
	PayloadIdentifier string // decides whether an installed profile is replaced: keep it stable
	PayloadUUID       string

	PayloadDisplayName  string `plist:",omitempty"`
	PayloadDescription  string `plist:",omitempty"`
	PayloadOrganization string `plist:",omitempty"`
	PayloadScope        string `plist:",omitempty"` // macOS: System or User

	// PayloadRemovalDisallowed only takes effect on supervised devices.
	PayloadRemovalDisallowed bool              `plist:",omitempty"`
	HasRemovalPasscode       bool              `plist:",omitempty"`
	RemovalDate              *time.Time        `plist:",omitempty"`
	DurationUntilRemoval     float64           `plist:",omitempty"`
	PayloadExpirationDate    *time.Time        `plist:",omitempty"`
	TargetDeviceType         int               `plist:",omitempty"`
	ConsentText              map[string]string `plist:",omitempty"`

	// IsEncrypted and EncryptedPayloadContent replace PayloadContent once
	// EncryptPayloads has run.
	IsEncrypted             bool   `plist:",omitempty"`
	EncryptedPayloadContent []byte `plist:",omitempty"`

	// PayloadContent holds the payloads of a TypeConfiguration profile, in
	// the order the device installs them.
	PayloadContent []Payload `plist:"-"`
	// Service is the PayloadContent of a TypeProfileService profile.
	Service *Service `plist:"-"`

	newUUID func() string
}

// Version is a PayloadVersion. It is written as an integer, as the schema
// says, and read from an integer or from a whole <real>: Apple's own tools
// have written <real>1</real> (fixtures/profiles/scep-sceptest.mobileconfig).
type Version int

// UnmarshalPlist implements plist.Unmarshaler.
func (v *Version) UnmarshalPlist(f func(any) error) error {
	var i int64
	if err := f(&i); err == nil {
		*v = Version(i)
		return nil
	}
	var r float64
	if err := f(&r); err != nil {
		return errors.New("PayloadVersion is neither an integer nor a real")
	}
	if r != math.Trunc(r) || r < math.MinInt32 || r > math.MaxInt32 {
		return fmt.Errorf("PayloadVersion %v is not a whole number", r)
	}
	*v = Version(r)
	return nil
}

// Option configures a profile built by New or NewProfileService.
type Option func(*Profile)

// WithUUIDs makes the profile take its PayloadUUIDs from newUUID instead
// of mdm.NewUUID, for reproducible output in tests and golden files.
func WithUUIDs(newUUID func() string) Option {
	return func(p *Profile) { p.newUUID = newUUID }
}

// New returns an empty TypeConfiguration profile. identifier is the
// top-level PayloadIdentifier; a device replaces an installed profile with
// the same identifier, so pass the same value every time for the same
// purpose (for example one per server for its enrollment profile).
func New(identifier string, opts ...Option) *Profile {
	p := &Profile{PayloadType: TypeConfiguration, PayloadVersion: 1, PayloadIdentifier: identifier}
	for _, o := range opts {
		o(p)
	}
	p.PayloadUUID = p.uuid()
	return p
}

func (p *Profile) uuid() string {
	if p.newUUID != nil {
		return p.newUUID()
	}
	return mdm.NewUUID()
}

// Add appends payloads and fills in what the builder owns where the caller
// left it empty: PayloadType, PayloadVersion 1, a fresh PayloadUUID, and a
// PayloadIdentifier made from the profile's own identifier and the type
// ("<identifier>.scep", then "<identifier>.scep.2" …), unique within the
// profile as Apple requires and the same from one build to the next.
func (p *Profile) Add(payloads ...Payload) {
	for _, pl := range payloads {
		h := pl.PayloadHeader()
		if h.PayloadType == "" {
			h.PayloadType = defaultType(pl)
		}
		if h.PayloadVersion == 0 {
			h.PayloadVersion = 1
		}
		if h.PayloadUUID == "" {
			h.PayloadUUID = p.uuid()
		}
		if h.PayloadIdentifier == "" {
			h.PayloadIdentifier = p.payloadIdentifier(h.PayloadType)
		}
		p.PayloadContent = append(p.PayloadContent, pl)
	}
}

func (p *Profile) payloadIdentifier(payloadType string) string {
	suffix := payloadType[strings.LastIndexByte(payloadType, '.')+1:]
	suffix = strings.ToLower(strings.ReplaceAll(suffix, " ", "-"))
	base := p.PayloadIdentifier + "." + suffix
	id := base
	for n := 2; p.hasIdentifier(id); n++ {
		id = base + "." + strconv.Itoa(n)
	}
	return id
}

func (p *Profile) hasIdentifier(id string) bool {
	for _, pl := range p.PayloadContent {
		if pl.PayloadHeader().PayloadIdentifier == id {
			return true
		}
	}
	return false
}

// Payload finds the payload with the given PayloadUUID, or nil.
func (p *Profile) Payload(uuid string) Payload {
	for _, pl := range p.PayloadContent {
		if pl.PayloadHeader().PayloadUUID == uuid {
			return pl
		}
	}
	return nil
}

// Payload is one dictionary of a profile's PayloadContent: *Root, *PEM,
// *PKCS12, *SCEP, *MDM, or *Raw for any other type.
type Payload interface {
	PayloadHeader() *Header
}

// Header holds the keys every payload carries, following
// mdm/profiles/CommonPayloadKeys.yaml.
type Header struct {
	PayloadType         string
	PayloadVersion      Version
	PayloadIdentifier   string // unique within the profile
	PayloadUUID         string // globally unique; payloads whose identifier and UUID both match are updated in place
	PayloadDisplayName  string `plist:",omitempty"`
	PayloadDescription  string `plist:",omitempty"`
	PayloadOrganization string `plist:",omitempty"`
}

// PayloadHeader returns h, so that every payload type embedding a Header
// is a Payload.
func (h *Header) PayloadHeader() *Header { return h }

func defaultType(p Payload) string {
	switch p.(type) {
	case *Root:
		return TypeRoot
	case *PEM:
		return TypePEM
	case *PKCS12:
		return TypePKCS12
	case *SCEP:
		return TypeSCEP
	case *MDM:
		return TypeMDM
	}
	return ""
}

// Root is a com.apple.security.root (alias of com.apple.security.pkcs1)
// payload: one DER certificate the device adds to its trust store,
// following mdm/profiles/com.apple.security.root.yaml.
type Root struct {
	Header
	PayloadCertificateFileName string `plist:",omitempty"`
	PayloadContent             []byte // DER
}

// NewRoot returns a root payload carrying cert.
func NewRoot(cert *x509.Certificate) *Root {
	return &Root{PayloadContent: cert.Raw, Header: Header{PayloadDisplayName: displayName(cert)}}
}

// Certificate decodes the payload's certificate. Profiles made by Apple's
// own tools sometimes put PEM text in this <data>
// (fixtures/profiles/scep-sceptest.mobileconfig), so PEM is accepted too.
func (r *Root) Certificate() (*x509.Certificate, error) {
	certs, err := certificates(r.PayloadContent)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// PEM is a com.apple.security.pem payload: PEM certificates without keys,
// following mdm/profiles/com.apple.security.pem.yaml.
type PEM struct {
	Header
	PayloadCertificateFileName string `plist:",omitempty"`
	PayloadContent             []byte // PEM text
}

// NewPEM returns a PEM payload carrying certs, for example a root and its
// intermediates in one payload.
func NewPEM(certs ...*x509.Certificate) *PEM {
	p := &PEM{}
	for _, c := range certs {
		p.PayloadContent = append(p.PayloadContent, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if len(certs) > 0 {
		p.PayloadDisplayName = displayName(certs[0])
	}
	return p
}

// Certificates decodes the payload's certificates.
func (p *PEM) Certificates() ([]*x509.Certificate, error) { return certificates(p.PayloadContent) }

// PKCS12 is a com.apple.security.pkcs12 payload: one password-protected
// identity, following mdm/profiles/com.apple.security.pkcs12.yaml. The
// password travels in the profile, so a profile with one should be
// encrypted to the device (EncryptPayloads).
type PKCS12 struct {
	Header
	PayloadCertificateFileName string `plist:",omitempty"`
	PayloadContent             []byte // PKCS#12 (PFX) DER
	Password                   string `plist:",omitempty"`
	AllowAllAppsAccess         bool   `plist:",omitempty"` // macOS
	KeyIsExtractable           *bool  `plist:",omitempty"` // macOS; absent means true
}

// SCEP is a com.apple.security.scep payload, following
// mdm/profiles/com.apple.security.scep.yaml. Its PayloadContent is a
// dictionary, although some of Apple's web pages call it an array.
type SCEP struct {
	Header
	PayloadContent SCEPContent
}

// SCEPContent is the dictionary inside a SCEP payload. Zero values are
// left out, so the device applies Apple's defaults — among them a 1024-bit
// key, which is why EnrollmentProfile always sets Keysize.
type SCEPContent struct {
	URL       string
	Name      string       `plist:",omitempty"` // sent as the GetCACert message; selects a CA
	Subject   [][][]string `plist:",omitempty"`
	Challenge string       `plist:",omitempty"` // becomes the CSR's challengePassword
	Keysize   int          `plist:",omitempty"` // 1024, 2048 or 4096
	KeyType   string       `plist:"Key Type,omitempty"`
	// KeyUsage is a bitmask: 1 signing, 4 encryption.
	KeyUsage           int             `plist:"Key Usage,omitempty"`
	CAFingerprint      []byte          `plist:",omitempty"`
	Retries            int             `plist:",omitempty"` // on PENDING; 0 leaves Apple's default, 3
	RetryDelay         int             `plist:",omitempty"` // seconds; 0 leaves Apple's default, 10
	SubjectAltName     *SubjectAltName `plist:",omitempty"`
	KeyIsExtractable   *bool           `plist:",omitempty"` // macOS; absent means true
	AllowAllAppsAccess bool            `plist:",omitempty"` // macOS
}

// SubjectAltName is the SCEP payload's SubjectAltName dictionary.
type SubjectAltName struct {
	RFC822Name                string `plist:"rfc822Name,omitempty"`
	DNSName                   string `plist:"dNSName,omitempty"`
	UniformResourceIdentifier string `plist:"uniformResourceIdentifier,omitempty"`
	NTPrincipalName           string `plist:"ntPrincipalName,omitempty"`
}

// subjectShortNames are the attribute names Apple's SCEP client knows by
// name; any other attribute goes by its dotted OID.
var subjectShortNames = map[string]string{
	"2.5.4.6":  "C",
	"2.5.4.7":  "L",
	"2.5.4.8":  "ST",
	"2.5.4.10": "O",
	"2.5.4.11": "OU",
	"2.5.4.3":  "CN",
}

// SCEPSubject encodes name as the SCEP payload's Subject: an array of
// RDNs, each an array of [type, value] pairs, for example
// [[["O","Acme"]],[["CN","dev-1"]]].
func SCEPSubject(name pkix.Name) [][][]string {
	var out [][][]string
	for _, rdn := range name.ToRDNSequence() {
		var set [][]string
		for _, atv := range rdn {
			typ, ok := subjectShortNames[atv.Type.String()]
			if !ok {
				typ = atv.Type.String()
			}
			set = append(set, []string{typ, fmt.Sprint(atv.Value)})
		}
		out = append(out, set)
	}
	return out
}

// MDM is the com.apple.mdm payload that enrolls a device, following
// mdm/profiles/com.apple.mdm.yaml. A device takes one. When it replaces an
// installed one, Topic, ServerURL, CheckInURL, AssignedManagedAppleID,
// EnrollmentMode and RequiredAppIDForMDM must not change, no access right
// may be added, and com.apple.mdm.per-user-connections may be neither
// added nor removed.
type MDM struct {
	Header
	IdentityCertificateUUID string // PayloadUUID of the identity payload (SCEP, ACME or PKCS#12)
	Topic                   string // the push certificate's UID; starts with com.apple.mgmt.
	ServerURL               string // https://; the connect endpoint
	CheckInURL              string `plist:",omitempty"` // https://; ServerURL when empty
	// SignMessage makes the device add an Mdm-Signature header to every
	// request, for servers behind a proxy that ends TLS.
	SignMessage                       bool     `plist:",omitempty"`
	AccessRights                      int      `plist:",omitempty"`
	UseDevelopmentAPNS                bool     `plist:",omitempty"`
	CheckOutWhenRemoved               bool     `plist:",omitempty"`
	ServerCapabilities                []string `plist:",omitempty"`
	ServerURLPinningCertificateUUIDs  []string `plist:",omitempty"`
	CheckInURLPinningCertificateUUIDs []string `plist:",omitempty"`
	PinningRevocationCheckRequired    bool     `plist:",omitempty"`
	// ManagedAppleID was for profile-driven user enrollment; removed in
	// iOS 18 and macOS 15, kept so older profiles parse.
	ManagedAppleID                                   string `plist:",omitempty"`
	AssignedManagedAppleID                           string `plist:",omitempty"`
	EnrollmentMode                                   string `plist:",omitempty"` // BYOD or ADDE, account-driven enrollment
	RequiredAppIDForMDM                              int    `plist:",omitempty"`
	PromptUserToAllowBootstrapTokenForAuthentication bool   `plist:",omitempty"`
}

// AccessRights bits of the MDM payload (com.apple.mdm.yaml).
const (
	AccessInspectProfiles             = 1
	AccessInstallProfiles             = 2 // requires AccessInspectProfiles
	AccessLockAndPasscode             = 4
	AccessErase                       = 8
	AccessDeviceInformation           = 16
	AccessNetworkInformation          = 32
	AccessInspectProvisioningProfiles = 64
	AccessInstallProvisioningProfiles = 128 // requires AccessInspectProvisioningProfiles
	AccessInspectApps                 = 256
	AccessRestrictions                = 512
	AccessSecurity                    = 1024
	AccessSettings                    = 2048
	AccessAppManagement               = 4096
	AccessAll                         = 8191
)

// Server capabilities an MDM payload may declare (com.apple.mdm.yaml).
const (
	CapabilityPerUserConnections = "com.apple.mdm.per-user-connections" // macOS and Shared iPad user channels
	CapabilityBootstrapToken     = "com.apple.mdm.bootstraptoken"       // macOS 11+ bootstrap token escrow
	CapabilityToken              = "com.apple.mdm.token"                // the GetToken check-in
)

// Raw is a payload of a type this package has no struct for, kept as the
// dictionary it was read from so that nothing is lost.
type Raw struct {
	Header
	Keys map[string]any `plist:"-"` // every key but the Header's
}

// MarshalPlist implements plist.Marshaler: the header and Keys as one
// dictionary.
func (r *Raw) MarshalPlist() (any, error) {
	m := make(map[string]any, len(r.Keys)+7)
	for k, v := range r.Keys {
		m[k] = v
	}
	h := r.Header
	m["PayloadType"] = h.PayloadType
	m["PayloadVersion"] = int(h.PayloadVersion)
	m["PayloadIdentifier"] = h.PayloadIdentifier
	m["PayloadUUID"] = h.PayloadUUID
	for k, v := range map[string]string{
		"PayloadDisplayName":  h.PayloadDisplayName,
		"PayloadDescription":  h.PayloadDescription,
		"PayloadOrganization": h.PayloadOrganization,
	} {
		if v != "" {
			m[k] = v
		}
	}
	return m, nil
}

// Service is the PayloadContent dictionary of a "Profile Service" profile
// (Apple's "Over-the-Air Profile Delivery and Configuration"): where the
// device posts its signed attributes, which ones, and a challenge that
// carries the person's session into that post.
type Service struct {
	URL              string
	DeviceAttributes []string
	Challenge        string `plist:",omitempty"`
}

// certificates decodes PEM certificates, or one DER certificate.
func certificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing PEM certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) > 0 {
		return certs, nil
	}
	c, err := x509.ParseCertificate(data)
	if err != nil {
		return nil, fmt.Errorf("neither a DER nor a PEM certificate: %w", err)
	}
	return []*x509.Certificate{c}, nil
}

func displayName(cert *x509.Certificate) string {
	if cert.Subject.CommonName != "" {
		return cert.Subject.CommonName
	}
	return cert.Subject.String()
}

// wireProfile is a Profile as written: its own keys plus the
// PayloadContent that fits its type.
type wireProfile struct {
	Profile
	PayloadContent any `plist:",omitempty"`
}

// encode writes p as an XML plist without validating it.
func (p *Profile) encode() ([]byte, error) {
	w := wireProfile{Profile: *p}
	switch {
	case p.PayloadType == TypeProfileService:
		if p.Service != nil {
			w.PayloadContent = *p.Service
		}
	case !p.IsEncrypted || p.PayloadContent != nil:
		items, err := wirePayloads(p.PayloadContent)
		if err != nil {
			return nil, err
		}
		w.PayloadContent = items
	}
	return marshalPlist(w)
}

// wirePayloads turns payloads into values the plist encoder writes: it
// follows one pointer inside an interface, not two, so each payload is
// passed by value.
func wirePayloads(payloads []Payload) ([]any, error) {
	items := make([]any, 0, len(payloads))
	for i, pl := range payloads {
		v := reflect.ValueOf(pl)
		if pl == nil || v.Kind() == reflect.Pointer && v.IsNil() {
			return nil, fmt.Errorf("payload %d is nil", i)
		}
		if m, ok := pl.(plist.Marshaler); ok {
			mv, err := m.MarshalPlist()
			if err != nil {
				return nil, err
			}
			items = append(items, mv)
			continue
		}
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		items = append(items, v.Interface())
	}
	return items, nil
}

// marshalPlist encodes v as an indented XML plist, turning a panic of the
// plist library (a nil value inside a map, for one) into an error.
func marshalPlist(v any) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cannot encode plist: %v", r)
		}
	}()
	return plist.MarshalIndent(v, "\t")
}

// Marshal validates p and returns it as an XML plist: the bytes of an
// unsigned .mobileconfig, ready for Sign. A profile a device would reject
// is refused with a *ValidationError instead, so bramley never hands one
// out.
func (p *Profile) Marshal() ([]byte, error) {
	raw, err := p.encode()
	if err != nil {
		return nil, err
	}
	if err := validateEncoded(raw); err != nil {
		return nil, err
	}
	return raw, nil
}
