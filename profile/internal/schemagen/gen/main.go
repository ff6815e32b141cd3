// Command gen writes profile/schema_gen.go from a checkout of Apple's
// device-management schema. package profile runs it through go generate.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/bramley-mdm/bramley/profile/internal/schemagen"
)

func main() {
	dir := flag.String("schema", "../../shared/apple-device-management", "root of Apple's device-management repository")
	out := flag.String("o", "schema_gen.go", "file to write")
	flag.Parse()
	src, err := schemagen.Generate(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, src, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}
