package main

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/push"
)

// Where the push certificate request steps happen.
const applePushPortal = "https://identity.apple.com/pushcert"

func pushCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "push",
		Short: "Get and manage the Apple push (APNs) certificate devices are woken with",
		Long: `Get and manage the Apple push (APNs) certificate devices are woken with.

The steps: bramley push csr makes a key and a certificate request; an MDM
vendor signs the request (bramley push vendor-sign, if you are the vendor);
you upload the signed request at ` + applePushPortal + ` with an Apple ID and
download Apple's certificate; bramley push cert upload gives it, with the
key, to the server.`,
		Args: cobra.NoArgs,
	}
	cert := &cobra.Command{
		Use:   "cert",
		Short: "Upload and list the server's push certificates",
		Args:  cobra.NoArgs,
	}
	cert.AddCommand(pushCertUploadCommand(getenv, stdout), pushCertListCommand(getenv, stdout))
	cmd.AddCommand(pushCSRCommand(stdout), pushVendorSignCommand(stdout), cert)
	return cmd
}

func pushCSRCommand(stdout io.Writer) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "csr",
		Short: "Make a push certificate key and request (on this computer; no server needed)",
		Long: `Make a push certificate key and request, on this computer: DIR/push.key (the
private key, readable by you only) and DIR/push.csr, the request an MDM
vendor signs. Keep push.key: the certificate Apple issues for this request
works only with it. An existing push.key is never overwritten.`,
		Example: `  bramley push csr --out ./push`,
		Args:    cobra.NoArgs,
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to write push.key and push.csr to (created if missing)")
	_ = cmd.MarkFlagRequired("out")

	cmd.RunE = func(*cobra.Command, []string) error {
		keyFile, csrFile := filepath.Join(out, "push.key"), filepath.Join(out, "push.csr")
		for _, f := range []string{keyFile, csrFile} {
			if _, err := os.Stat(f); err == nil {
				return fmt.Errorf("%s exists: it may pair with a certificate Apple issued or is issuing; move it away or choose another --out", f)
			}
		}
		keyPEM, csrPEM, err := push.NewPushCSR()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(out, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", out, err)
		}
		if err := writeNewFile(keyFile, keyPEM, 0o600); err != nil {
			return err
		}
		if err := writeNewFile(csrFile, csrPEM, 0o644); err != nil {
			os.Remove(keyFile) // a key without its request is of no use
			return err
		}
		fmt.Fprintf(stdout, "Wrote %s (the private key: keep it, and keep it private)\n", keyFile)
		fmt.Fprintf(stdout, "Wrote %s (the certificate request)\n\n", csrFile)
		fmt.Fprintf(stdout, "Next: have your MDM vendor sign %s (bramley push vendor-sign), upload\n", csrFile)
		fmt.Fprintf(stdout, "the signed request at %s, download Apple's certificate, then run\n", applePushPortal)
		fmt.Fprintf(stdout, "  bramley push cert upload --cert MDM_Certificate.pem --key %s\n", keyFile)
		return nil
	}
	return cmd
}

