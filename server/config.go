package server

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/bramley-mdm/bramley/directory"
)

// Config is everything `bramley serve` is told. Defaults live in
// DefaultConfig; cmd/bramley maps flags and BRAMLEY_ variables onto it.
type Config struct {
	// DataDir holds the SQLite database, the secret key and TLS files.
	DataDir string
	// DB is "sqlite:PATH" or a postgres:// URL; empty means SQLite in DataDir.
	DB string
	// Listen is the address to serve on.
	Listen string
	// PublicURL is the base URL devices use; empty derives it from Listen.
	PublicURL string
	// HTTP serves plain HTTP, for running behind a TLS-terminating proxy.
	HTTP bool
	// TLSCert and TLSKey are the server's certificate and key files; empty
	// means a certificate issued by bramley's CA.
	TLSCert, TLSKey string
	// TrustCA lists PEM files of outside CAs whose device identities are
	// accepted besides bramley's own.
	TrustCA []string
	// ProxyCertHeader names the header a trusted proxy puts the client
	// certificate in (RFC 9440 Client-Cert, or URL-escaped PEM).
	ProxyCertHeader string
	// APIKey, when set, is an admin API key accepted besides generated ones.
	APIKey string
	// SecretKey is base64 of the 32-byte key that seals secrets at rest;
	// empty means DataDir/secret.key.
	SecretKey string
	// MaxBody caps every request body, in bytes.
	MaxBody int64
	// LogFormat is "text" or "json".
	LogFormat string
	// PushTopic is the APNs topic enrollment profiles carry until a push
	// certificate is uploaded (its topic then wins).
	PushTopic string
	// Organization names the organisation in enrollment profiles.
	Organization string
	// SignMessage makes enrolled devices sign every request
	// (Mdm-Signature); needed behind a proxy that drops client certificates.
	SignMessage bool
	// IdentityLifetime is how long SCEP-issued device identities last.
	IdentityLifetime time.Duration
	// Identity is how enrolling devices get their identity: "scep" (the
	// device makes its key) or "pkcs12" (bramley makes it and sends it in
	// the profile).
	Identity string
	// IdentityRenewalWindow is how long before a device identity expires
	// bramley sends the device a new enrollment profile to renew it.
	IdentityRenewalWindow time.Duration
	// EnrollAuth is how people get the enrollment profile at /enroll:
	// "token" (an enrollment link) or "basic" (a sign-in with a local
	// account; token links work too). See users.go.
	EnrollAuth string
	// APNsURL and APNsCA point pushes at another APNs endpoint (a fake,
	// a proxy); empty means Apple's production gateway.
	APNsURL, APNsCA string
	// ADEURL and ADECA point Automated Device Enrollment at another
	// device assignment service (a simulator, a fake); empty means Apple's
	// (mdmenrollment.apple.com). ADECA is a PEM file of CAs to trust.
	ADEURL, ADECA string
	// ADESyncInterval is how often ADE devices are synced and assignment
	// rules applied, by one replica at a time; 0 turns it off.
	ADESyncInterval time.Duration
	// VPPURL and VPPCA point Apps and Books at another service (a fake);
	// empty means Apple's (vpp.itunes.apple.com/mdm/v2). VPPCA is a PEM
	// file of CAs to trust.
	VPPURL, VPPCA string
	// AppleDeviceCA is a PEM file of CAs whose device identities sign
	// Setup Assistant's MachineInfo, trusted besides the built-in Apple
	// iPhone Device CA (pki.AppleDeviceCAs).
	AppleDeviceCA string
	// OTADeny lists serial numbers and products (e.g. "iPhone14,5") that
	// over-the-air enrollment refuses (enroll.DenyList).
	OTADeny []string
	// OTAMinOS is the minimum OS build per platform for over-the-air
	// enrollment, PLATFORM=BUILD each (enroll.MinOSBuild).
	OTAMinOS []string
	// OTAGroup is the DN of the directory group a person must be in to
	// enroll a device over the air (directory.LDAP.OTAGroupPolicy).
	OTAGroup string
	// LDAP is the directory people may also sign in with (portal.go);
	// an empty URL means local accounts only.
	LDAP directory.Config
}

