package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/spf13/cobra"

	"github.com/bramley-mdm/bramley/directory"
	"github.com/bramley-mdm/bramley/server"
)

func serveCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	cfg := server.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the bramley server",
		Long: `Run the bramley server. With no flags it keeps its data in ./bramley-data
(an embedded SQLite database, its CA and its TLS certificate, all created on
first start) and serves HTTPS on :8443. Every flag has a BRAMLEY_ environment twin.`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", cfg.DataDir, "directory for the database, secret key and TLS files")
	f.StringVar(&cfg.DB, "db", cfg.DB, "database: sqlite:PATH or a postgres:// URL (default: SQLite in the data directory)")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "address to listen on")
	f.StringVar(&cfg.PublicURL, "public-url", cfg.PublicURL, "base URL devices use to reach bramley (default: derived from --listen)")
	f.BoolVar(&cfg.HTTP, "http", cfg.HTTP, "serve plain HTTP, behind a TLS-terminating proxy")
	f.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "server certificate PEM file (default: one issued by bramley's CA)")
	f.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "server private key PEM file")
	f.StringSliceVar(&cfg.TrustCA, "trust-ca", cfg.TrustCA, "PEM file of an outside CA whose device identities are accepted too (repeatable)")
	f.StringVar(&cfg.ProxyCertHeader, "proxy-cert-header", cfg.ProxyCertHeader, "header in which a trusted TLS-terminating proxy passes the client certificate (RFC 9440 Client-Cert or URL-escaped PEM)")
	f.StringVar(&cfg.APIKey, "api-key", cfg.APIKey, "an admin API key to accept, instead of relying on the generated one")
	f.StringVar(&cfg.SecretKey, "secret-key", cfg.SecretKey, "base64 of the 32-byte key sealing secrets at rest (default: DATA/secret.key)")
	f.Int64Var(&cfg.MaxBody, "max-body", cfg.MaxBody, "largest request body accepted, in bytes")
	f.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log format: text or json")
	f.StringVar(&cfg.PushTopic, "push-topic", cfg.PushTopic, "APNs topic for enrollment profiles until a push certificate is uploaded")
	f.StringVar(&cfg.Organization, "organization", cfg.Organization, "organisation named in enrollment profiles")
	f.BoolVar(&cfg.SignMessage, "sign-message", cfg.SignMessage, "enrolled devices sign every request (Mdm-Signature), for proxies that drop client certificates")
	f.StringVar(&cfg.Identity, "identity", cfg.Identity, "how enrolling devices get their identity: scep (the device makes its key) or pkcs12 (bramley sends key and certificate in the profile)")
	f.DurationVar(&cfg.IdentityLifetime, "identity-lifetime", cfg.IdentityLifetime, "lifetime of device identities issued through SCEP")
	f.DurationVar(&cfg.IdentityRenewalWindow, "identity-renewal-window", cfg.IdentityRenewalWindow, "how long before a device identity expires bramley sends it a new enrollment profile")
	f.StringVar(&cfg.EnrollAuth, "enroll-auth", cfg.EnrollAuth, "how people get the enrollment profile at /enroll: token (links with a token) or basic (sign in with a local account, see bramley user add; token links work too)")
	f.StringVar(&cfg.APNsURL, "apns-url", cfg.APNsURL, "APNs endpoint (default: Apple's production gateway)")
	f.StringVar(&cfg.APNsCA, "apns-ca", cfg.APNsCA, "PEM file of CAs to trust for --apns-url")
	f.StringVar(&cfg.ADEURL, "ade-url", cfg.ADEURL, "Apple device assignment (ADE) service endpoint (default: https://mdmenrollment.apple.com)")
	f.StringVar(&cfg.ADECA, "ade-ca", cfg.ADECA, "PEM file of CAs to trust for --ade-url")
	f.DurationVar(&cfg.ADESyncInterval, "ade-sync-interval", cfg.ADESyncInterval, "how often ADE devices are synced and profile assignment rules applied (one replica at a time; 0: only when asked)")
	f.StringVar(&cfg.VPPURL, "vpp-url", cfg.VPPURL, "Apple Apps and Books (VPP) service endpoint (default: https://vpp.itunes.apple.com/mdm/v2)")
	f.StringVar(&cfg.VPPCA, "vpp-ca", cfg.VPPCA, "PEM file of CAs to trust for --vpp-url")
	f.StringVar(&cfg.AppleDeviceCA, "apple-device-ca", cfg.AppleDeviceCA, "PEM file of CAs trusted to issue Apple device identities, besides Apple's built-in device CA")
	f.StringSliceVar(&cfg.OTADeny, "ota-deny", cfg.OTADeny, "serial number or product (e.g. iPhone14,5) that OTA enrollment refuses (repeatable)")
	f.StringSliceVar(&cfg.OTAMinOS, "ota-min-os", cfg.OTAMinOS, "minimum OS build for OTA enrollment per platform, PLATFORM=BUILD (iPhone, iPad, iPod, Mac, AppleTV, RealityDevice; e.g. iPhone=21A329,Mac=23A344)")
	f.StringVar(&cfg.OTAGroup, "ota-group", cfg.OTAGroup, "DN of the --ldap-url group a person must be in to enroll a device over the air (local accounts are then refused)")
	f.StringVar(&cfg.LDAP.URL, "ldap-url", cfg.LDAP.URL, "LDAP directory people may sign in with besides local accounts (ldap://host or ldaps://host; Open Directory speaks LDAP)")
	f.StringVar(&cfg.LDAP.BaseDN, "ldap-base-dn", cfg.LDAP.BaseDN, "where --ldap-url searches for people (the whole subtree)")
	f.StringVar(&cfg.LDAP.BindDN, "ldap-bind-dn", cfg.LDAP.BindDN, "service account that searches the directory (default: anonymous)")
	f.StringVar(&cfg.LDAP.BindPassword, "ldap-bind-password", cfg.LDAP.BindPassword, "password of --ldap-bind-dn (prefer the environment variable)")
	f.StringVar(&cfg.LDAP.UserFilter, "ldap-user-filter", directory.DefaultUserFilter, "LDAP filter finding a person; %s is the username, escaped")
	f.StringVar(&cfg.LDAP.Group, "ldap-group", cfg.LDAP.Group, "DN of a group people must be in to sign in (member, uniqueMember or memberUid)")
	f.StringVar(&cfg.LDAP.GUIDAttr, "ldap-guid-attr", directory.DefaultGUIDAttr, "attribute holding a user's GUID, the UserID a Mac sends when a network user logs in (OpenLDAP: entryUUID)")
	withEnvUsage(cmd)

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnv(cmd, getenv); err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		logger := newLogger(stderr, cfg.LogFormat)
		ctx := cmd.Context()
		// Listen first: with port 0 the public URL (which profiles carry)
		// is only known once bound.
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listening: %w", err)
		}
		defer ln.Close()
		if cfg.PublicURL == "" {
			cfg.PublicURL = server.PublicURLFor(cfg, ln.Addr().String())
		}
		srv, err := server.New(ctx, cfg, logger)
		if err != nil {
			return err
		}
		defer srv.Close()
		base := cfg.PublicURL
		fmt.Fprintf(stdout, "bramley is listening on %s\n", ln.Addr())
		fmt.Fprintf(stdout, "  devices check in at  %s/mdm/checkin and %s/mdm/connect\n", base, base)
		if cfg.EnrollAuth == server.EnrollAuthBasic {
			fmt.Fprintf(stdout, "  enrollment           %s/enroll  (sign in with a local account: bramley user add)\n", base)
		} else {
			fmt.Fprintf(stdout, "  enrollment           %s/enroll?token=…  (mint tokens: POST /api/v1/enrollment-tokens)\n", base)
		}
		fmt.Fprintf(stdout, "  admin API            %s/api/v1/  (OpenAPI: %s/api/v1/openapi.yaml)\n", base, base)
		if key := srv.AdminKey(); key != "" {
			fmt.Fprintf(stdout, "\nAdmin API key (shown once, stored hashed — keep it):\n  %s\n\n", key)
		}
		return srv.Serve(ctx, ln)
	}
	return cmd
}

func newLogger(w io.Writer, format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
