package vpp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// ServiceConfig is Apple's ServiceConfigResponse (GET /service/config):
// the current limits, URLs, notification types and error numbers. Apple
// changes limits and URLs without notice; the Client re-reads them every
// 5 minutes.
type ServiceConfig struct {
	ErrorCodes        []ErrorCode `json:"errorCodes"`
	Limits            Limits      `json:"limits"`
	NotificationTypes []string    `json:"notificationTypes"`
	URLs              ServiceURLs `json:"urls"`
}

// ErrorCode is one entry of the service configuration's error list.
type ErrorCode struct {
	ErrorNumber  int    `json:"errorNumber"`
	ErrorMessage string `json:"errorMessage"`
}

// Limits are the request limits of the service configuration.
type Limits struct {
	MaxAssets                    int `json:"maxAssets"`
	MaxUsers                     int `json:"maxUsers"`
	MaxNotificationLength        int `json:"maxNotificationLength"`
	MaxRevokeClientUserIDs       int `json:"maxRevokeClientUserIds"`
	MaxClientUserIDs             int `json:"maxClientUserIds"`
	MaxSerialNumbers             int `json:"maxSerialNumbers"`
	MaxRevokeSerialNumbers       int `json:"maxRevokeSerialNumbers"`
	MaxRequestPerSecond          int `json:"maxRequestPerSecond"`
	MaxSubscriptions             int `json:"maxSubscriptions"`
	MaxSubscriptionClientUserIDs int `json:"maxSubscriptionClientUserIds"`
	MaxMDMNameLength             int `json:"maxMdmNameLength"`
	MaxMDMMetadataLength         int `json:"maxMdmMetadataLength"`
	MaxMDMIDLength               int `json:"maxMdmIdLength"`
}

// DefaultLimits are the limits Apple documents ("Service Config"), used
// until the service configuration has been read and when it cannot be.
var DefaultLimits = Limits{
	MaxAssets:                    25,
	MaxUsers:                     100,
	MaxNotificationLength:        512,
	MaxRevokeClientUserIDs:       100,
	MaxClientUserIDs:             1000,
	MaxSerialNumbers:             1000,
	MaxRevokeSerialNumbers:       100,
	MaxRequestPerSecond:          15,
	MaxSubscriptions:             25,
	MaxSubscriptionClientUserIDs: 1000,
	MaxMDMNameLength:             100,
	MaxMDMMetadataLength:         255,
	MaxMDMIDLength:               100,
}

// withDefaults fills limits the configuration left out (0) with the
// documented ones, so that a missing key never reads as "nothing allowed".
func (l Limits) withDefaults() Limits {
	fill := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	d := DefaultLimits
	fill(&l.MaxAssets, d.MaxAssets)
	fill(&l.MaxUsers, d.MaxUsers)
	fill(&l.MaxNotificationLength, d.MaxNotificationLength)
	fill(&l.MaxRevokeClientUserIDs, d.MaxRevokeClientUserIDs)
	fill(&l.MaxClientUserIDs, d.MaxClientUserIDs)
	fill(&l.MaxSerialNumbers, d.MaxSerialNumbers)
	fill(&l.MaxRevokeSerialNumbers, d.MaxRevokeSerialNumbers)
	fill(&l.MaxRequestPerSecond, d.MaxRequestPerSecond)
	fill(&l.MaxSubscriptions, d.MaxSubscriptions)
	fill(&l.MaxSubscriptionClientUserIDs, d.MaxSubscriptionClientUserIDs)
	fill(&l.MaxMDMNameLength, d.MaxMDMNameLength)
	fill(&l.MaxMDMMetadataLength, d.MaxMDMMetadataLength)
	fill(&l.MaxMDMIDLength, d.MaxMDMIDLength)
	return l
}