func pushVendorSignCommand(stdout io.Writer) *cobra.Command {
	var csrFile, certFile, keyFile, chainFile, out string
	cmd := &cobra.Command{
		Use:   "vendor-sign",
		Short: "Sign a customer's push certificate request as an MDM vendor (on this computer)",
		Long: `Sign a customer's push certificate request with an MDM vendor's "MDM CSR"
certificate and key from Apple, as Apple's "MDM Vendor CSR Signing" describes.
The result, a base64-encoded plist, is what the customer uploads at
` + applePushPortal + `.`,
		Example: `  bramley push vendor-sign --csr push.csr --vendor-cert mdm_csr.pem --vendor-key mdm_csr.key \
    --vendor-chain apple-chain.pem --out push-request.b64`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&csrFile, "csr", "", "the customer's certificate request (PEM), as bramley push csr writes it")
	f.StringVar(&certFile, "vendor-cert", "", "the vendor's MDM CSR certificate from Apple (PEM)")
	f.StringVar(&keyFile, "vendor-key", "", "the vendor certificate's private key (PEM)")
	f.StringVar(&chainFile, "vendor-chain", "", "PEM file of Apple's WWDR intermediate and root certificates (default: the certificates after the first in --vendor-cert)")
	f.StringVar(&out, "out", "", "file to write the signed request to (default: standard output)")
	for _, name := range []string{"csr", "vendor-cert", "vendor-key"} {
		_ = cmd.MarkFlagRequired(name)
	}

	cmd.RunE = func(*cobra.Command, []string) error {
		if chainFile == "" {
			chainFile = certFile
		}
		files := map[string][]byte{csrFile: nil, certFile: nil, keyFile: nil, chainFile: nil}
		for name := range files {
			data, err := os.ReadFile(name)
			if err != nil {
				return err
			}
			files[name] = data
		}
		signed, err := push.VendorSign(files[csrFile], files[certFile], files[keyFile], files[chainFile])
		if err != nil {
			return err
		}
		if out == "" || out == "-" {
			return writeLine(stdout, signed)
		}
		if err := os.WriteFile(out, append(signed, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Wrote %s: the customer uploads it at %s\n", out, applePushPortal)
		return nil
	}
	return cmd
}

func pushCertUploadCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var certFile, keyFile, p12File, passwordEnv string
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "upload",
		Short: "Upload a push certificate and its key to the server",
		Long: `Upload a push certificate and its key to the server: Apple's certificate (PEM
or DER) with the key from bramley push csr, or both in a .p12 file exported
from Keychain Access. They are checked here first (an MDM topic, not expired,
key and certificate a pair). A certificate replaces the stored one of the
same topic: renew at identity.apple.com with the same Apple ID to keep the
topic. A certificate whose topic no enrolled device uses is refused unless
--force, since devices are only woken on the topic they enrolled with.`,
		Example: `  bramley push cert upload --cert MDM_Certificate.pem --key push/push.key
  P12_PASSWORD=… bramley push cert upload --p12 push.p12 --password-env P12_PASSWORD`,
		Args: cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&certFile, "cert", "", "Apple's push certificate (PEM or DER)")
	f.StringVar(&keyFile, "key", "", "the certificate's private key (PEM)")
	f.StringVar(&p12File, "p12", "", "a PKCS#12 (.p12) file holding the certificate and key, instead of --cert and --key")
	f.StringVar(&passwordEnv, "password-env", "", "name of the environment variable holding the .p12 password (default: no password)")
	f.BoolVar(&force, "force", false, "install a certificate whose topic no enrolled device uses, such as a second organisation's")
	f.BoolVar(&asJSON, "json", false, "print the server's answer as JSON")
	withEnvUsageFor(cmd, clientEnv...)

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnvFor(cmd, getenv, clientEnv...); err != nil {
			return err
		}
		var body any
		var cert *push.Certificate
		switch {
		case p12File != "" && (certFile != "" || keyFile != ""):
			return errors.New("give either --p12, or --cert and --key")
		case p12File != "":
			data, err := os.ReadFile(p12File)
			if err != nil {
				return err
			}
			var password string
			if passwordEnv != "" {
				if password = getenv(passwordEnv); password == "" {
					return fmt.Errorf("--password-env: %s is not set", passwordEnv)
				}
			}
			if cert, err = push.LoadPKCS12(data, password); err != nil {
				return err
			}
			body = map[string]string{"pkcs12": base64.StdEncoding.EncodeToString(data), "password": password}
		case certFile != "" && keyFile != "":
			certData, err := os.ReadFile(certFile)
			if err != nil {
				return err
			}
			keyData, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			if cert, err = push.LoadKeyPair(certData, keyData); err != nil {
				return err
			}
			body = map[string]string{"certificate": string(pemCertificate(certData)), "private_key": string(keyData)}
		default:
			return errors.New("give --cert and --key, or --p12")
		}
		client, err := cf.client()
		if err != nil {
			return err
		}
		var query url.Values
		if force {
			query = url.Values{"force": {"true"}}
		}
		var info push.CertificateInfo
		raw, err := client.do(cmd.Context(), http.MethodPut, "/push-certificates", query, body, &info)
		var apiErr *apiError
		if errors.As(err, &apiErr) && apiErr.Status == http.StatusConflict && !force {
			return fmt.Errorf("%w\n(the --force flag installs it anyway)", err)
		}
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, raw)
		}
		if info.Topic == "" { // an answer without the details: say what was sent
			info = push.CertificateInfo{Topic: cert.Topic, NotAfter: cert.NotAfter, DaysLeft: cert.DaysLeft(time.Now())}
		}
		fmt.Fprintf(stdout, "Push certificate uploaded.\n  Topic:      %s\n  Not after:  %s (%s)\n",
			info.Topic, info.NotAfter.UTC().Format(time.DateOnly), daysLeft(info.DaysLeft))
		fmt.Fprintf(stdout, "Renew it at %s with the same Apple ID before then, to keep the topic.\n", applePushPortal)
		return nil
	}
	return cmd
}

func pushCertListCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the server's push certificates",
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
		raw, err := client.do(cmd.Context(), http.MethodGet, "/push-certificates", nil, nil, nil)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(stdout, raw)
		}
		var list struct {
			PushCertificates []push.CertificateInfo `json:"push_certificates"`
		}
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("the push certificate list is not the JSON expected: %w", err)
		}
		if len(list.PushCertificates) == 0 {
			fmt.Fprintln(stdout, "No push certificate yet: bramley push cert upload adds one.")
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tNOT AFTER\tDAYS LEFT\tENROLLMENTS")
		for _, c := range list.PushCertificates {
			left := fmt.Sprint(c.DaysLeft)
			if c.Expiring {
				left += " (renew now)"
			}
			if c.DaysLeft < 0 {
				left = "expired"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", c.Topic, c.NotAfter.UTC().Format(time.DateOnly), left, c.Enrollments)
		}
		return tw.Flush()
	}
	return cmd
}

// daysLeft says how long a certificate has.
func daysLeft(days int) string {
	switch {
	case days < 0:
		return "expired"
	case days == 1:
		return "1 day left"
	}
	return fmt.Sprintf("%d days left", days)
}

// pemCertificate returns a certificate file as PEM: Apple's portal hands
// out PEM, but a .cer saved from elsewhere is DER.
func pemCertificate(data []byte) []byte {
	if block, _ := pem.Decode(data); block != nil {
		return data
	}
	if c, err := x509.ParseCertificate(data); err == nil {
		return pki.EncodeCertificatePEM(c)
	}
	return data // push.LoadKeyPair has already said what is wrong with it
}

// writeNewFile writes a file that must not exist yet.
func writeNewFile(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
