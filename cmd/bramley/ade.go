package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bramley-mdm/bramley/pki"
)

func adeCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ade",
		Short: "Automated Device Enrollment: the certificate, server tokens and syncs",
		Args:  cobra.NoArgs,
	}
	certificate := adeCertificateCommand(getenv, stdout)
	certificate.AddCommand(adeCertificateRotateCommand(getenv, stdout))
	token := &cobra.Command{Use: "token", Short: "Upload and list ADE server tokens", Args: cobra.NoArgs}
	token.AddCommand(adeTokenImportCommand(getenv, stdout), adeTokenListCommand(getenv, stdout))
	cmd.AddCommand(certificate, token, adeSyncCommand(getenv, stdout))
	return cmd
}

func adeCertificateCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "certificate",
		Short: "Get the certificate to upload to the MDM server in Apple Business Manager",
		Long: `Get the PEM certificate to upload to the MDM server in Apple Business
Manager. Apple encrypts the server token (.p7m) to it; give that file to the
server with POST /api/v1/ade/tokens. The private key stays in bramley.`,
		Args: cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the certificate to this new file instead of standard output")
	withEnvUsageFor(cmd, clientEnv...)

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		client, err := cf.connect(cmd, getenv)
		if err != nil {
			return err
		}
		raw, err := client.do(cmd.Context(), http.MethodGet, "/ade/certificate", nil, nil, nil)
		if err != nil {
			return err
		}
		return writeCertificate(stdout, out, raw, "upload it to the MDM server in Apple Business Manager.")
	}
	return cmd
}

func adeCertificateRotateCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Replace the key pair Apple encrypts server tokens to",
		Long: `Make a new key pair for ADE server tokens and get its certificate, to
upload to each MDM server in Apple Business Manager. Tokens Apple still
encrypts to the old certificate are accepted until every stored token has
been uploaded again for the new one. Rotating again before then is refused
unless --force, which drops the old key for good.`,
		Args: cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the new certificate to this new file instead of standard output")
	cmd.Flags().BoolVar(&force, "force", false, "rotate even though the previous certificate may still be in use")
	withEnvUsageFor(cmd, clientEnv...)

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		client, err := cf.connect(cmd, getenv)
		if err != nil {
			return err
		}
		if out != "" {
			// Fail before rotating, not after, when the file is there.
			if _, err := os.Lstat(out); err == nil {
				return fmt.Errorf("%s exists: bramley does not overwrite it", out)
			}
		}
		var query url.Values
		if force {
			query = url.Values{"force": {"true"}}
		}
		raw, err := client.do(cmd.Context(), http.MethodPost, "/ade/certificate/rotate", query, nil, nil)
		if err != nil {
			return err
		}
		return writeCertificate(stdout, out, raw, "upload it to each MDM server in Apple Business Manager, then upload each server token again.")
	}
	return cmd
}

// writeCertificate checks that the server answered a PEM certificate and
// writes it to stdout, or to the new file out with what to do next.
func writeCertificate(stdout io.Writer, out string, raw []byte, next string) error {
	if _, err := pki.ParseCertificatePEM(raw); err != nil {
		return fmt.Errorf("the server's answer is not a PEM certificate: %w", err)
	}
	if out == "" {
		_, err := stdout.Write(raw)
		return err
	}
	if err := writeNewFile(out, raw, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote %s: %s\n", out, next)
	return nil
}

// adeToken is a server token as the admin API lists it.
type adeToken struct {
	ID                string    `json:"id"`
	ConsumerKey       string    `json:"consumer_key"`
	ServerName        string    `json:"server_name"`
	AccessTokenExpiry time.Time `json:"access_token_expiry"`
	DaysLeft          int       `json:"days_left"`
	Expiring          bool      `json:"expiring"`
}

func adeTokenImportCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "import FILE.p7m",
		Short: "Upload a server token as Apple Business Manager gave it",
		Long: `Upload the server token (.p7m) downloaded from the MDM server in Apple
Business Manager. A renewed token of an MDM server already stored replaces
it and keeps its ID.`,
		Args: cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's answer as JSON")
	withEnvUsageFor(cmd, clientEnv...)

	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		client, err := cf.connect(cmd, getenv)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		var tok adeToken
		raw, err := client.do(cmd.Context(), http.MethodPost, "/ade/tokens", nil,
			rawBody{contentType: "application/pkcs7-mime", data: data}, &tok)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, raw)
		}
		name := tok.ServerName
		if name == "" {
			name = tok.ConsumerKey
		}
		fmt.Fprintf(stdout, "Stored ADE token %s (%s), expiring %s.\n", tok.ID, name, tok.AccessTokenExpiry.UTC().Format(time.DateOnly))
		return nil
	}
	return cmd
}

func adeTokenListCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the stored server tokens and when they expire",
		Args:  cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's answer as JSON")
	withEnvUsageFor(cmd, clientEnv...)

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		client, err := cf.connect(cmd, getenv)
		if err != nil {
			return err
		}
		var list struct {
			Tokens []adeToken `json:"tokens"`
		}
		raw, err := client.do(cmd.Context(), http.MethodGet, "/ade/tokens", nil, nil, &list)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, raw)
		}
		if len(list.Tokens) == 0 {
			fmt.Fprintln(stdout, "No ADE server token yet: bramley ade token import adds one.")
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSERVER NAME\tCONSUMER KEY\tEXPIRES\tDAYS LEFT")
		for _, t := range list.Tokens {
			left := fmt.Sprint(t.DaysLeft)
			switch {
			case t.DaysLeft < 0:
				left = "expired"
			case t.Expiring:
				left += " (renew now)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.ServerName, t.ConsumerKey,
				t.AccessTokenExpiry.UTC().Format(time.DateOnly), left)
		}
		return tw.Flush()
	}
	return cmd
}

func adeSyncCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sync TOKEN_ID",
		Short: "Fetch the devices Apple assigned to a token's MDM server now",
		Args:  cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's answer as JSON")
	withEnvUsageFor(cmd, clientEnv...)

	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		client, err := cf.connect(cmd, getenv)
		if err != nil {
			return err
		}
		var res struct {
			Fetched  int `json:"fetched"`
			Added    int `json:"added"`
			Modified int `json:"modified"`
			Deleted  int `json:"deleted"`
		}
		raw, err := client.do(cmd.Context(), http.MethodPost, "/ade/tokens/"+url.PathEscape(args[0])+"/sync", nil, nil, &res)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, raw)
		}
		fmt.Fprintf(stdout, "Synced: %d devices fetched, %d added, %d modified, %d deleted.\n",
			res.Fetched, res.Added, res.Modified, res.Deleted)
		return nil
	}
	return cmd
}
