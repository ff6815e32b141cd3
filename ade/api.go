package ade

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Account returns the MDM server and organization the token belongs to
// (GET /account).
func (c *Client) Account(ctx context.Context) (*Account, error) {
	var a Account
	if err := c.do(ctx, http.MethodGet, "/account", nil, nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

type cursorRequest struct {
	Cursor string `json:"cursor,omitempty"`
	Limit  int    `json:"limit,omitempty"`
}

// FetchDevices returns a page of every device assigned to the MDM server
// (POST /server/devices): from the start with an empty cursor, else from
// cursor. limit 0 lets Apple choose (100; at most 1000). A cursor that
// already returned everything gives ErrExhaustedCursor: go on with
// SyncDevices.
func (c *Client) FetchDevices(ctx context.Context, cursor string, limit int) (*DevicePage, error) {
	var p DevicePage
	if err := c.do(ctx, http.MethodPost, "/server/devices", nil, cursorRequest{cursor, limit}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// SyncDevices returns a page of the changes since cursor (POST
// /devices/sync), each device with its OpType. Apple refuses an empty
// cursor (CURSOR_REQUIRED); this refuses it before asking, as
// ErrInvalidCursor, so that a caller fetches again.
func (c *Client) SyncDevices(ctx context.Context, cursor string, limit int) (*DevicePage, error) {
	if cursor == "" {
		return nil, fmt.Errorf("ADE POST /devices/sync: no cursor: %w", ErrInvalidCursor)
	}
	var p DevicePage
	if err := c.do(ctx, http.MethodPost, "/devices/sync", nil, cursorRequest{cursor, limit}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

type devicesRequest struct {
	Devices []string `json:"devices"`
}

// DeviceDetails returns the records of the devices with the serial
// numbers (POST /devices), keyed by serial number; an unknown one has
// ResponseStatus NOT_FOUND.
func (c *Client) DeviceDetails(ctx context.Context, serials []string) (map[string]Device, error) {
	if len(serials) == 0 {
		return nil, errors.New("ADE POST /devices: no serial numbers")
	}
	var out struct {
		Devices map[string]Device `json:"devices"`
	}
	if err := c.do(ctx, http.MethodPost, "/devices", nil, devicesRequest{serials}, &out); err != nil {
		return nil, err
	}
	return out.Devices, nil
}

// DisownDevices gives the devices up (POST /devices/disown): after a short
// grace period they leave the organization for good. The answer maps each
// serial number to SUCCESS, NOT_ACCESSIBLE or FAILED.
func (c *Client) DisownDevices(ctx context.Context, serials []string) (map[string]string, error) {
	if len(serials) == 0 {
		return nil, errors.New("ADE POST /devices/disown: no serial numbers")
	}
	var out struct {
		Devices map[string]string `json:"devices"`
	}
	if err := c.do(ctx, http.MethodPost, "/devices/disown", nil, devicesRequest{serials}, &out); err != nil {
		return nil, err
	}
	return out.Devices, nil
}

// DefineProfile validates p and defines it (POST /profile); with
// p.Devices set, Apple also assigns it to them. Each definition makes a
// new profile UUID: profiles cannot be changed, only replaced.
func (c *Client) DefineProfile(ctx context.Context, p *Profile) (*DefineResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	var out DefineResult
	if err := c.do(ctx, http.MethodPost, "/profile", nil, p, &out); err != nil {
		return nil, err
	}
	if out.ProfileUUID == "" {
		return nil, errors.New("ADE POST /profile: no profile_uuid in the answer")
	}
	return &out, nil
}

// GetProfile returns the profile defined as uuid (GET /profile);
// ErrNotFound when Apple does not know it.
func (c *Client) GetProfile(ctx context.Context, uuid string) (*Profile, error) {
	if uuid == "" {
		return nil, errors.New("ADE GET /profile: no profile UUID")
	}
	var p Profile
	if err := c.do(ctx, http.MethodGet, "/profile", url.Values{"profile_uuid": {uuid}}, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

type assignRequest struct {
	ProfileUUID string   `json:"profile_uuid"`
	Devices     []string `json:"devices"`
}

// AssignProfile assigns the profile uuid to the devices (/profile/devices).
// Apple's current documentation says POST; the 2018 reference and nanodep
// say PUT, and Apple's /account lists both. Devices Apple THROTTLED come
// with RetryAfter.
func (c *Client) AssignProfile(ctx context.Context, uuid string, serials []string) (*AssignResult, error) {
	if uuid == "" || len(serials) == 0 {
		return nil, errors.New("ADE POST /profile/devices: no profile UUID or no serial numbers")
	}
	var out struct {
		AssignResult
		RetryAfterSeconds int `json:"retry_after_seconds"`
	}
	if err := c.do(ctx, http.MethodPost, "/profile/devices", nil, assignRequest{uuid, serials}, &out); err != nil {
		return nil, err
	}
	r := out.AssignResult
	r.RetryAfter = time.Duration(max(out.RetryAfterSeconds, 0)) * time.Second
	return &r, nil
}

// RemoveProfile unassigns the devices' profile (DELETE /profile/devices).
// A device that already fetched its profile keeps it until it is erased.
// The answer maps each serial number to its status.
func (c *Client) RemoveProfile(ctx context.Context, serials []string) (map[string]string, error) {
	if len(serials) == 0 {
		return nil, errors.New("ADE DELETE /profile/devices: no serial numbers")
	}
	var out struct {
		Devices map[string]string `json:"devices"`
	}
	if err := c.do(ctx, http.MethodDelete, "/profile/devices", nil, devicesRequest{serials}, &out); err != nil {
		return nil, err
	}
	return out.Devices, nil
}
