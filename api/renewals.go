package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
)

// RenewalLister lists identity renewals; *enroll.RenewalService implements
// it.
type RenewalLister interface {
	// Renewals lists the devices with a renewal attempt in state (one of
	// enroll's Renewal… states), or all of them when state is empty; an
	// unknown state is a *handler.Error with status 400.
	Renewals(ctx context.Context, state string) ([]enroll.RenewalStatus, error)
}

// WithRenewals serves /identity-renewals with renewals; without it the
// route answers 503.
func WithRenewals(renewals RenewalLister) Option { return func(a *API) { a.renewals = renewals } }

// renewalList is the answer of GET /identity-renewals.
type renewalList struct {
	Renewals []enroll.RenewalStatus `json:"renewals"`
}

func (a *API) listRenewals(w http.ResponseWriter, r *http.Request) error {
	if a.renewals == nil {
		return handler.Errorf(http.StatusServiceUnavailable, "identity renewal is not configured")
	}
	list, err := a.renewals.Renewals(r.Context(), r.URL.Query().Get("state"))
	if err != nil {
		return fmt.Errorf("listing identity renewals: %w", err)
	}
	if list == nil {
		list = []enroll.RenewalStatus{}
	}
	return writeJSON(w, http.StatusOK, renewalList{Renewals: list})
}
