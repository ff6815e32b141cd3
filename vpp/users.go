package vpp

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// UserStatus is the state of a user at Apple: Registered (created, the
// invitation not accepted yet), Associated (an Apple Account accepted it:
// the user now has an idHash) and Retired.
type UserStatus string

// User statuses.
const (
	StatusRegistered UserStatus = "Registered"
	StatusAssociated UserStatus = "Associated"
	StatusRetired    UserStatus = "Retired"
)

// User is Apple's ResponseUser.
type User struct {
	// ClientUserID is the server's name for the user, unique in the
	// location and never changed; not an e-mail address.
	ClientUserID   string     `json:"clientUserId"`
	Email          string     `json:"email,omitempty"`
	ManagedAppleID string     `json:"managedAppleId,omitempty"`
	Status         UserStatus `json:"status"`
	// InviteCode is present until the invitation is accepted.
	InviteCode string `json:"inviteCode,omitempty"`
	// IDHash identifies the Apple Account that accepted the invitation
	// (v1's itsIdHash). One account can accept several users'
	// invitations; they then share an IDHash.
	IDHash string `json:"idHash,omitempty"`
}

// UserFilter selects users (Get Users' query).
type UserFilter struct {
	ClientUserID   string
	ActiveOnly     bool
	RetiredOnly    bool
	SinceVersionID string
}

func (f UserFilter) query() url.Values {
	q := url.Values{}
	setString(q, "clientUserId", f.ClientUserID)
	if f.ActiveOnly {
		q.Set("activeOnly", "true")
	}
	if f.RetiredOnly {
		q.Set("retiredOnly", "true")
	}
	setString(q, "sinceVersionId", f.SinceVersionID)
	return q
}

// UsersPage reads one page of users (GET /users).
func (c *Client) UsersPage(ctx context.Context, f UserFilter, page int) ([]User, Page, error) {
	var v struct {
		Page
		Users []User `json:"users"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/users", query: pageQuery(f.query(), page)}, &v); err != nil {
		return nil, Page{}, fmt.Errorf("reading users: %w", err)
	}
	return v.Users, v.Page, nil
}

// Users reads every page of users. The returned versionID is for a later
// UserFilter.SinceVersionID.
func (c *Client) Users(ctx context.Context, f UserFilter) (users []User, versionID string, err error) {
	all, last, err := collectPages(ctx, func(ctx context.Context, page int) ([]User, Page, error) {
		return c.UsersPage(ctx, f, page)
	})
	return all, last.VersionID, err
}

// ActiveUser returns the user with clientUserID that is not retired
// (several records can share a clientUserId, one of them active);
// ErrUserNotFound when there is none.
func (c *Client) ActiveUser(ctx context.Context, clientUserID string) (*User, error) {
	users, _, err := c.UsersPage(ctx, UserFilter{ClientUserID: clientUserID, ActiveOnly: true}, 0)
	if err != nil {
		return nil, err
	}
	for i := range users {
		// The filter is Apple's to apply; check anyway, a retired record
		// must not pass for the active one.
		if users[i].ClientUserID == clientUserID && users[i].Status != StatusRetired {
			return &users[i], nil
		}
	}
	return nil, fmt.Errorf("user %q: %w", clientUserID, ErrUserNotFound)
}

// RequestUser is Apple's RequestUser, in ManageUsersRequest.
type RequestUser struct {
	ClientUserID   string `json:"clientUserId"`
	Email          string `json:"email,omitempty"`
	ManagedAppleID string `json:"managedAppleId,omitempty"`
}

// CreateUsers creates users (POST /users/create). Each gets an invitation
// code; the event fails 9716 for a clientUserId already active.
func (c *Client) CreateUsers(ctx context.Context, users []RequestUser) (*EventResponse, error) {
	return c.manageUsers(ctx, "/users/create", users)
}

// UpdateUsers changes users' e-mail or Managed Apple Account (POST
// /users/update).
func (c *Client) UpdateUsers(ctx context.Context, users []RequestUser) (*EventResponse, error) {
	return c.manageUsers(ctx, "/users/update", users)
}

// RetireUsers retires users (POST /users/retire); their revocable
// licences return to the location, books stay theirs.
func (c *Client) RetireUsers(ctx context.Context, clientUserIDs []string) (*EventResponse, error) {
	users := make([]RequestUser, len(clientUserIDs))
	for i, id := range clientUserIDs {
		users[i] = RequestUser{ClientUserID: id}
	}
	return c.manageUsers(ctx, "/users/retire", users)
}

func (c *Client) manageUsers(ctx context.Context, path string, users []RequestUser) (*EventResponse, error) {
	ids := make([]string, len(users))
	for i, u := range users {
		if u.ClientUserID == "" {
			return nil, fmt.Errorf("%s: %w: a user without clientUserId", path, ErrInvalidArgument)
		}
		ids[i] = u.ClientUserID
	}
	switch lim := c.Limits(ctx); {
	case len(users) == 0:
		return nil, fmt.Errorf("%s: %w: no users", path, ErrInvalidArgument)
	case len(users) > lim.MaxUsers:
		return nil, fmt.Errorf("%s: %w: %d users, at most %d", path, ErrRequestTooLarge, len(users), lim.MaxUsers)
	case hasDuplicates(ids):
		return nil, fmt.Errorf("%s: %w: duplicate users", path, ErrInvalidArgument)
	}
	body := struct {
		Users []RequestUser `json:"users"`
	}{users}
	var ev EventResponse
	if err := c.do(ctx, request{method: http.MethodPost, path: path, body: body}, &ev); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &ev, nil
}
