package sim

import (
	"context"
	"strings"

	"github.com/bramley-mdm/bramley/mdm"
)

// WithMac makes the device play a Mac, whose managed users speak on
// their own user channels (UserTokenUpdate, ConnectUser).
func WithMac() Option {
	return func(d *Device) {
		d.Model, d.ModelName, d.ProductName = "Mac14,2", "MacBook Air", "Mac14,2"
		d.DeviceName, d.OSVersion, d.BuildVersion = "Simulated Mac", "14.5", "23F79"
	}
}

// User is a local user of a simulated Mac. Its agent speaks for it on the
// user channel with the Mac's identity, but with its own push token and
// PushMagic (Apple's "MDM Protocol Extensions", macOS user channel).
type User struct {
	UserID    string // the account's GUID
	ShortName string
	LongName  string
	Token     []byte
	PushMagic string
}

// NewUser returns a local user with a fresh GUID, push token and PushMagic.
func NewUser(shortName, longName string) User {
	return User{
		UserID: mdm.NewUUID(), ShortName: shortName, LongName: longName,
		Token: randomBytes(32), PushMagic: strings.ToUpper(mdm.NewUUID()),
	}
}

// ids are the keys every user-channel request carries. NotOnConsole false:
// the user is logged in at the Mac, not over screen sharing.
func (d *Device) userIDs(u User) map[string]any {
	return map[string]any{
		"UDID": d.UDID, "UserID": u.UserID, "UserShortName": u.ShortName,
		"UserLongName": u.LongName, "NotOnConsole": false,
	}
}

// UserTokenUpdate registers the user's push token on its user channel, as
// the user's agent does after the device's TokenUpdate (or at login): the
// server then manages the user.
func (d *Device) UserTokenUpdate(ctx context.Context, u User) error {
	msg := d.userIDs(u)
	msg["MessageType"] = mdm.MessageTokenUpdate
	msg["Topic"] = d.Topic
	msg["Token"] = u.Token
	msg["PushMagic"] = u.PushMagic
	_, err := d.checkin(ctx, msg)
	return err
}

// ConnectUser runs one connect session on the user's channel, as the
// user's agent does after a push to the user's token.
func (d *Device) ConnectUser(ctx context.Context, u User) ([]Handled, error) {
	return d.session(ctx, d.userIDs(u))
}
