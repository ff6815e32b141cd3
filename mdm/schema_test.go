package mdm

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// schemaDir is Apple's device-management schema, checked out next to the
// repository. Outside CI a missing checkout skips the schema tests; in CI
// it fails them, so the table cannot drift unnoticed.
const schemaDir = "../../shared/apple-device-management/mdm/commands"

func commandSchemaFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Apple's schema is missing: no %s/*.yaml", schemaDir)
		}
		t.Skipf("Apple's schema is not checked out at %s", schemaDir)
	}
	return files
}

// commandSchema is what the tests need from one commands/*.yaml file.
type commandSchema struct {
	file        string
	requestType string
	userChannel bool
	keys        map[string]schemaKey // top-level payloadkeys
}

type schemaKey struct {
	typ      string // "<string>", "<boolean>" …
	presence string // "required", "optional" or ""
}

var yamlKeyLine = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_.-]*):(?:\s+(.*))?$`)

// readCommandSchema reads a schema file with a line-based reader that
// knows just enough YAML for Apple's files: block mappings and lists by
// indentation. Each line gets its path of keys ("-" for a list item), so
// `userchannel` under payload.supportedOS.<OS>[.sharedipad] is told apart
// from the same word under a payload key or a response key.
func readCommandSchema(t *testing.T, file string) commandSchema {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := commandSchema{file: filepath.Base(file), keys: map[string]schemaKey{}}
	type node struct {
		indent int
		name   string
	}
	var stack []node
	var item string // the payloadkeys entry being read
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		text := strings.TrimLeft(line, " ")
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		indent := len(line) - len(text)
		if strings.HasPrefix(text, "- ") || text == "-" {
			// A dash closes deeper lines and the previous item at its
			// indentation, but not the key that owns the list.
			for len(stack) > 0 && (stack[len(stack)-1].indent > indent ||
				stack[len(stack)-1].indent == indent && stack[len(stack)-1].name == "-") {
				stack = stack[:len(stack)-1]
			}
			stack = append(stack, node{indent, "-"})
			text = strings.TrimPrefix(strings.TrimPrefix(text, "-"), " ")
			indent += 2
		}
		m := yamlKeyLine.FindStringSubmatch(text)
		if m == nil {
			continue // a scalar list item or the continuation of a long value
		}
		// A key line closes everything at its indentation or deeper,
		// including a list item whose dash sits there.
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		stack = append(stack, node{indent, m[1]})
		path := make([]string, len(stack))
		for i, n := range stack {
			path[i] = n.name
		}
		value := strings.Trim(strings.TrimSpace(m[2]), `'"`)
		switch {
		case slices.Equal(path, []string{"payload", "requesttype"}):
			s.requestType = value
		case len(path) >= 4 && path[0] == "payload" && path[1] == "supportedOS" &&
			path[len(path)-1] == "userchannel" &&
			(len(path) == 4 || len(path) == 5 && path[3] == "sharedipad"):
			s.userChannel = s.userChannel || value == "true"
		case slices.Equal(path, []string{"payloadkeys", "-", "key"}):
			item = value
			s.keys[item] = schemaKey{}
		case slices.Equal(path, []string{"payloadkeys", "-", "type"}):
			k := s.keys[item]
			k.typ = value
			s.keys[item] = k
		case slices.Equal(path, []string{"payloadkeys", "-", "presence"}):
			k := s.keys[item]
			k.presence = value
			s.keys[item] = k
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if s.requestType == "" {
		t.Fatalf("%s: no payload.requesttype", file)
	}
	return s
}

func commandSchemas(t *testing.T) map[string]commandSchema {
	t.Helper()
	schemas := make(map[string]commandSchema)
	for _, file := range commandSchemaFiles(t) {
		s := readCommandSchema(t, file)
		if prev, dup := schemas[s.requestType]; dup {
			t.Fatalf("RequestType %s is in both %s and %s", s.requestType, prev.file, s.file)
		}
		schemas[s.requestType] = s
	}
	return schemas
}

