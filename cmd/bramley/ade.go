package main

import (
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/bramley-mdm/bramley/pki"
)

func adeCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ade",
		Short: "Automated Device Enrollment: the certificate for Apple Business Manager",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(adeCertificateCommand(getenv, stdout))
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
		if err := applyEnvFor(cmd, getenv, clientEnv...); err != nil {
			return err
		}
		client, err := cf.client()
		if err != nil {
			return err
		}
		raw, err := client.do(cmd.Context(), http.MethodGet, "/ade/certificate", nil, nil, nil)
		if err != nil {
			return err
		}
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
		fmt.Fprintf(stdout, "Wrote %s: upload it to the MDM server in Apple Business Manager.\n", out)
		return nil
	}
	return cmd
}
