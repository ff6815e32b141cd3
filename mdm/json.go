package mdm

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/micromdm/plist"
)

// CommandFromJSON builds a command from the admin API's JSON form:
// {"request_type": "DeviceInformation", "command_uuid"?: "…", "payload"?: {AppleKey: value}}
// plus, for the typed commands, snake_case fields (see typed.go).
func CommandFromJSON(data []byte) (*Command, error) {
	var head struct {
		RequestType string         `json:"request_type"`
		CommandUUID string         `json:"command_uuid"`
		Payload     map[string]any `json:"payload"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("decoding command JSON: %w", err)
	}
	if head.RequestType == "" {
		return nil, errors.New("request_type is required")
	}
	if len(head.CommandUUID) > maxCommandUUID {
		return nil, errors.New("command_uuid is too long")
	}
	return NewCommand(head.CommandUUID, head.RequestType, head.Payload)
}

// ResultJSON converts a device's result plist into values encoding/json
// writes faithfully: data becomes base64 strings, dates RFC 3339.
func ResultJSON(raw []byte) (map[string]any, error) {
	var m map[string]any
	if err := plist.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decoding result plist: %w", err)
	}
	return jsonSafe(m).(map[string]any), nil
}

func jsonSafe(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonSafe(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = jsonSafe(e)
		}
		return x
	case []byte:
		return base64.StdEncoding.EncodeToString(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	}
	return v
}