// ServiceURLs are the service configuration's URLs. The Client calls the
// documented v2 paths under its base URL rather than these: following
// URLs from an answer would let that answer send the content token to
// any host. InvitationEmail is the one used, as a template.
type ServiceURLs struct {
	InvitationEmail       string `json:"invitationEmail"`
	ClientConfig          string `json:"clientConfig"`
	CreateUsers           string `json:"createUsers"`
	GetAssignments        string `json:"getAssignments"`
	RevokeAssets          string `json:"revokeAssets"`
	ContentMetadataLookup string `json:"contentMetadataLookup"`
	GetUsers              string `json:"getUsers"`
	EventStatus           string `json:"eventStatus"`
	AssociateAssets       string `json:"associateAssets"`
	DisassociateAssets    string `json:"disassociateAssets"`
	UpdateUsers           string `json:"updateUsers"`
	GetAssets             string `json:"getAssets"`
	RetireUsers           string `json:"retireUsers"`
}

// defaultInvitationURL is the documented template, for when the service
// configuration has none.
const defaultInvitationURL = "https://buy.itunes.apple.com/WebObjects/MZFinance.woa/wa/associateVPPUserWithITSAccount?inviteCode=%25inviteCode%25&mt=8"

// InvitationURL is the URL a person opens to accept an invitation: the
// invitationEmail template with the code in place of %inviteCode% (which
// Apple writes URL-encoded, as %25inviteCode%25).
func (s *ServiceConfig) InvitationURL(inviteCode string) string {
	tmpl := s.URLs.InvitationEmail
	if tmpl == "" {
		tmpl = defaultInvitationURL
	}
	code := url.QueryEscape(inviteCode)
	tmpl = strings.ReplaceAll(tmpl, "%25inviteCode%25", code)
	return strings.ReplaceAll(tmpl, "%inviteCode%", code)
}

// ServiceConfig reads the service configuration (GET /service/config, the
// one endpoint without authentication) and keeps it for the Client's
// limits and pacing.
func (c *Client) ServiceConfig(ctx context.Context) (*ServiceConfig, error) {
	var cfg ServiceConfig
	if err := c.do(ctx, request{method: http.MethodGet, path: "/service/config", public: true}, &cfg); err != nil {
		return nil, fmt.Errorf("reading the Apps and Books service configuration: %w", err)
	}
	cfg.Limits = cfg.Limits.withDefaults()
	c.mu.Lock()
	c.cfg, c.cfgAt = &cfg, c.now()
	c.mu.Unlock()
	return &cfg, nil
}

// cachedConfig returns the service configuration read within the last 5
// minutes, reading it again when older. When it cannot be read it falls
// back to the last one read, then to the documented defaults: limits
// matter for sizing requests, and Apple's own refusal (9700…) is the
// backstop.
func (c *Client) cachedConfig(ctx context.Context) *ServiceConfig {
	c.mu.Lock()
	cfg, at := c.cfg, c.cfgAt
	c.mu.Unlock()
	if cfg != nil && c.now().Sub(at) < configTTL {
		return cfg
	}
	if fresh, err := c.ServiceConfig(ctx); err == nil {
		return fresh
	}
	if cfg != nil {
		return cfg
	}
	return &ServiceConfig{Limits: DefaultLimits}
}

// Limits returns the current request limits (see cachedConfig).
func (c *Client) Limits(ctx context.Context) Limits { return c.cachedConfig(ctx).Limits }

// InvitationURL returns the invitation URL for inviteCode from the current
// service configuration.
func (c *Client) InvitationURL(ctx context.Context, inviteCode string) string {
	return c.cachedConfig(ctx).InvitationURL(inviteCode)
}

// MDMInfo names an MDM server in a location's client configuration (v2's
// replacement for v1's clientContext). Apple requires all three fields.
type MDMInfo struct {
	// ID identifies the server installation, stable across restarts and
	// shared by a cluster's replicas.
	ID string `json:"id"`
	// Name is the product ("bramley").
	Name string `json:"name"`
	// Metadata is free-form: bramley puts its version and public URL.
	Metadata string `json:"metadata"`
}

