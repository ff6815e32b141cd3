package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/storage"
)

// deviceUserList is the answer of GET /devices/{id}/users.
type deviceUserList struct {
	Users []storage.Enrollment `json:"users"`
}

// listDeviceUsers answers the managed users of a device: its user channels (a
// Mac's users, a Shared iPad's), enabled or not. A local user who never
// sent a user-channel TokenUpdate is not managed and not listed.
func (a *API) listDeviceUsers(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id := r.PathValue("id")
	if strings.Contains(id, ":") {
		return handler.Errorf(http.StatusBadRequest, "%q names a user channel; give the device ID", id)
	}
	if _, err := a.store.Device(ctx, id); err != nil {
		return lookupError(err, "device", id)
	}
	enrs, err := a.store.Enrollments(ctx, id)
	if err != nil {
		return fmt.Errorf("listing enrollments of %s: %w", id, err)
	}
	users := []storage.Enrollment{}
	for _, e := range enrs {
		if e.ID != e.DeviceID {
			users = append(users, e)
		}
	}
	return writeJSON(w, http.StatusOK, deviceUserList{Users: users})
}
