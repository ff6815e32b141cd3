package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/storage"
)

// dataEnv names the flags of the ca subcommands that take BRAMLEY_
// environment twins: the same as serve's, so both find the same data.
var dataEnv = []string{"data", "db", "secret-key"}

// addDataFlags gives cmd serve's flags for where its data is.
func addDataFlags(cmd *cobra.Command, withSecret bool) *server.Config {
	cfg := server.DefaultConfig()
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", cfg.DataDir, "the server's data directory")
	f.StringVar(&cfg.DB, "db", cfg.DB, "the server's database: sqlite:PATH or a postgres:// URL (default: SQLite in the data directory)")
	if withSecret {
		f.StringVar(&cfg.SecretKey, "secret-key", cfg.SecretKey, "base64 of the server's 32-byte key sealing secrets at rest (default: DATA/secret.key)")
	}
	return &cfg
}

func caCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Show, export, import or rotate bramley's device identity CA",
		Long: `Show, export, import or rotate bramley's device identity CA. These commands
work on the server's own data (--data, --db, --secret-key, as given to
bramley serve), not through the admin API.

After an import or a rotation the previous CA stays trusted for the device
identities it issued, until they renew. Servers use the new CA when they next
start.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(caShowCommand(getenv, stdout), caExportCommand(getenv, stdout),
		caImportCommand(getenv, stdout), caRotateCommand(getenv, stdout))
	return cmd
}

func caShowCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show the root CA certificate, its intermediate and the previous CAs still trusted",
		Args:  cobra.NoArgs,
	}
	cfg := addDataFlags(cmd, false)
	withEnvUsageFor(cmd, dataEnv...)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnvFor(cmd, getenv, dataEnv...); err != nil {
			return err
		}
		ctx := cmd.Context()
		store, err := server.OpenStore(ctx, *cfg)
		if err != nil {
			return err
		}
		defer store.Close()
		current, err := currentCA(ctx, store)
		if err != nil {
			return err
		}
		previous, err := pki.PreviousCAs(ctx, store)
		if err != nil {
			return err
		}
		intermediate, err := currentIntermediate(ctx, store)
		if err != nil {
			return err
		}
		return printCAs(stdout, current, intermediate, previous, time.Now())
	}
	return cmd
}

func caExportCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var format, out string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the root CA certificate, for clients and devices to trust",
		Long: `Write the root CA certificate: for admin clients to trust the server's
generated HTTPS certificate (--ca-file), or for anything else that must trust
the device identities bramley issues. The intermediate under it, which issues
them, is served with the HTTPS certificate and carried by enrollment profiles.`,
		Example: `  bramley ca export --out bramley-ca.pem
  bramley ca export --format der --out bramley-ca.cer`,
		Args: cobra.NoArgs,
	}
	cfg := addDataFlags(cmd, false)
	cmd.Flags().StringVar(&format, "format", "pem", "pem or der")
	cmd.Flags().StringVar(&out, "out", "", "file to write (default: standard output)")
	withEnvUsageFor(cmd, dataEnv...)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnvFor(cmd, getenv, dataEnv...); err != nil {
			return err
		}
		if format != "pem" && format != "der" {
			return fmt.Errorf("--format %q: want pem or der", format)
		}
		ctx := cmd.Context()
		store, err := server.OpenStore(ctx, *cfg)
		if err != nil {
			return err
		}
		defer store.Close()
		cert, err := currentCA(ctx, store)
		if err != nil {
			return err
		}
		data := cert.Raw
		if format == "pem" {
			data = pki.EncodeCertificatePEM(cert)
		}
		if out == "" || out == "-" {
			_, err := stdout.Write(data)
			return err
		}
		return os.WriteFile(out, data, 0o644)
	}
	return cmd
}

func caImportCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var certFile, keyFile string
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Make an existing CA (certificate and key) bramley's CA",
		Long: `Make an existing CA bramley's CA: a PEM certificate with basicConstraints
