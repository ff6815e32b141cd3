package mdm

import (
	"errors"
	"fmt"
)

// Check-in MessageType values (apple-device-management/mdm/checkin/*.yaml).
const (
	MessageAuthenticate          = "Authenticate"
	MessageTokenUpdate           = "TokenUpdate"
	MessageCheckOut              = "CheckOut"
	MessageUserAuthenticate      = "UserAuthenticate"
	MessageSetBootstrapToken     = "SetBootstrapToken"
	MessageGetBootstrapToken     = "GetBootstrapToken"
	MessageDeclarativeManagement = "DeclarativeManagement"
	MessageGetToken              = "GetToken"
)

// ErrUnknownMessageType is returned for a MessageType bramley does not know.
var ErrUnknownMessageType = errors.New("unknown MessageType")

// CheckinMessage is one decoded check-in message; its concrete type is one of
// the message structs below.
type CheckinMessage interface {
	Type() string
	Identifiers() Enrollment
	// Raw returns the exact body the device sent.
	Raw() []byte
}

type checkinBase struct {
	Enrollment
	MessageType string
	raw         []byte
}

// Type returns the MessageType.
func (b *checkinBase) Type() string { return b.MessageType }

// Identifiers returns the enrollment identifiers the message carries.
func (b *checkinBase) Identifiers() Enrollment { return b.Enrollment }

// Raw returns the exact body the device sent.
func (b *checkinBase) Raw() []byte { return b.raw }

// setRaw keeps the body the message was decoded from; every message type
// embeds checkinBase, so DecodeCheckin sets it through this one method.
func (b *checkinBase) setRaw(raw []byte) { b.raw = raw }

// Authenticate is the first message of an enrollment (authenticate.yaml).
// Old iOS sends no DeviceName, Model or ModelName; macOS adds a Challenge
// key that nothing uses and that is ignored here.
type Authenticate struct {
	checkinBase
	Topic        string
	BuildVersion string `plist:",omitempty"`
	DeviceName   string `plist:",omitempty"`
	IMEI         string `plist:",omitempty"`
	MEID         string `plist:",omitempty"`
	Model        string `plist:",omitempty"`
	ModelName    string `plist:",omitempty"`
	OSVersion    string `plist:",omitempty"`
	ProductName  string `plist:",omitempty"`
	SerialNumber string `plist:",omitempty"`
}

// TokenUpdate carries the APNs token and PushMagic (tokenupdate.yaml).
type TokenUpdate struct {
	checkinBase
	Topic                 string
	Token                 []byte
	PushMagic             string
	UnlockToken           []byte `plist:",omitempty"`
	AwaitingConfiguration bool   `plist:",omitempty"`
	NotOnConsole          bool   `plist:",omitempty"`
}

// CheckOut is sent, best effort, when the MDM profile is removed (checkout.yaml).
type CheckOut struct {
	checkinBase
	Topic string `plist:",omitempty"`
}

// UserAuthenticate is a macOS network user's login (userauthenticate.yaml).
type UserAuthenticate struct {
	checkinBase
	DigestResponse string `plist:",omitempty"`
}

// SetBootstrapToken escrows a macOS bootstrap token; an absent or empty
// token asks the server to delete the stored one (setbootstraptoken.yaml).
type SetBootstrapToken struct {
	checkinBase
	BootstrapToken        []byte `plist:",omitempty"`
	AwaitingConfiguration bool   `plist:",omitempty"`
}

// GetBootstrapToken asks for the escrowed token (getbootstraptoken.yaml).
type GetBootstrapToken struct {
	checkinBase
	AwaitingConfiguration bool `plist:",omitempty"`
}

// BootstrapTokenResponse is the reply to GetBootstrapToken.
type BootstrapTokenResponse struct {
	BootstrapToken []byte
}

// DeclarativeManagement is a declarative-management request
// (declarativemanagement.yaml); Endpoint selects what is asked for.
type DeclarativeManagement struct {
	checkinBase
	Endpoint string
	Data     []byte `plist:",omitempty"`
}

// GetToken asks the server for a token of a service type (gettoken.yaml).
type GetToken struct {
	checkinBase
	TokenServiceType string
	TokenParameters  map[string]any `plist:",omitempty"`
}

// DecodeCheckin decodes a check-in body. It fails on a body that is not a
// plist dictionary, on an unknown MessageType, and on a message that lacks
// the keys Apple marks required and bramley relies on.
func DecodeCheckin(body []byte) (CheckinMessage, error) {
	var head struct{ MessageType string }
	if err := unmarshalPlist(body, &head); err != nil {
		return nil, fmt.Errorf("decoding check-in plist: %w", err)
	}
	var msg CheckinMessage
	switch head.MessageType {
	case MessageAuthenticate:
		msg = new(Authenticate)
	case MessageTokenUpdate:
		msg = new(TokenUpdate)
	case MessageCheckOut:
		msg = new(CheckOut)
	case MessageUserAuthenticate:
		msg = new(UserAuthenticate)
	case MessageSetBootstrapToken:
		msg = new(SetBootstrapToken)
	case MessageGetBootstrapToken:
		msg = new(GetBootstrapToken)
	case MessageDeclarativeManagement:
		msg = new(DeclarativeManagement)
	case MessageGetToken:
		msg = new(GetToken)
	case "":
		return nil, errors.New("check-in message has no MessageType")
	default:
		return nil, fmt.Errorf("%w %q", ErrUnknownMessageType, head.MessageType)
	}
	if err := unmarshalPlist(body, msg); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", head.MessageType, err)
	}
	if err := msg.Identifiers().Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", head.MessageType, err)
	}
	if err := validateCheckin(msg); err != nil {
		return nil, fmt.Errorf("%s: %w", head.MessageType, err)
	}
	msg.(interface{ setRaw([]byte) }).setRaw(body)
	return msg, nil
}

func validateCheckin(msg CheckinMessage) error {
	switch m := msg.(type) {
	case *Authenticate:
		if m.Topic == "" {
			return errors.New("missing Topic")
		}
		if m.IsUserChannel() {
			return errors.New("Authenticate is sent on the device channel only")
		}
	case *TokenUpdate:
		if m.Topic == "" {
			return errors.New("missing Topic")
		}
		if len(m.Token) == 0 {
			return errors.New("missing Token")
		}
		if m.PushMagic == "" {
			return errors.New("missing PushMagic")
		}
	case *UserAuthenticate:
		if m.UserID == "" {
			return errors.New("missing UserID")
		}
	case *DeclarativeManagement:
		if m.Endpoint == "" {
			return errors.New("missing Endpoint")
		}
	case *GetToken:
		if m.TokenServiceType == "" {
			return errors.New("missing TokenServiceType")
		}
	}
	return nil
}
