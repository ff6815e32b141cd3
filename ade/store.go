package ade

import (
	"context"
	"time"
)

// Token is a server token as bramley keeps it: what an administrator may
// see, and its OAuth secrets sealed. It is safe to encode as JSON: the
// sealed secrets never are.
type Token struct {
	ID          string `json:"id"`
	ConsumerKey string `json:"consumer_key"`
	// AccessTokenExpiry is when Apple stops accepting the token.
	AccessTokenExpiry time.Time `json:"access_token_expiry"`
	// ServerName is the MDM server's name in Apple Business Manager, when
	// Apple's /account told it at upload.
	ServerName string    `json:"server_name,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Sealed is the ServerToken as JSON, sealed with the server's secret
	// key (Service seals and opens it; storage only keeps the bytes).
	Sealed []byte `json:"-"`
}

// TokenStore keeps server tokens.
type TokenStore interface {
	// PutToken stores t. A token whose consumer key is stored already (a
	// renewed token of the same MDM server) replaces that one's sealed
	// secrets, expiry, server name and UpdatedAt, and keeps its ID,
	// CreatedAt, cursor and devices. It returns the token as stored.
	// Idempotent.
	PutToken(ctx context.Context, t Token) (Token, error)
	// Tokens returns every token, oldest first; none: nil, nil.
	Tokens(ctx context.Context) ([]Token, error)
	// Token returns one token; storage.ErrNotFound when there is none.
	Token(ctx context.Context, id string) (Token, error)
}

// DeviceRecord is a device as bramley last heard of it from Apple's ADE
// service, under one server token.
type DeviceRecord struct {
	TokenID            string    `json:"token_id"`
	SerialNumber       string    `json:"serial_number"`
	Model              string    `json:"model,omitempty"`
	Description        string    `json:"description,omitempty"`
	Color              string    `json:"color,omitempty"`
	AssetTag           string    `json:"asset_tag,omitempty"`
	OS                 string    `json:"os,omitempty"`
	DeviceFamily       string    `json:"device_family,omitempty"`
	ProfileStatus      string    `json:"profile_status,omitempty"`
	ProfileUUID        string    `json:"profile_uuid,omitempty"`
	ProfileAssignTime  time.Time `json:"profile_assign_time,omitzero"`
	ProfilePushTime    time.Time `json:"profile_push_time,omitzero"`
	DeviceAssignedDate time.Time `json:"device_assigned_date,omitzero"`
	DeviceAssignedBy   string    `json:"device_assigned_by,omitempty"`
	// OpType is the last operation Apple reported ("added", "modified",
	// "deleted"); empty when the device came from a full fetch.
	OpType OpType    `json:"op_type,omitempty"`
	OpDate time.Time `json:"op_date,omitzero"`
	// Deleted: the device left this MDM server (OpType deleted). The
	// record stays, with the fields it had before.
	Deleted bool `json:"deleted"`
	// AssignProfileID, AssignResult and AssignTime tell what came of
	// bramley's last assignment of a profile to the device: Apple's
	// SUCCESS, NOT_ACCESSIBLE, FAILED or THROTTLED (AssignmentStore).
	AssignProfileID string    `json:"assign_profile_id,omitempty"`
	AssignResult    string    `json:"assign_result,omitempty"`
	AssignTime      time.Time `json:"assign_time,omitzero"`
}

// DeviceLister lists the devices the syncer recorded.
type DeviceLister interface {
	// ADEDevices returns the devices of the token, or of every token when
	// tokenID is "", deleted ones included, ordered by token and serial
	// number; none (or an unknown token): nil, nil.
	ADEDevices(ctx context.Context, tokenID string) ([]DeviceRecord, error)
}
