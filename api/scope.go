package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/storage"
)

// Values of a profile's PayloadScope (profiles/TopLevel.yaml, macOS).
const (
	scopeUser   = "User"
	scopeSystem = "System"
)

// checkProfileScope keeps device and user profiles apart: an InstallProfile
// whose profile says PayloadScope User goes to user channels only, and one
// that says System, or nothing, which macOS reads as System, to device
// channels only. A Mac would install a mismatched profile in the wrong
// place or refuse it. A profile that cannot be read here (encrypted as a
// whole, binary) is let through: the device is the judge of it.
func (a *API) checkProfileScope(ctx context.Context, cmd *mdm.Command, ids []string) error {
	if cmd.RequestType != "InstallProfile" {
		return nil
	}
	scope, ok := profileScope(cmd.Raw)
	if !ok {
		return nil
	}
	for _, id := range ids {
		_, user := mdm.SplitID(id)
		switch {
		case user == "" && scope == scopeUser:
			return badRequest("the profile has PayloadScope User: send it to a user channel (UDID:UserID), not to the device channel %s", id)
		case user != "" && scope != scopeUser:
			if scope == "" {
				// A Shared iPad's users take profiles without a scope,
				// which iOS ignores.
				shared, err := a.sharedIPadUser(ctx, id)
				if err != nil {
					return err
				}
				if shared {
					continue
				}
			}
			what := "PayloadScope System"
			if scope == "" {
				what = "no PayloadScope, which means System"
			}
			return badRequest("the profile has %s: send it to the device channel, not to the user channel %s (use PayloadScope User for a user profile)", what, id)
		}
	}
	return nil
}

// profileScope reads the PayloadScope of an InstallProfile command's
// profile; ok is false when the profile cannot be read.
func profileScope(raw []byte) (scope string, ok bool) {
	var env struct {
		Command struct{ Payload []byte }
	}
	if err := plist.Unmarshal(raw, &env); err != nil || len(env.Command.Payload) == 0 {
		return "", false
	}
	p, err := profile.Parse(env.Command.Payload)
	if err != nil || (p.PayloadScope != "" && p.PayloadScope != scopeUser && p.PayloadScope != scopeSystem) {
		return "", false
	}
	return p.PayloadScope, true
}

func (a *API) sharedIPadUser(ctx context.Context, id string) (bool, error) {
	e, err := a.store.Enrollment(ctx, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return false, nil // the queue answers for unknown enrollments
	case err != nil:
		return false, fmt.Errorf("reading enrollment %s: %w", id, err)
	}
	return e.UserID == mdm.SharedIPadUserID, nil
}
