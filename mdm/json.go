package mdm

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CommandFromJSON builds a command from the admin API's JSON form:
//
//	{"request_type": "DeviceLock", "command_uuid"?: "…", "payload"?: {AppleKey: value, …}, "pin"?: "123456", …}
//
// payload holds Apple's keys verbatim; JSON numbers without a fraction or
// exponent become <integer>, others <real>, and null is refused (a plist has
// no null). The request types in typed.go also take snake_case fields (their
// json tags); a field the request type does not know is an error, as is a
// typed field and a payload key naming the same Apple key. Either way the
// typed keys are checked against Apple's schema before the command is built.
func CommandFromJSON(data []byte) (*Command, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("decoding command JSON: %w", err)
	}
	if fields == nil {
		return nil, errors.New("command JSON must be an object")
	}
	var requestType, uuid string
	if err := jsonField(fields, "request_type", &requestType); err != nil {
		return nil, err
	}
	if err := jsonField(fields, "command_uuid", &uuid); err != nil {
		return nil, err
	}
	payload, err := jsonPayload(fields["payload"])
	if err != nil {
		return nil, err
	}
	delete(fields, "request_type")
	delete(fields, "command_uuid")
	delete(fields, "payload")
	if requestType == "" {
		return nil, errors.New("request_type is required")
	}
	if !KnownRequestType(requestType) {
		return nil, fmt.Errorf("unknown request_type %q", requestType)
	}
	if len(uuid) > maxCommandUUID {
		return nil, errors.New("command_uuid is too long")
	}
	tc := newTypedCommand(requestType)
	if tc == nil {
		if name := firstKey(fields); name != "" {
			return nil, fmt.Errorf("unknown field %q: %s takes only request_type, command_uuid and payload (Apple's keys go in payload)", name, requestType)
		}
		return NewCommand(uuid, requestType, payload)
	}
	if err := typedFromJSON(tc, fields, payload); err != nil {
		return nil, err
	}
	for k, v := range typedPayload(tc) {
		payload[k] = v
	}
	if err := validateTypedPayload(requestType, payload); err != nil {
		return nil, err
	}
	return NewCommand(uuid, requestType, payload)
}

// typedFromJSON decodes the snake_case fields into tc. Names match exactly:
// encoding/json would also take "PIN" for "pin", which would hide a client
// that meant Apple's key and belongs in payload.
func typedFromJSON(tc TypedCommand, fields map[string]json.RawMessage, payload map[string]any) error {
	v := reflect.ValueOf(tc).Elem()
	known := typedFields(tc)
	names := slices.Sorted(maps.Keys(fields))
	for _, name := range names {
		i := slices.IndexFunc(known, func(f typedField) bool { return f.json == name })
		if i < 0 {
			allowed := make([]string, 0, len(known)+3)
			for _, f := range known {
				allowed = append(allowed, f.json)
			}
			allowed = append(allowed, "request_type", "command_uuid", "payload")
			return fmt.Errorf("unknown field %q for %s (fields: %s; Apple's other keys go in payload)",
				name, tc.RequestType(), strings.Join(allowed, ", "))
		}
		f := known[i]
		if _, both := payload[f.key]; both {
			return fmt.Errorf("%s and payload.%s set the same key; use one", name, f.key)
		}
		if err := json.Unmarshal(fields[name], v.Field(f.index).Addr().Interface()); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// jsonField decodes one string field of the command object, if present.
func jsonField(fields map[string]json.RawMessage, name string, dst *string) error {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s must be a string", name)
	}
	return nil
}

// jsonPayload decodes the payload object into plist-ready values.
func jsonPayload(raw json.RawMessage) (map[string]any, error) {
	payload := make(map[string]any)
	if len(raw) == 0 || string(raw) == "null" {
		return payload, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("payload must be an object of Apple's keys")
	}
	for k, e := range m {
		conv, err := plistValue("payload."+k, e)
		if err != nil {
			return nil, err
		}
		payload[k] = conv
	}
	return payload, nil
}

// plistValue turns a value decoded with UseNumber into one the plist
// encoder writes as the type the administrator meant.
func plistValue(path string, v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, fmt.Errorf("%s is null; a plist has no null (leave the key out)", path)
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return u, nil
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return nil, fmt.Errorf("%s: number %s is out of range", path, x)
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			conv, err := plistValue(path+"."+k, e)
			if err != nil {
				return nil, err
			}
			x[k] = conv
		}
	case []any:
		for i, e := range x {
			conv, err := plistValue(fmt.Sprintf("%s[%d]", path, i), e)
			if err != nil {
				return nil, err
			}
			x[i] = conv
		}
	}
	return v, nil
}

func firstKey(m map[string]json.RawMessage) string {
	if len(m) == 0 {
		return ""
	}
	return slices.Min(slices.Collect(maps.Keys(m)))
}

// ResultJSON converts a device's result plist into values encoding/json
// writes faithfully: data becomes base64 strings, dates RFC 3339, and a
// non-finite real the strings "NaN", "+Inf" or "-Inf".
func ResultJSON(raw []byte) (map[string]any, error) {
	var m map[string]any
	if err := unmarshalPlist(raw, &m); err != nil {
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
	case float64:
		// <real>nan</real> parses; JSON has no NaN or infinity, and
		// encoding/json would fail on the whole result.
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
	}
	return v
}
