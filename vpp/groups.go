package vpp

import (
	"context"
	"errors"
	"fmt"

	"github.com/bramley-mdm/bramley/storage"
)

// ErrNoDirectory means no directory is configured to list a group's
// members.
var ErrNoDirectory = errors.New("assigning to a group needs a directory (--ldap-url)")

// ErrUnknownGroup means the directory has no such group.
var ErrUnknownGroup = errors.New("no such group in the directory")

// WithGroupMembers sets how AssignGroup lists the usernames of a group's
// members: members returns an error wrapping storage.ErrNotFound when
// there is no such group. Without it AssignGroup is ErrNoDirectory.
func WithGroupMembers(members func(ctx context.Context, groupDN string) ([]string, error)) ServiceOption {
	return func(s *Service) { s.members = members }
}

// GroupOutcome is what AssignGroup did for one member of the group.
type GroupOutcome struct {
	Username string
	// Plan is the member's plan; zero when they got none.
	Plan Plan
	// Err says why the member got no plan, or why delivering it failed:
	// ErrUnknownUser for a member bramley cannot register.
	Err error
}

// AssignGroup registers each member of the directory group groupDN whom
// bramley can register (RegisterUser, idempotent) and assigns them the
// item through Assign, so that members sharing an Apple Account still
// spend one licence. Members who cannot be registered are reported and
// skipped. It returns an error only for what stops the whole call: no
// directory, no such group, the token, the context, the store.
func (s *Service) AssignGroup(ctx context.Context, groupDN, adamID string, kind Kind) ([]GroupOutcome, error) {
	if s.members == nil {
		return nil, ErrNoDirectory
	}
	names, err := s.members(ctx, groupDN)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownGroup, groupDN)
	}
	if err != nil {
		return nil, fmt.Errorf("listing members of %q: %w", groupDN, err)
	}
	if _, _, err := s.location(ctx); err != nil {
		return nil, err
	}
	outs := make([]GroupOutcome, 0, len(names))
	for _, u := range names {
		o := GroupOutcome{Username: u}
		if _, err := s.RegisterUser(ctx, u); err != nil {
			if !perMember(err) {
				return outs, fmt.Errorf("registering %q: %w", u, err)
			}
			o.Err = err
			outs = append(outs, o)
			continue
		}
		plan, err := s.Assign(ctx, u, adamID, kind)
		if err != nil && (plan.ID == "" || fatal(err)) {
			return outs, fmt.Errorf("assigning %s to %q: %w", adamID, u, err)
		}
		o.Plan, o.Err = plan, err
		outs = append(outs, o)
	}
	s.logger.InfoContext(ctx, "group assignment planned", "group", groupDN, "adam_id", adamID, "members", len(names))
	return outs, nil
}

// perMember reports errors of registering one member that leave the
// others to go on: not a bramley user, or Apple refusing or not finishing
// this one person.
func perMember(err error) bool {
	var apple *Error
	return errors.Is(err, ErrUnknownUser) ||
		(!fatal(err) && (errors.As(err, &apple) || errors.Is(err, ErrEventPending)))
}
