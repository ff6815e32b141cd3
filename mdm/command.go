package mdm

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

type requestTypeInfo struct {
	userChannel bool
}

// KnownRequestType reports whether Apple's schema defines the RequestType.
func KnownRequestType(requestType string) bool {
	_, ok := requestTypes[requestType]
	return ok
}

// UserChannelAllowed reports whether Apple allows the RequestType on a user
// channel on any OS (the schema's `userchannel: true`).
func UserChannelAllowed(requestType string) bool {
	return requestTypes[requestType].userChannel
}

// Command is a command ready for a device: the plist the server sends in
// reply to a connect request, {CommandUUID, Command: {RequestType, …}}.
type Command struct {
	CommandUUID string
	RequestType string
	// Raw is the complete command plist exactly as it is sent.
	Raw []byte
}

// maxCommandUUID bounds the length of a CommandUUID chosen by a caller.
const maxCommandUUID = 128

// NewUUID returns a random (version 4) UUID in Apple's upper-case form.
func NewUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]))
}

// NewCommand builds a command from a RequestType and its payload keys (the
// keys of the Command dictionary other than RequestType). An empty uuid gets
// a fresh one.
func NewCommand(uuid, requestType string, payload map[string]any) (*Command, error) {
	if !KnownRequestType(requestType) {
		return nil, fmt.Errorf("unknown RequestType %q", requestType)
	}
	if len(uuid) > maxCommandUUID {
		return nil, errors.New("CommandUUID is too long")
	}
	if uuid == "" {
		uuid = NewUUID()
	}
	if err := xmlText("CommandUUID", uuid); err != nil {
		return nil, err
	}
	if err := xmlText("Command", payload); err != nil {
		return nil, err
	}
	cmd := make(map[string]any, len(payload)+1)
	for k, v := range payload {
		cmd[k] = v
	}
	cmd["RequestType"] = requestType
	raw, err := marshalPlist(map[string]any{"CommandUUID": uuid, "Command": cmd})
	if err != nil {
		return nil, fmt.Errorf("encoding %s command: %w", requestType, err)
	}
	return &Command{CommandUUID: uuid, RequestType: requestType, Raw: raw}, nil
}

// xmlText fails on a string, in v or below it, that XML 1.0 cannot carry
// (control characters other than tab, newline and carriage return, and
// invalid UTF-8). The plist encoder would silently write U+FFFD instead, so
// a device would echo a CommandUUID that matches nothing in the queue.
func xmlText(path string, v any) error {
	switch x := v.(type) {
	case string:
		if !utf8.ValidString(x) {
			return fmt.Errorf("%s is not valid UTF-8", path)
		}
		for _, r := range x {
			if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0xFFFE || r == 0xFFFF {
				return fmt.Errorf("%s holds character %U, which XML cannot carry", path, r)
			}
		}
	case []string:
		for i, e := range x {
			if err := xmlText(fmt.Sprintf("%s[%d]", path, i), e); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range x {
			if err := xmlText(fmt.Sprintf("%s[%d]", path, i), e); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, e := range x {
			if err := xmlText(path+" key", k); err != nil {
				return err
			}
			if err := xmlText(path+"."+k, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// DecodeCommand checks a raw command plist written by an administrator: a
// dictionary with a Command dictionary whose RequestType Apple's schema
// knows, and whose keys pass the checks of typed.go when bramley types that
// command. Without a CommandUUID, one is assigned and the plist re-encoded.
func DecodeCommand(raw []byte) (*Command, error) {
	var env map[string]any
	if err := unmarshalPlist(raw, &env); err != nil {
		return nil, fmt.Errorf("decoding command plist: %w", err)
	}
	body, ok := env["Command"].(map[string]any)
	if !ok {
		return nil, errors.New("command plist has no Command dictionary")
	}
	requestType, _ := body["RequestType"].(string)
	if requestType == "" {
		return nil, errors.New("command has no RequestType")
	}
	if !KnownRequestType(requestType) {
		return nil, fmt.Errorf("unknown RequestType %q", requestType)
	}
	if err := validateTypedPayload(requestType, body); err != nil {
		return nil, err
	}
	uuid, isString := env["CommandUUID"].(string)
	if _, present := env["CommandUUID"]; present && !isString {
		return nil, errors.New("CommandUUID is not a string")
	}
	if len(uuid) > maxCommandUUID {
		return nil, errors.New("CommandUUID is too long")
	}
	if uuid == "" {
		env["CommandUUID"] = NewUUID()
		uuid = env["CommandUUID"].(string)
		var err error
		if raw, err = marshalPlist(env); err != nil {
			return nil, fmt.Errorf("encoding command: %w", err)
		}
	}
	return &Command{CommandUUID: uuid, RequestType: requestType, Raw: raw}, nil
}

// Command result Status values (Apple's "MDM Result Payloads").
const (
	StatusIdle               = "Idle"
	StatusAcknowledged       = "Acknowledged"
	StatusError              = "Error"
	StatusCommandFormatError = "CommandFormatError"
	StatusNotNow             = "NotNow"
)

// ErrorChainItem is one entry of a result's ErrorChain, top-level error first.
type ErrorChainItem struct {
	ErrorCode            int
	ErrorDomain          string
	LocalizedDescription string `plist:",omitempty"`
	USEnglishDescription string `plist:",omitempty"`
}

// CommandResults is what a device PUTs to the connect endpoint: Idle, or the
// result of the command it ran. The command-specific keys stay in Raw.
type CommandResults struct {
	Enrollment
	CommandUUID string `plist:",omitempty"`
	Status      string
	ErrorChain  []ErrorChainItem `plist:",omitempty"`
	// RequestType is echoed by some devices; nothing relies on it.
	RequestType string `plist:",omitempty"`
	// NeedSyncResponse and UserConfiguration come from macOS user channels
	// (Apple's "Managing MDM devices and users in macOS").
	NeedSyncResponse  bool   `plist:",omitempty"`
	UserConfiguration bool   `plist:",omitempty"`
	Raw               []byte `plist:"-"`
}

// DecodeCommandResults decodes a connect body. Status is required, and every
// status but Idle must name the CommandUUID it reports on.
func DecodeCommandResults(body []byte) (*CommandResults, error) {
	res := new(CommandResults)
	if err := unmarshalPlist(body, res); err != nil {
		return nil, fmt.Errorf("decoding command result plist: %w", err)
	}
	if err := res.Validate(); err != nil {
		return nil, err
	}
	switch res.Status {
	case StatusIdle:
	case StatusAcknowledged, StatusError, StatusCommandFormatError, StatusNotNow:
		if res.CommandUUID == "" {
			return nil, fmt.Errorf("%s result has no CommandUUID", res.Status)
		}
		if len(res.CommandUUID) > maxCommandUUID {
			return nil, errors.New("CommandUUID is too long")
		}
	case "":
		return nil, errors.New("command result has no Status")
	default:
		return nil, fmt.Errorf("unknown Status %q", res.Status)
	}
	res.Raw = body
	return res, nil
}
