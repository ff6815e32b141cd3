package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/storage"
)

const (
	defaultLimit = 100
	maxLimit     = 1000
)

// deviceList is the answer of GET /devices. Next is the after cursor of the
// following page, empty on the last one.
type deviceList struct {
	Devices []storage.Device `json:"devices"`
	Next    string           `json:"next"`
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	// One more than asked tells whether another page follows without a
	// second query or a page that comes back empty.
	devices, err := a.store.Devices(r.Context(), storage.DeviceFilter{
		SerialNumber: q.Get("serial_number"),
		UDID:         q.Get("udid"),
		After:        q.Get("after"),
		Limit:        limit + 1,
	})
	if err != nil {
		return fmt.Errorf("listing devices: %w", err)
	}
	list := deviceList{Devices: devices}
	if len(devices) > limit {
		list.Devices = devices[:limit]
		list.Next = list.Devices[limit-1].ID
	}
	if list.Devices == nil {
		list.Devices = []storage.Device{}
	}
	return writeJSON(w, http.StatusOK, list)
}

// parseLimit reads the page size: default 100, and above 1000 it is 1000.
func parseLimit(s string) (int, error) {
	if s == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, handler.Errorf(http.StatusBadRequest, "limit must be a positive integer")
	}
	return min(n, maxLimit), nil
}

// deviceView is a device with its channels.
type deviceView struct {
	*storage.Device
	Enrollments []storage.Enrollment `json:"enrollments"`
}

// enrollmentView is one channel and its device.
type enrollmentView struct {
	Device     *storage.Device     `json:"device"`
	Enrollment *storage.Enrollment `json:"enrollment"`
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id := r.PathValue("id")
	// A colon only ever appears in the enrollment ID of a user channel
	// (mdm.Enrollment.Validate refuses it in device IDs).
	if strings.Contains(id, ":") {
		enr, err := a.store.Enrollment(ctx, id)
		if err != nil {
			return lookupError(err, "enrollment", id)
		}
		dev, err := a.store.Device(ctx, enr.DeviceID)
		if err != nil {
			return lookupError(err, "device", enr.DeviceID)
		}
		return writeJSON(w, http.StatusOK, enrollmentView{Device: dev, Enrollment: enr})
	}
	dev, err := a.store.Device(ctx, id)
	if err != nil {
		return lookupError(err, "device", id)
	}
	enrs, err := a.store.Enrollments(ctx, id)
	if err != nil {
		return fmt.Errorf("listing enrollments of %s: %w", id, err)
	}
	if enrs == nil {
		enrs = []storage.Enrollment{}
	}
	return writeJSON(w, http.StatusOK, deviceView{Device: dev, Enrollments: enrs})
}

// queueView is the answer of GET /devices/{id}/queue.
type queueView struct {
	Queue []storage.QueueItem `json:"queue"`
}

func (a *API) deviceQueue(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id := r.PathValue("id")
	// An unknown enrollment and an empty queue must not look alike.
	if _, err := a.store.Enrollment(ctx, id); err != nil {
		return lookupError(err, "enrollment", id)
	}
	items, err := a.cmds.Queue(ctx, id, a.now())
	if err != nil {
		return fmt.Errorf("reading queue of %s: %w", id, err)
	}
	if items == nil {
		items = []storage.QueueItem{}
	}
	return writeJSON(w, http.StatusOK, queueView{Queue: items})
}