// TestRequestTypesMatchSchema keeps the generated requestTypes table equal
// to Apple's schema: the same RequestTypes, each with the user-channel flag
// the schema gives on any OS or for Shared iPad.
func TestRequestTypesMatchSchema(t *testing.T) {
	schemas := commandSchemas(t)
	for rt, s := range schemas {
		info, ok := requestTypes[rt]
		if !ok {
			t.Errorf("%s (%s) is missing from requestTypes", rt, s.file)
			continue
		}
		if info.userChannel != s.userChannel {
			t.Errorf("%s (%s): userChannel = %v, schema says %v", rt, s.file, info.userChannel, s.userChannel)
		}
	}
	for rt := range requestTypes {
		if _, ok := schemas[rt]; !ok {
			t.Errorf("requestTypes lists %s, which no schema file defines", rt)
		}
	}
}

// TestReadCommandSchema pins the reader on files whose shape matters:
// userchannel only under sharedipad, userchannel: false under a response
// key, and required versus optional payload keys.
func TestReadCommandSchema(t *testing.T) {
	commandSchemaFiles(t)
	tests := []struct {
		file        string
		requestType string
		userChannel bool
		keys        map[string]schemaKey
	}{
		{"information.device.yaml", "DeviceInformation", true, map[string]schemaKey{
			"Queries": {"<array>", "required"}, "DeviceAttestationNonce": {"<data>", "optional"},
		}},
		{"information.security.yaml", "SecurityInfo", true, map[string]schemaKey{}},
		{"device.lock.yaml", "DeviceLock", false, map[string]schemaKey{
			"Message": {"<string>", "optional"}, "PhoneNumber": {"<string>", "optional"}, "PIN": {"<string>", "optional"},
		}},
		{"profile.install.yaml", "InstallProfile", true, map[string]schemaKey{"Payload": {"<data>", "required"}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			s := readCommandSchema(t, filepath.Join(schemaDir, tt.file))
			if s.requestType != tt.requestType || s.userChannel != tt.userChannel {
				t.Errorf("got %s userChannel=%v, want %s userChannel=%v", s.requestType, s.userChannel, tt.requestType, tt.userChannel)
			}
			if !reflect.DeepEqual(s.keys, tt.keys) {
				t.Errorf("keys = %v, want %v", s.keys, tt.keys)
			}
		})
	}
}

// TestTypedCommandsMatchSchema checks every typed field against the schema
// file of its command: the Apple key exists at the top level with the
// plist type of the Go field, and a zero payload fails Validate exactly
// when the schema has a required key.
func TestTypedCommandsMatchSchema(t *testing.T) {
	schemas := commandSchemas(t)
	goType := map[reflect.Type]string{
		reflect.TypeFor[string]():   "<string>",
		reflect.TypeFor[bool]():     "<boolean>",
		reflect.TypeFor[[]byte]():   "<data>",
		reflect.TypeFor[[]string](): "<array>",
	}
	typed := 0
	for rt := range requestTypes {
		tc := newTypedCommand(rt)
		if tc == nil {
			continue
		}
		typed++
		t.Run(rt, func(t *testing.T) {
			if tc.RequestType() != rt {
				t.Fatalf("newTypedCommand(%q).RequestType() = %q", rt, tc.RequestType())
			}
			s, ok := schemas[rt]
			if !ok {
				t.Fatalf("no schema file for %s", rt)
			}
			st := reflect.TypeOf(tc).Elem()
			required := false
			for key, k := range s.keys {
				required = required || k.presence == "required"
				if k.presence == "required" && !slices.ContainsFunc(typedFields(tc), func(f typedField) bool { return f.key == key }) {
					t.Errorf("%s: required key %s has no typed field", s.file, key)
				}
			}
			for _, f := range typedFields(tc) {
				k, ok := s.keys[f.key]
				if !ok {
					t.Errorf("%s: field %s: %s has no key %s", rt, st.Field(f.index).Name, s.file, f.key)
					continue
				}
				if got := goType[st.Field(f.index).Type]; got != k.typ {
					t.Errorf("%s.%s is %s in Go, %s in %s", rt, f.key, got, k.typ, s.file)
				}
				if f.json == "" || strings.ToLower(f.json) != f.json {
					t.Errorf("%s.%s: JSON name %q is not snake_case", rt, f.key, f.json)
				}
			}
			if err := tc.Validate(); (err != nil) != required {
				t.Errorf("zero %s: Validate() = %v, schema has required keys: %v", rt, err, required)
			}
		})
	}
	if typed != 10 {
		t.Errorf("%d typed commands, want 10", typed)
	}
}
