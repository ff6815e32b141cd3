package profile

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/profile/internal/schemagen"
)

// schemaRoot is Apple's device-management repository, checked out beside
// bramley's. Outside CI a missing checkout skips the schema tests; in CI it
// fails them, so the generated table cannot drift unnoticed.
const schemaRoot = "../../shared/apple-device-management"

func requireSchema(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(schemaRoot, "mdm", "profiles", "TopLevel.yaml")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Apple's schema is missing: %v", err)
		}
		t.Skipf("Apple's schema is not checked out at %s", schemaRoot)
	}
}

// TestSchemaGenerated regenerates schema_gen.go in memory from Apple's
// YAML and compares; -update rewrites it.
func TestSchemaGenerated(t *testing.T) {
	requireSchema(t)
	want, err := schemagen.Generate(schemaRoot)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("schema_gen.go", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile("schema_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("schema_gen.go is stale: run go generate ./profile (or go test ./profile -run TestSchemaGenerated -update)")
	}
}

// TestStructsFollowSchema checks the hand-written payload structs against
// the generated table: every key they can write is one the schema lists
// for their type, with the plist type it asks for, and every required key
// is a field.
func TestStructsFollowSchema(t *testing.T) {
	for _, tc := range []struct {
		payloadType string
		v           any
	}{
		{TypeRoot, Root{}},
		{TypePEM, PEM{}},
		{TypePKCS12, PKCS12{}},
		{TypeSCEP, SCEP{}},
		{TypeMDM, MDM{}},
	} {
		t.Run(tc.payloadType, func(t *testing.T) {
			spec := payloadSpecs[tc.payloadType]
			keys := append(append([]keySpec{}, commonPayloadSpec.Keys...), spec.Keys...)
			checkStruct(t, reflect.TypeOf(tc.v), keys, tc.payloadType)
		})
	}
	t.Run("TopLevel", func(t *testing.T) {
		checkStruct(t, reflect.TypeOf(Profile{}), topLevelSpec.Keys, "TopLevel")
	})
	t.Run("ProfileService", func(t *testing.T) {
		checkStruct(t, reflect.TypeOf(Service{}), profileServiceSpec.Keys[len(profileServiceSpec.Keys)-1].Subkeys, "Profile Service")
	})
}

func checkStruct(t *testing.T, typ reflect.Type, keys []keySpec, where string) {
	t.Helper()
	fields := plistFields(typ)
	for name, ft := range fields {
		k, ok := findKey(keys, name)
		if !ok {
			t.Errorf("%s: field for key %q, which the schema does not list", where, name)
			continue
		}
		if want, got := k.Type, goPlistType(ft); got != want && !(k.Type == "<array>" && got == "<array>") {
			t.Errorf("%s: key %q is written as %s, schema says %s", where, name, got, want)
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(Header{}) && k.Type == "<dictionary>" {
			checkStruct(t, ft, k.Subkeys, where+"."+name)
		}
		if ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct {
			checkStruct(t, ft.Elem(), k.Subkeys, where+"."+name)
		}
	}
	for _, k := range keys {
		if _, ok := fields[k.Name]; k.Required && !ok && k.Name != "PayloadContent" {
			t.Errorf("%s: required key %q has no field", where, k.Name)
		}
	}
}

func findKey(keys []keySpec, name string) (keySpec, bool) {
	for _, k := range keys {
		if k.Name == name {
			return k, true
		}
	}
	return keySpec{}, false
}

// plistFields lists the plist keys a struct writes, following embedded
// structs as the plist encoder does.
func plistFields(typ reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("plist")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && tag == "" {
			for k, v := range plistFields(f.Type) {
				out[k] = v
			}
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func goPlistType(t reflect.Type) string {
	if t == reflect.TypeOf(Version(0)) {
		return "<integer>"
	}
	switch t.Kind() {
	case reflect.String:
		return "<string>"
	case reflect.Int, reflect.Int64:
		return "<integer>"
	case reflect.Float64:
		return "<real>"
	case reflect.Bool:
		return "<boolean>"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "<data>"
		}
		return "<array>"
	case reflect.Map:
		return "<dictionary>"
	case reflect.Pointer:
		if t.Elem().Kind() == reflect.Struct && t.Elem().Name() == "Time" {
			return "<date>"
		}
		return goPlistType(t.Elem())
	case reflect.Struct:
		return "<dictionary>"
	}
	return t.String()
}
