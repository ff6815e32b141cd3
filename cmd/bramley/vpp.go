package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func vppCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vpp",
		Short: "Apps and Books (VPP): content tokens",
		Args:  cobra.NoArgs,
	}
	token := &cobra.Command{Use: "token", Short: "Import and list Apps and Books content tokens", Args: cobra.NoArgs}
	token.AddCommand(vppTokenImportCommand(getenv, stdout), vppTokenListCommand(getenv, stdout))
	cmd.AddCommand(token)
	return cmd
}

// vppToken is a content token as GET /api/v1/vpp/tokens shows it.
type vppToken struct {
	Location     string    `json:"location"`
	LocationName string    `json:"location_name"`
	OrgName      string    `json:"org_name"`
	ExpiresAt    time.Time `json:"expires_at"`
	DaysLeft     int       `json:"days_left"`
	Expiring     bool      `json:"expiring"`
	Claimed      bool      `json:"claimed"`
}

// maxVPPToken caps the file read: Apple's tokens are a few hundred bytes.
const maxVPPToken = 64 << 10

func vppTokenImportCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "import FILE.vpptoken",
		Short: "Import a content token from Apple Business or School Manager",
		Long: `Import a content token (.vpptoken) downloaded from Apple Business or School
Manager (Settings › Payments and Billing › Apps and Books). bramley claims the
location for itself; when another MDM server holds it the import is refused,
naming that server, unless --force takes the location over. A newer token of
the same location replaces the old one.`,
		Args: cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "take the location over from the MDM server that holds it")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's answer as JSON")
	withEnvUsageFor(cmd, clientEnv...)

	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := applyEnvFor(cmd, getenv, clientEnv...); err != nil {
			return err
		}
		data, err := readSmallFile(args[0], maxVPPToken)
		if err != nil {
			return err
		}
		client, err := cf.client()
		if err != nil {
			return err
		}
		q := url.Values{}
		if force {
			q.Set("force", "true")
		}
		var tok vppToken
		raw, err := client.upload(cmd.Context(), "/vpp/tokens", q, "application/octet-stream", data, &tok)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, raw)
		}
		_, err = fmt.Fprintf(stdout, "Imported the content token of %s (%s), location %s; it expires %s (%d days).\n",
			tok.LocationName, tok.OrgName, tok.Location, tok.ExpiresAt.Format(time.DateOnly), tok.DaysLeft)
		return err
	}
	return cmd
}

func vppTokenListCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the content tokens and when they expire",
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
		var out struct {
			Tokens []vppToken `json:"tokens"`
		}
		raw, err := client.do(cmd.Context(), http.MethodGet, "/vpp/tokens", nil, nil, &out)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, raw)
		}
		if len(out.Tokens) == 0 {
			_, err := fmt.Fprintln(stdout, "No content token: import one with bramley vpp token import.")
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "LOCATION\tNAME\tORGANIZATION\tEXPIRES\tDAYS LEFT\t")
		for _, t := range out.Tokens {
			days := fmt.Sprint(t.DaysLeft)
			if t.Expiring {
				days += " (renew now)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", t.Location, t.LocationName, t.OrgName, t.ExpiresAt.Format(time.DateOnly), days)
		}
		return tw.Flush()
	}
	return cmd
}

// readSmallFile reads a file of at most limit bytes.
func readSmallFile(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a content token", name, limit)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s is empty", name)
	}
	return data, nil
}

// upload POSTs body as contentType under /api/v1 and decodes a 2xx JSON
// answer into out, like do.
func (c *apiClient) upload(ctx context.Context, path string, query url.Values, contentType string, body []byte, out any) ([]byte, error) {
	target := c.base + "/api/v1" + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", contentType)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.connectionError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("reading the answer to POST %s: %w", path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, answerError(resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, errors.New("the answer to POST " + path + " is not the JSON expected")
	}
	return data, nil
}
