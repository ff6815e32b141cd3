package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func enrollCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	enroll := &cobra.Command{
		Use:   "enroll",
		Short: "Manage how devices enroll",
		Args:  cobra.NoArgs,
	}
	token := &cobra.Command{
		Use:   "token",
		Short: "Manage enrollment tokens: links people open on a device to enroll it",
		Args:  cobra.NoArgs,
	}
	token.AddCommand(enrollTokenCreateCommand(getenv, stdout))
	enroll.AddCommand(token)
	return enroll
}

// tokenRequest is the body of POST /api/v1/enrollment-tokens; zero fields
// are left out, so the server's defaults apply.
type tokenRequest struct {
	ExpiresIn string `json:"expires_in,omitempty"`
	MaxUses   int    `json:"max_uses,omitempty"`
	Label     string `json:"label,omitempty"`
}

// tokenAnswer is the server's answer: the token is in it and nowhere else.
type tokenAnswer struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
	MaxUses   int       `json:"max_uses"`
	Label     string    `json:"label"`
}

func enrollTokenCreateCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var (
		expiresIn time.Duration
		maxUses   int
		label     string
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an enrollment token and print its enrollment URL",
		Long: `Create an enrollment token and print its enrollment URL. A person opens the
URL on the device to download bramley's enrollment profile. The token is
stored hashed: this is the only time it is shown.`,
		Example: `  bramley enroll token create --expires-in 24h --max-uses 20 --label "Sales iPads"`,
		Args:    cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	f := cmd.Flags()
	f.DurationVar(&expiresIn, "expires-in", 0, "how long the token stays usable, such as 24h or 168h (default: the server's, 7 days)")
	f.IntVar(&maxUses, "max-uses", 0, "how many enrollments the token allows (default: the server's, 1)")
	f.StringVar(&label, "label", "", "a note saying what the token is for, shown in listings and logs")
	f.BoolVar(&asJSON, "json", false, "print the server's answer as JSON")
	withEnvUsageFor(cmd, clientEnv...)

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnvFor(cmd, getenv, clientEnv...); err != nil {
			return err
		}
		if expiresIn < 0 {
			return errors.New("--expires-in must be positive")
		}
		if maxUses < 0 {
			return errors.New("--max-uses must be positive")
		}
		client, err := cf.client()
		if err != nil {
			return err
		}
		req := tokenRequest{MaxUses: maxUses, Label: label}
		if expiresIn > 0 {
			req.ExpiresIn = expiresIn.String()
		}
		var tok tokenAnswer
		raw, err := client.do(cmd.Context(), http.MethodPost, "/enrollment-tokens", nil, req, &tok)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, raw)
		}
		if tok.URL == "" || tok.Token == "" {
			return errors.New("the server's answer has no enrollment URL or token")
		}
		fmt.Fprintf(stdout, "Enrollment URL (open it on the device; shown only now):\n  %s\n\n", tok.URL)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "Token:\t%s\n", tok.Token)
		fmt.Fprintf(tw, "ID:\t%s\n", tok.ID)
		if tok.Label != "" {
			fmt.Fprintf(tw, "Label:\t%s\n", tok.Label)
		}
		if !tok.ExpiresAt.IsZero() {
			fmt.Fprintf(tw, "Expires:\t%s\n", tok.ExpiresAt.Local().Format(time.RFC1123))
		}
		uses := "unlimited"
		if tok.MaxUses > 0 {
			uses = fmt.Sprint(tok.MaxUses)
		}
		fmt.Fprintf(tw, "Max uses:\t%s\n", uses)
		return tw.Flush()
	}
	return cmd
}
