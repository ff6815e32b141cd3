package vpp

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// Pricing parameters: an asset is the pair of adamId and pricingParam.
const (
	PricingStandard = "STDQ"
	PricingPlus     = "PLUS"
)

// Product types of an asset.
const (
	ProductApp  = "App"
	ProductBook = "Book"
)

// UnlimitedCount is the totalCount of a free asset with unlimited
// licences when the request does not filter on "unlimited".
const UnlimitedCount = 2147483647

// Asset is Apple's ResponseAsset: an app or book the location owns, with
// its licence counts.
type Asset struct {
	AdamID             string   `json:"adamId"`
	PricingParam       string   `json:"pricingParam"`
	ProductType        string   `json:"productType"`
	AssignedCount      int      `json:"assignedCount"`
	AvailableCount     int      `json:"availableCount"`
	RetiredCount       int      `json:"retiredCount"`
	TotalCount         int      `json:"totalCount"`
	DeviceAssignable   bool     `json:"deviceAssignable"`
	Revocable          bool     `json:"revocable"`
	SupportedPlatforms []string `json:"supportedPlatforms,omitempty"`
}

// AssetFilter selects assets (Get Assets' query); zero fields match all.
type AssetFilter struct {
	AdamID           string
	PricingParam     string
	ProductType      string
	DeviceAssignable *bool
	Revocable        *bool
}

func (f AssetFilter) query() url.Values {
	q := url.Values{}
	setString(q, "adamId", f.AdamID)
	setString(q, "pricingParam", f.PricingParam)
	setString(q, "productType", f.ProductType)
	setBool(q, "deviceAssignable", f.DeviceAssignable)
	setBool(q, "revocable", f.Revocable)
	return q
}

// AssetsPage reads one page of assets (GET /assets).
func (c *Client) AssetsPage(ctx context.Context, f AssetFilter, page int) ([]Asset, Page, error) {
	var v struct {
		Page
		Assets []Asset `json:"assets"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/assets", query: pageQuery(f.query(), page)}, &v); err != nil {
		return nil, Page{}, fmt.Errorf("reading assets: %w", err)
	}
	return v.Assets, v.Page, nil
}

// Assets reads every page of assets.
func (c *Client) Assets(ctx context.Context, f AssetFilter) ([]Asset, error) {
	all, _, err := collectPages(ctx, func(ctx context.Context, page int) ([]Asset, Page, error) {
		return c.AssetsPage(ctx, f, page)
	})
	return all, err
}

// Assignment is Apple's Assignment: one licence of an asset held by a user
// (ClientUserID) or a device (SerialNumber).
type Assignment struct {
	AdamID       string `json:"adamId"`
	PricingParam string `json:"pricingParam"`
	ClientUserID string `json:"clientUserId,omitempty"`
	SerialNumber string `json:"serialNumber,omitempty"`
}

// AssignmentFilter selects assignments (Get Assignments' query).
type AssignmentFilter struct {
	AdamID       string
	ClientUserID string
	SerialNumber string
	// SinceVersionID reads only what changed since a Page.VersionID.
	SinceVersionID string
}

func (f AssignmentFilter) query() url.Values {
	q := url.Values{}
	setString(q, "adamId", f.AdamID)
	setString(q, "clientUserId", f.ClientUserID)
	setString(q, "serialNumber", f.SerialNumber)
	setString(q, "sinceVersionId", f.SinceVersionID)
	return q
}

// AssignmentsPage reads one page of assignments (GET /assignments).
func (c *Client) AssignmentsPage(ctx context.Context, f AssignmentFilter, page int) ([]Assignment, Page, error) {
	var v struct {
		Page
		Assignments []Assignment `json:"assignments"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/assignments", query: pageQuery(f.query(), page)}, &v); err != nil {
		return nil, Page{}, fmt.Errorf("reading assignments: %w", err)
	}
	return v.Assignments, v.Page, nil
}

// Assignments reads every page of assignments. The returned versionID is
// for a later AssignmentFilter.SinceVersionID.
func (c *Client) Assignments(ctx context.Context, f AssignmentFilter) (assignments []Assignment, versionID string, err error) {
	all, last, err := collectPages(ctx, func(ctx context.Context, page int) ([]Assignment, Page, error) {
		return c.AssignmentsPage(ctx, f, page)
	})
	return all, last.VersionID, err
}

// AssetRef names an asset in a request. Without PricingParam Apple picks
// the location's standard-quality licence.
type AssetRef struct {
	AdamID       string `json:"adamId"`
	PricingParam string `json:"pricingParam,omitempty"`
}

// ManageAssets is Apple's ManageAssetsRequest: every asset to every user
// and every device listed.
type ManageAssets struct {
	Assets        []AssetRef `json:"assets"`
	ClientUserIDs []string   `json:"clientUserIds,omitempty"`
	SerialNumbers []string   `json:"serialNumbers,omitempty"`
}

// EventResponse is Apple's answer to a write: the asynchronous event that
// will carry it out.
type EventResponse struct {
	EventID             string    `json:"eventId"`
	TokenExpirationDate Timestamp `json:"tokenExpirationDate"`
	UID                 string    `json:"uId"`
}

// check refuses locally what Apple would refuse: no asset (9718), no
// target (9719), duplicates (9703–9705), or over the limits (9700–9702).
func (m ManageAssets) check(lim Limits) error {
	switch {
	case len(m.Assets) == 0:
		return fmt.Errorf("%w: no assets", ErrInvalidArgument)
	case len(m.ClientUserIDs) == 0 && len(m.SerialNumbers) == 0:
		return fmt.Errorf("%w: neither clientUserIds nor serialNumbers", ErrInvalidArgument)
	case len(m.Assets) > lim.MaxAssets, len(m.ClientUserIDs) > lim.MaxClientUserIDs, len(m.SerialNumbers) > lim.MaxSerialNumbers:
		return fmt.Errorf("%w: %d assets, %d users, %d devices (at most %d, %d, %d)", ErrRequestTooLarge,
			len(m.Assets), len(m.ClientUserIDs), len(m.SerialNumbers), lim.MaxAssets, lim.MaxClientUserIDs, lim.MaxSerialNumbers)
	case hasDuplicates(m.ClientUserIDs), hasDuplicates(m.SerialNumbers), hasDuplicates(m.Assets):
		return fmt.Errorf("%w: duplicates in the request", ErrInvalidArgument)
	}
	return nil
}

func hasDuplicates[T comparable](s []T) bool {
	seen := make(map[T]struct{}, len(s))
	for _, v := range s {
		if _, ok := seen[v]; ok {
			return true
		}
		seen[v] = struct{}{}
	}
	return false
}

// Associate assigns licences (POST /assets/associate) and returns the
// event that carries the assignment out: install an app only once the
// event has completed. Each user or device gets one licence of each asset.
func (c *Client) Associate(ctx context.Context, m ManageAssets) (*EventResponse, error) {
	return c.manageAssets(ctx, "/assets/associate", m)
}

// Disassociate takes licences back (POST /assets/disassociate). An app
// left installed stops working 30 days later.
func (c *Client) Disassociate(ctx context.Context, m ManageAssets) (*EventResponse, error) {
	return c.manageAssets(ctx, "/assets/disassociate", m)
}

func (c *Client) manageAssets(ctx context.Context, path string, m ManageAssets) (*EventResponse, error) {
	if err := m.check(c.Limits(ctx)); err != nil {
		return nil, err
	}
	var ev EventResponse
	if err := c.do(ctx, request{method: http.MethodPost, path: path, body: m}, &ev); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &ev, nil
}
