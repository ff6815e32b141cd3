package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envName is the environment twin of a flag: --public-url ↔ BRAMLEY_PUBLIC_URL.
func envName(flag string) string {
	return "BRAMLEY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv gives every flag not set on the command line the value of its
// BRAMLEY_ environment twin, when that is set: flag > environment > default.
func applyEnv(cmd *cobra.Command, getenv func(string) string) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		v := getenv(envName(f.Name))
		if v == "" {
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			err = sv.Replace(strings.Split(v, ","))
		} else {
			err = f.Value.Set(v)
		}
		if err != nil {
			err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
		}
	})
	return err
}

// withEnvUsage appends each flag's environment twin to its help text.
func withEnvUsage(cmd *cobra.Command) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" {
			f.Usage += " [" + envName(f.Name) + "]"
		}
	})
}