// ClientConfig is Apple's ClientConfigResponse: the location and the
// client settings stored for it.
type ClientConfig struct {
	CountryISO2ACode            string    `json:"countryISO2ACode"`
	DefaultPlatform             string    `json:"defaultPlatform"`
	LocationName                string    `json:"locationName"`
	MDMInfo                     *MDMInfo  `json:"mdmInfo,omitempty"`
	NotificationAuthToken       string    `json:"notificationAuthToken,omitempty"`
	NotificationURL             string    `json:"notificationUrl,omitempty"`
	SubscribedNotificationTypes []string  `json:"subscribedNotificationTypes,omitempty"`
	TokenExpirationDate         Timestamp `json:"tokenExpirationDate"`
	// UID identifies the location's library: two content tokens with the
	// same UID manage the same licences.
	UID        string `json:"uId"`
	WebsiteURL string `json:"websiteURL"`
}

// ClientConfigRequest is Apple's ClientConfigRequest (POST
// /client/config). Notification fields are set together or not at all
// (9710).
type ClientConfigRequest struct {
	MDMInfo               *MDMInfo `json:"mdmInfo,omitempty"`
	NotificationAuthToken string   `json:"notificationAuthToken,omitempty"`
	NotificationURL       string   `json:"notificationUrl,omitempty"`
	NotificationTypes     []string `json:"notificationTypes,omitempty"`
}

// Notification types for ClientConfigRequest.
const (
	NotifyAssetManagement = "ASSET_MANAGEMENT"
	NotifyUserManagement  = "USER_MANAGEMENT"
	NotifyUserAssociated  = "USER_ASSOCIATED"
	NotifyAssetCount      = "ASSET_COUNT"
)

// ClientConfig reads the location's client configuration (GET
// /client/config). It also proves the token: Apple refuses a bad one.
func (c *Client) ClientConfig(ctx context.Context) (*ClientConfig, error) {
	var cc ClientConfig
	if err := c.do(ctx, request{method: http.MethodGet, path: "/client/config", ownClaimCheck: true}, &cc); err != nil {
		return nil, fmt.Errorf("reading the Apps and Books client configuration: %w", err)
	}
	return &cc, nil
}

// SetClientConfig writes the location's client configuration (POST
// /client/config).
func (c *Client) SetClientConfig(ctx context.Context, req ClientConfigRequest) (*ClientConfig, error) {
	var cc ClientConfig
	r := request{method: http.MethodPost, path: "/client/config", body: req, ownClaimCheck: true}
	if err := c.do(ctx, r, &cc); err != nil {
		return nil, fmt.Errorf("writing the Apps and Books client configuration: %w", err)
	}
	return &cc, nil
}

// ErrNoMDMInfo means Claim was called on a Client without WithMDMInfo.
var ErrNoMDMInfo = errors.New("the client has no MDM info to claim the location with")

// Claim makes this server the location's manager: it reads the client
// configuration and writes this server's MDMInfo into it, unless another
// server's is there, in which case it returns a *ClaimError (wrapping
// ErrLocationClaimed) and the configuration, for the administrator to
// decide; force takes the location over anyway. Claiming again is
// harmless, and refreshes the name and metadata.
func (c *Client) Claim(ctx context.Context, force bool) (*ClientConfig, error) {
	me := c.mdm
	if me.ID == "" || me.Name == "" || me.Metadata == "" {
		return nil, ErrNoMDMInfo
	}
	lim := c.Limits(ctx)
	if len(me.ID) > lim.MaxMDMIDLength || len(me.Name) > lim.MaxMDMNameLength || len(me.Metadata) > lim.MaxMDMMetadataLength {
		return nil, fmt.Errorf("%w: mdmInfo longer than the configuration allows", ErrRequestTooLarge)
	}
	cur, err := c.ClientConfig(ctx)
	if err != nil {
		return nil, err
	}
	if h := cur.MDMInfo; h != nil && h.ID != "" && h.ID != me.ID && !force {
		return cur, &ClaimError{Holder: *h}
	}
	if h := cur.MDMInfo; h != nil && *h == me {
		return cur, nil
	}
	cc, err := c.SetClientConfig(ctx, ClientConfigRequest{MDMInfo: &me})
	if err != nil {
		return nil, fmt.Errorf("claiming the location: %w", err)
	}
	return cc, nil
}