// DefaultConfig returns the configuration of `bramley serve` with no flags.
func DefaultConfig() Config {
	return Config{
		DataDir:               "./bramley-data",
		Listen:                ":8443",
		MaxBody:               1 << 20,
		LogFormat:             "text",
		EnrollAuth:            EnrollAuthToken,
		IdentityLifetime:      365 * 24 * time.Hour,
		IdentityRenewalWindow: 30 * 24 * time.Hour,
		Identity:              "scep",
		ADESyncInterval:       30 * time.Minute,
	}
}

// Validate checks the configuration before anything is started.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data must not be empty"))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: %w", c.Listen, err))
	}
	if c.DB != "" && !strings.HasPrefix(c.DB, "sqlite:") && !isPostgres(c.DB) {
		errs = append(errs, fmt.Errorf("--db %q: want sqlite:PATH or a postgres:// URL", c.DB))
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--public-url %q: want an absolute http(s) URL", c.PublicURL))
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.HTTP && c.TLSCert != "" {
		errs = append(errs, errors.New("--http serves plain HTTP; --tls-cert makes no sense with it"))
	}
	if c.MaxBody < 4096 {
		errs = append(errs, fmt.Errorf("--max-body %d: at least 4096 bytes", c.MaxBody))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if c.PushTopic != "" && !strings.HasPrefix(c.PushTopic, "com.apple.mgmt.") {
		errs = append(errs, fmt.Errorf("--push-topic %q: an MDM topic starts with com.apple.mgmt.", c.PushTopic))
	}
	if c.IdentityLifetime < 24*time.Hour || c.IdentityLifetime > 5*365*24*time.Hour {
		errs = append(errs, fmt.Errorf("--identity-lifetime %s: between 24h and 5 years", c.IdentityLifetime))
	}
	// A window as long as the lifetime would make a freshly renewed
	// identity due again at once: every sweep would send every device a
	// profile. A third of the lifetime at most.
	if c.IdentityRenewalWindow < time.Hour || c.IdentityRenewalWindow > c.IdentityLifetime/3 {
		errs = append(errs, fmt.Errorf("--identity-renewal-window %s: between 1h and a third of --identity-lifetime (%s)",
			c.IdentityRenewalWindow, c.IdentityLifetime/3))
	}
	if c.Identity != "scep" && c.Identity != "pkcs12" {
		errs = append(errs, fmt.Errorf("--identity %q: want scep or pkcs12", c.Identity))
	}
	if c.APNsURL != "" {
		if u, err := url.Parse(c.APNsURL); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("--apns-url %q: want an https:// URL", c.APNsURL))
		}
	}
	if err := validateEnrollAuth(c.EnrollAuth); err != nil {
		errs = append(errs, err)
	}
	if c.ADEURL != "" {
		// The client's own check (https, or http to loopback) runs
		// when a token is used; this catches a typo before serving.
		if u, err := url.Parse(c.ADEURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--ade-url %q: want an https:// URL", c.ADEURL))
		}
	}
	if c.ADESyncInterval != 0 && c.ADESyncInterval < time.Minute {
		errs = append(errs, fmt.Errorf("--ade-sync-interval %s: at least 1m (or 0 for none)", c.ADESyncInterval))
	}
	if c.ADECA != "" && c.ADEURL == "" {
		errs = append(errs, errors.New("--ade-ca is for --ade-url; Apple's service needs no extra CA"))
	}
	errs = append(errs, c.validateOTA()...)
	if c.LDAP.URL != "" || c.LDAP.BaseDN != "" {
		if err := c.LDAP.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.VPPURL != "" {
		if u, err := url.Parse(c.VPPURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--vpp-url %q: want an https:// URL", c.VPPURL))
		}
	}
	if c.VPPCA != "" && c.VPPURL == "" {
		errs = append(errs, errors.New("--vpp-ca is for --vpp-url; Apple's service needs no extra CA"))
	}
	if c.APIKey != "" && len(c.APIKey) < 16 {
		errs = append(errs, errors.New("--api-key: at least 16 characters"))
	}
	return errors.Join(errs...)
}

func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// dbDSN is the database to open.
func (c *Config) dbDSN() string {
	if c.DB == "" {
		return "sqlite:" + filepath.Join(c.DataDir, "bramley.db")
	}
	return c.DB
}

// publicURL is the base URL devices reach bramley at.
func (c *Config) publicURL(listenAddr string) string {
	if c.PublicURL != "" {
		return strings.TrimRight(c.PublicURL, "/")
	}
	host, port, _ := net.SplitHostPort(listenAddr)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "localhost"
	}
	scheme := "https"
	if c.HTTP {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}
