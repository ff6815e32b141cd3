package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func userCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	user := &cobra.Command{
		Use:   "user",
		Short: "Manage local accounts, which sign in at /enroll with --enroll-auth basic",
		Args:  cobra.NoArgs,
	}
	user.AddCommand(userAddCommand(getenv, stdout))
	return user
}

// maxPasswordInput caps what is read of a password from standard input.
const maxPasswordInput = 4096

func userAddCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var username, passwordEnv string
	cmd := &cobra.Command{
		Use:   "add",
		Short: "Create a local account",
		Long: `Create a local account. People sign in with it at /enroll to download the
enrollment profile when the server runs with --enroll-auth basic.

The password is never a flag (flags show in the process list): it is read
from the variable --password-env names, or else from the first line of
standard input. At least 12 characters; the server keeps only an argon2id hash.`,
		Example: `  printf '%s\n' "$PASSWORD" | bramley user add --username alice
  ALICE_PW=… bramley user add --username alice --password-env ALICE_PW`,
		Args: cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&username, "username", "", "the account's username, required (1 to 64 characters, no ':')")
	f.StringVar(&passwordEnv, "password-env", "", "name of an environment variable holding the password (default: read standard input)")
	withEnvUsageFor(cmd, clientEnv...)

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnvFor(cmd, getenv, clientEnv...); err != nil {
			return err
		}
		if username == "" {
			return errors.New("--username is required")
		}
		password, err := readPassword(cmd.InOrStdin(), getenv, passwordEnv)
		if err != nil {
			return err
		}
		if len([]rune(password)) < 12 {
			return errors.New("the password must be at least 12 characters")
		}
		client, err := cf.client()
		if err != nil {
			return err
		}
		var out struct {
			Username  string    `json:"username"`
			CreatedAt time.Time `json:"created_at"`
		}
		in := map[string]string{"username": username, "password": password}
		if _, err := client.do(cmd.Context(), http.MethodPost, "/users", nil, in, &out); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "Created user %s.\n", out.Username)
		return err
	}
	return cmd
}

// readPassword reads the password from the named variable, or else the
// first line of in.
func readPassword(in io.Reader, getenv func(string) string, env string) (string, error) {
	if env != "" {
		p := getenv(env)
		if p == "" {
			return "", fmt.Errorf("--password-env: %s is empty or not set", env)
		}
		return p, nil
	}
	line, err := bufio.NewReader(io.LimitReader(in, maxPasswordInput)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the password from standard input: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password: pass --password-env VAR or write it on standard input")
	}
	return line, nil
}
