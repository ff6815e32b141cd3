package vpp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
)

// Event statuses.
const (
	EventPending  = "PENDING"
	EventComplete = "COMPLETE"
	// EventFailed is the status of an event with any failure, even when
	// most of its items completed: Failures says which.
	EventFailed = "FAILED"
)

// Event types.
const (
	EventAssociate    = "ASSOCIATE"
	EventDisassociate = "DISASSOCIATE"
	EventRevoke       = "REVOKE"
	EventCreate       = "CREATE"
	EventUpdate       = "UPDATE"
	EventRetire       = "RETIRE"
)

// ErrEventPending means WaitEvent gave up while the event was still
// pending; it may complete later (Apple's notifications or a later poll).
var ErrEventPending = errors.New("the Apps and Books event is still pending")

// EventStatus is Apple's StatusResponse (GET /status): how far an
// asynchronous write has got.
type EventStatus struct {
	EventStatus  string  `json:"eventStatus"`
	EventType    string  `json:"eventType"`
	NumCompleted int     `json:"numCompleted"`
	NumRequested int     `json:"numRequested"`
	Failures     []Error `json:"failures,omitempty"`
}

// FailureFor returns the failure that names clientUserID or serialNumber
// in its errorInfo, or the first failure that names no one (it applies to
// the whole event); nil when the item did not fail.
func (s *EventStatus) FailureFor(clientUserID, serialNumber string) *Error {
	var general *Error
	for i := range s.Failures {
		f := &s.Failures[i]
		if f.Info == nil || (len(f.Info.ClientUserIDs) == 0 && len(f.Info.SerialNumbers) == 0) {
			if general == nil {
				general = f
			}
			continue
		}
		if (clientUserID != "" && slices.Contains(f.Info.ClientUserIDs, clientUserID)) ||
			(serialNumber != "" && slices.Contains(f.Info.SerialNumbers, serialNumber)) {
			return f
		}
	}
	if s.EventStatus == EventFailed {
		return general
	}
	return nil
}

// EventStatus reads an event's status once (GET /status?eventId=).
func (c *Client) EventStatus(ctx context.Context, eventID string) (*EventStatus, error) {
	var st EventStatus
	q := url.Values{"eventId": {eventID}}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/status", query: q}, &st); err != nil {
		return nil, fmt.Errorf("reading event %s: %w", eventID, err)
	}
	return &st, nil
}

// WaitEvent polls an event until it is no longer pending, waiting the poll
// interval (30 s by default, the least Apple allows) before each poll. It
// returns the last status with ErrEventPending after the configured
// number of polls. A FAILED event is not an error here: the caller reads
// Failures item by item.
func (c *Client) WaitEvent(ctx context.Context, eventID string) (*EventStatus, error) {
	var st *EventStatus
	for range c.maxPolls {
		if err := c.sleep(ctx, c.pollInterval); err != nil {
			return st, err
		}
		var err error
		if st, err = c.EventStatus(ctx, eventID); err != nil {
			return nil, err
		}
		if st.EventStatus != EventPending {
			return st, nil
		}
	}
	return st, fmt.Errorf("event %s: %w", eventID, ErrEventPending)
}
