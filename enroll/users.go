package enroll

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/storage"
)

// User is a local account: a person who signs in to download the
// enrollment profile (--enroll-auth basic).
type User struct {
	Username string `json:"username"`
	// PasswordHash is argon2id in PHC string form; never the password.
	PasswordHash string    `json:"-"`
	CreatedAt    time.Time `json:"created_at"`
}

// UserStore keeps local accounts.
type UserStore interface {
	// CreateUser stores a user. storage.ErrConflict when the username is
	// taken; not idempotent.
	CreateUser(ctx context.Context, u User) error
	// UserByName returns the user; storage.ErrNotFound when unknown.
	// Usernames match exactly (case-sensitive).
	UserByName(ctx context.Context, username string) (*User, error)
}

// ErrBadCredentials means a sign-in failed: an unknown user or a wrong
// password, deliberately not told apart.
var ErrBadCredentials = errors.New("unknown username or wrong password")

const (
	maxUsername    = 64
	minPassword    = 12
	maxPassword    = 1024 // bytes; argon2 pre-hashes, this only bounds the work of reading it
	maxHashing     = 4    // argon2id computations at once, each DefaultHashParams().Memory
	dummyPlainText = "bramley dummy password for unknown users"
)

// Accounts creates local users and checks their passwords.
type Accounts struct {
	store  UserStore
	params HashParams
	now    func() time.Time
	// hashing bounds the argon2id computations running at once.
	hashing chan struct{}
	// dummy is a hash verified when the user does not exist, so that
	// the answer takes as long as for a user who does.
	dummyOnce sync.Once
	dummy     string
}

// AccountsOption configures Accounts.
type AccountsOption func(*Accounts)

// WithAccountsClock sets the clock.
func WithAccountsClock(now func() time.Time) AccountsOption {
	return func(a *Accounts) { a.now = now }
}

// WithHashParams sets argon2id's cost for new hashes (default
// DefaultHashParams); existing hashes verify with their own.
func WithHashParams(p HashParams) AccountsOption { return func(a *Accounts) { a.params = p } }

// NewAccounts returns Accounts over store.
func NewAccounts(store UserStore, opts ...AccountsOption) *Accounts {
	a := &Accounts{store: store, params: DefaultHashParams(), now: time.Now, hashing: make(chan struct{}, maxHashing)}
	for _, o := range opts {
		o(a)
	}
	return a
}

// ValidateUsername checks a username: 1–64 characters of UTF-8, no control
// characters, and no colon, which HTTP Basic cannot carry in a user-id
// (RFC 7617 section 2).
func ValidateUsername(name string) error {
	n := utf8.RuneCountInString(name)
	if n == 0 || n > maxUsername || !utf8.ValidString(name) {
		return fmt.Errorf("username must be 1 to %d characters of UTF-8", maxUsername)
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == ':' {
			return errors.New("username must not contain control characters or ':'")
		}
	}
	return nil
}

// ValidatePassword checks a new password: at least 12 characters.
func ValidatePassword(password string) error {
	if utf8.RuneCountInString(password) < minPassword {
		return fmt.Errorf("password must be at least %d characters", minPassword)
	}
	if len(password) > maxPassword {
		return fmt.Errorf("password must be at most %d bytes", maxPassword)
	}
	return nil
}

// CreateUser validates and stores a new user with the password hashed.
// An invalid username or password is a 400 *handler.Error;
// storage.ErrConflict when the username is taken.
func (a *Accounts) CreateUser(ctx context.Context, username, password string) (*User, error) {
	if err := ValidateUsername(username); err != nil {
		return nil, handler.Wrap(http.StatusBadRequest, err.Error(), err)
	}
	if err := ValidatePassword(password); err != nil {
		return nil, handler.Wrap(http.StatusBadRequest, err.Error(), err)
	}
	var hash string
	if err := a.hash(ctx, func() { hash = HashPassword(password, a.params) }); err != nil {
		return nil, err
	}
	u := User{Username: username, PasswordHash: hash, CreatedAt: a.now().UTC().Truncate(time.Microsecond)}
	if err := a.store.CreateUser(ctx, u); err != nil {
		return nil, fmt.Errorf("storing user: %w", err)
	}
	return &u, nil
}

// Authenticate returns the user when the password is theirs, and
// ErrBadCredentials otherwise. An unknown or invalid username costs one
// argon2id verification like a known one, so timing does not tell which
// usernames exist.
func (a *Accounts) Authenticate(ctx context.Context, username, password string) (*User, error) {
	var u *User
	var err error
	if ValidateUsername(username) == nil && len(password) <= maxPassword {
		u, err = a.store.UserByName(ctx, username)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("reading user: %w", err)
		}
	}
	hash := a.dummyHash()
	if u != nil {
		hash = u.PasswordHash
	}
	var ok bool
	if err := a.hash(ctx, func() { ok, err = verifyPassword(hash, password) }); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("verifying password of %q: %w", username, err)
	}
	if u == nil || !ok {
		return nil, ErrBadCredentials
	}
	return u, nil
}

func (a *Accounts) dummyHash() string {
	a.dummyOnce.Do(func() { a.dummy = HashPassword(dummyPlainText, a.params) })
	return a.dummy
}

// hash runs f, an argon2id computation, once a slot is free.
func (a *Accounts) hash(ctx context.Context, f func()) error {
	select {
	case a.hashing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-a.hashing }()
	f()
	return nil
}