CA:TRUE and its unencrypted PEM private key, which must be RSA (Apple devices
encrypt SCEP requests to the CA's key with RSA only). The key is sealed with
the server's secret key and stored in its database, and a new intermediate CA
is made under it to do the issuing. The root CA it replaces stays
trusted for the identities it issued. Before the server's first start, this
sets up its data directory with the imported CA.`,
		Example: `  bramley ca import --cert corp-mdm-ca.pem --key corp-mdm-ca.key`,
		Args:    cobra.NoArgs,
	}
	cfg := addDataFlags(cmd, true)
	cmd.Flags().StringVar(&certFile, "cert", "", "the CA certificate (PEM)")
	cmd.Flags().StringVar(&keyFile, "key", "", "the CA's private key (PEM: PKCS#8, PKCS#1 or SEC 1, unencrypted)")
	_ = cmd.MarkFlagRequired("cert")
	_ = cmd.MarkFlagRequired("key")
	withEnvUsageFor(cmd, dataEnv...)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnvFor(cmd, getenv, dataEnv...); err != nil {
			return err
		}
		cert, key, err := readCAFiles(certFile, keyFile)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		store, sealer, err := server.InitData(ctx, *cfg)
		if err != nil {
			return err
		}
		defer store.Close()
		writer, err := caWriter(store)
		if err != nil {
			return err
		}
		old, err := currentCA(ctx, store)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		ca, err := pki.ImportCA(ctx, writer, sealer, cert, key, time.Now)
		if err != nil {
			return fmt.Errorf("importing CA: %w", err)
		}
		return reportNewCA(ctx, stdout, store, "Imported", old, ca.Root())
	}
	return cmd
}

func caRotateCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Replace the CA with a new one; the old one still verifies identities until they renew",
		Long: `Replace bramley's CA with a new one, made like the one created on first start
(an RSA 2048 root for ten years and an RSA 2048 intermediate under it). The old certificate stays trusted for the device
identities it issued until they renew, which the new CA then does. Its key
is dropped: nothing is issued from it again.`,
		Args: cobra.NoArgs,
	}
	cfg := addDataFlags(cmd, true)
	withEnvUsageFor(cmd, dataEnv...)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnvFor(cmd, getenv, dataEnv...); err != nil {
			return err
		}
		ctx := cmd.Context()
		store, err := server.OpenStore(ctx, *cfg)
		if err != nil {
			return err
		}
		defer store.Close()
		sealer, err := server.OpenSealer(*cfg)
		if err != nil {
			return err
		}
		writer, err := caWriter(store)
		if err != nil {
			return err
		}
		old, err := currentCA(ctx, store)
		if err != nil {
			return err
		}
		ca, err := pki.RotateCA(ctx, writer, sealer, time.Now)
		if err != nil {
			return fmt.Errorf("rotating CA: %w", err)
		}
		return reportNewCA(ctx, stdout, store, "Rotated to", old, ca.Root())
	}
	return cmd
}

// caWriter is the store as pki.CAStore, when its backend can replace
// settings.
func caWriter(store server.Store) (pki.CAStore, error) {
	w, ok := store.(pki.CAStore)
	if !ok {
		return nil, fmt.Errorf("this database backend (%T) cannot replace settings (pki.SettingWriter) yet, so the CA cannot be changed", store)
	}
	return w, nil
}

// currentCA reads the CA certificate from the database;
// storage.ErrNotFound, with advice, when there is none yet.
func currentCA(ctx context.Context, store pki.SettingStore) (*x509.Certificate, error) {
	data, err := store.Setting(ctx, pki.SettingCACert)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("no CA in this database yet: bramley serve creates one on first start, or bramley ca import sets your own: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	cert, err := pki.ParseCertificatePEM(data)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	return cert, nil
}

// currentIntermediate reads the intermediate CA certificate from the
// database; nil when there is none yet (bramley serve makes one at start).
func currentIntermediate(ctx context.Context, store pki.SettingStore) (*x509.Certificate, error) {
	data, err := store.Setting(ctx, pki.SettingCAIntermediateCert)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading intermediate CA certificate: %w", err)
	}
	cert, err := pki.ParseCertificatePEM(data)
	if err != nil {
		return nil, fmt.Errorf("parsing intermediate CA certificate: %w", err)
	}
	return cert, nil
}

// readCAFiles reads the certificate and key given to ca import.
func readCAFiles(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	certData, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--cert: %w", err)
	}
	cert, err := pki.ParseCertificatePEM(certData)
	if err != nil {
		return nil, nil, fmt.Errorf("--cert %s: %w", certFile, err)
	}
	keyData, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--key: %w", err)
	}
	if bytes.Contains(keyData, []byte("ENCRYPTED")) {
		return nil, nil, fmt.Errorf("--key %s is encrypted: decrypt it first, such as with openssl pkey -in %s -out plain.key, and remove plain.key after the import", keyFile, keyFile)
	}
	key, err := pki.ParsePrivateKeyPEM(keyData)
	if err != nil {
		return nil, nil, fmt.Errorf("--key %s: %w", keyFile, err)
	}
	// Checked before the server's data is touched; ImportCA checks the rest.
	if _, err := pki.NewCAFromKeyPair(cert, key, nil); err != nil {
		return nil, nil, fmt.Errorf("importing CA: %s and %s: %w", certFile, keyFile, err)
	}
	return cert, key, nil
}

func reportNewCA(ctx context.Context, w io.Writer, store pki.SettingStore, verb string, old, current *x509.Certificate) error {
	previous, err := pki.PreviousCAs(ctx, store)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s CA %s (SHA-256 %s).\n", verb, current.Subject, fingerprint(current))
	if old != nil && !old.Equal(current) {
		fmt.Fprintf(w, "The CA it replaces (SHA-256 %s) stays trusted for the device identities it issued, until they renew.\n", fingerprint(old))
	}
	fmt.Fprintln(w)
	intermediate, err := currentIntermediate(ctx, store)
	if err != nil {
		return err
	}
	if err := printCAs(w, current, intermediate, previous, time.Now()); err != nil {
		return err
	}
	fmt.Fprint(w, `
Restart bramley serve, every replica, to use it. Then:
  - bramley serve issues itself a new HTTPS certificate from this CA (unless given --tls-cert):
    admin clients trusting the old CA with --ca-file need this one (bramley ca export);
    devices trust the CA their enrollment profile carried, so enrolled devices need it
    too before they can reach a server whose HTTPS certificate it issued;
  - new enrollment profiles carry this CA.
`)
	return nil
}

func printCAs(w io.Writer, current, intermediate *x509.Certificate, previous []*x509.Certificate, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "Root CA certificate (what ca export writes)")
	printCA(tw, current, now)
	if intermediate != nil {
		fmt.Fprintln(tw, "\nIntermediate CA certificate (issues identities and HTTPS certificates)")
		printCA(tw, intermediate, now)
	}
	if len(previous) == 0 {
		fmt.Fprintln(tw, "\nPrevious CAs still trusted: none")
	} else {
		fmt.Fprintln(tw, "\nPrevious CAs still trusted (for the identities they issued, until those renew)")
		for i, c := range previous {
			if i > 0 {
				fmt.Fprintln(tw)
			}
			printCA(tw, c, now)
		}
	}
	return tw.Flush()
}

func printCA(tw io.Writer, c *x509.Certificate, now time.Time) {
	fmt.Fprintf(tw, "  Subject:\t%s\n", c.Subject)
	if !bytes.Equal(c.RawIssuer, c.RawSubject) {
		fmt.Fprintf(tw, "  Issuer:\t%s\n", c.Issuer)
	}
	fmt.Fprintf(tw, "  Serial:\t%s\n", colonHex(c.SerialNumber.Bytes()))
	fmt.Fprintf(tw, "  Not before:\t%s\n", c.NotBefore.UTC().Format(time.RFC3339))
	left := c.NotAfter.Sub(now)
	state := fmt.Sprintf("%d days left", int(left.Hours()/24))
	if left <= 0 {
		state = "expired"
	}
	fmt.Fprintf(tw, "  Not after:\t%s (%s)\n", c.NotAfter.UTC().Format(time.RFC3339), state)
	fmt.Fprintf(tw, "  SHA-256:\t%s\n", fingerprint(c))
	fmt.Fprintf(tw, "  Key:\t%s\n", pki.KeyDescription(c.PublicKey))
}

// fingerprint is the certificate's SHA-256 as openssl x509 -fingerprint
// writes it.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return colonHex(sum[:])
}

func colonHex(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":")
}
