package enroll

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/bramley-mdm/bramley/profile"
)

// ProfileService starts an OTA session for a person who has signed in (on
// the portal, or with HTTP Basic at GET /ota/profile-service) and returns
// the signed Profile Service payload.
// ErrNoTopic (via topicError, a 503) when no push topic is known, before
// any session is stored.
func (o *OTA) ProfileService(ctx context.Context, username string) ([]byte, error) {
	// The topic first, as for /enroll: no session for a profile that
	// could not be finished.
	if _, err := o.s.topic(ctx); err != nil {
		return nil, topicError(err)
	}
	challenge := randomString(24)
	hash := sha256.Sum256([]byte(challenge))
	now := o.s.now()
	sess := OTASession{
		ID: randomString(12), Username: username, State: OTAStateIssued,
		CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(o.ttl()),
	}
	if err := o.store.CreateOTASession(ctx, sess, hash[:]); err != nil {
		return nil, fmt.Errorf("storing OTA session: %w", err)
	}
	p := profile.NewProfileService(o.s.cfg.Identifier+".ota", profile.Service{
		URL: o.s.cfg.PublicURL + "/ota/enroll",
		DeviceAttributes: []string{"UDID", "VERSION", "PRODUCT", "SERIAL", "MEID", "IMEI", "ICCID",
			"DEVICE_NAME", "MAC_ADDRESS_EN0"},
		Challenge: challenge,
	})
	p.PayloadDisplayName = "bramley enrollment"
	p.PayloadDescription = "Sends this device's identity to " + orDefault(o.s.cfg.Organization, "bramley") + " to enroll it."
	p.PayloadOrganization = o.s.cfg.Organization
	signed, err := o.sign(p)
	if err != nil {
		return nil, err
	}
	o.s.logger.InfoContext(ctx, "OTA profile service served", "username", username, "ota_session", sess.ID)
	return signed, nil
}
