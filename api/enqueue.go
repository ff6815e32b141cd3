package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/storage"
)

// Names of the queueing options: JSON fields of a JSON body, query
// parameters for a plist body. They are the API's, not the command's, so
// they are taken out before the body reaches mdm.CommandFromJSON.
const (
	fieldPriority      = "priority"
	fieldTTL           = "ttl"
	fieldNoPush        = "no_push"
	fieldEnrollmentIDs = "enrollment_ids"
	paramEnrollmentID  = "enrollment_id"
)

// enqueueRequest is a decoded POST body: the command, how to queue it and,
// for POST /commands, for whom.
type enqueueRequest struct {
	cmd           *mdm.Command
	opts          queue.EnqueueOptions
	enrollmentIDs []string
}

// commandCreated is the answer of both enqueue routes; EnrollmentIDs only
// for POST /commands.
type commandCreated struct {
	CommandUUID   string   `json:"command_uuid"`
	EnrollmentIDs []string `json:"enrollment_ids,omitempty"`
}

func (a *API) enqueueForDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	// Checked first so an unknown device reads as 404 whatever the body.
	if _, err := a.store.Enrollment(r.Context(), id); err != nil {
		return lookupError(err, "enrollment", id)
	}
	req, err := a.readEnqueue(w, r, false)
	if err != nil {
		return err
	}
	req.enrollmentIDs = []string{id}
	if err := a.enqueue(r.Context(), req); err != nil {
		return err
	}
	w.Header().Set("Location", commandLocation(req.cmd.CommandUUID))
	return writeJSON(w, http.StatusCreated, commandCreated{CommandUUID: req.cmd.CommandUUID})
}

func (a *API) enqueueForMany(w http.ResponseWriter, r *http.Request) error {
	req, err := a.readEnqueue(w, r, true)
	if err != nil {
		return err
	}
	if err := a.enqueue(r.Context(), req); err != nil {
		return err
	}
	w.Header().Set("Location", commandLocation(req.cmd.CommandUUID))
	return writeJSON(w, http.StatusCreated, commandCreated{
		CommandUUID: req.cmd.CommandUUID, EnrollmentIDs: req.enrollmentIDs,
	})
}

func commandLocation(uuid string) string {
	return prefix + "/commands/" + url.PathEscape(uuid)
}

// enqueue queues the request and maps the queue's refusals to statuses.
func (a *API) enqueue(ctx context.Context, req *enqueueRequest) error {
	if err := a.checkProfileScope(ctx, req.cmd, req.enrollmentIDs); err != nil {
		return err
	}
	err := a.enq.Enqueue(ctx, req.cmd, req.enrollmentIDs, req.opts)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, queue.ErrUserChannel):
		return handler.Wrap(http.StatusBadRequest,
			fmt.Sprintf("%s is not allowed on a user channel", req.cmd.RequestType), err)
	case errors.Is(err, storage.ErrNotFound):
		return handler.Wrap(http.StatusNotFound, "enrollment not found", err)
	case errors.Is(err, storage.ErrConflict):
		return handler.Wrap(http.StatusConflict,
			fmt.Sprintf("command_uuid %q is already taken", req.cmd.CommandUUID), err)
	}
	return fmt.Errorf("enqueueing command %s: %w", req.cmd.CommandUUID, err)
}

// readEnqueue reads and decodes a POST body by its Content-Type. many says
// whether the request names its targets (POST /commands) or the path does.
func (a *API) readEnqueue(w http.ResponseWriter, r *http.Request, many bool) (*enqueueRequest, error) {
	media, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (media != mediaJSON && media != mediaPlist) {
		return nil, handler.Errorf(http.StatusUnsupportedMediaType,
			"Content-Type must be %s or %s", mediaJSON, mediaPlist)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return nil, err // handler.Status answers it 413
		}
		return nil, handler.Wrap(http.StatusBadRequest, "reading body", err)
	}
	q := r.URL.Query()
	var req *enqueueRequest
	if media == mediaJSON {
		req, err = decodeJSONRequest(body, q, many)
	} else {
		req, err = decodePlistRequest(body, q, many)
	}
	if err != nil {
		return nil, err
	}
	if many {
		if req.enrollmentIDs, err = cleanIDs(req.enrollmentIDs); err != nil {
			return nil, err
		}
	}
	return req, nil
}

func decodeJSONRequest(body []byte, q url.Values, many bool) (*enqueueRequest, error) {
	// Options in the query string of a JSON request would be silently
	// ignored otherwise; say where they go instead.
	for _, k := range []string{fieldPriority, fieldTTL, fieldNoPush, paramEnrollmentID} {
		if q.Has(k) {
			return nil, badRequest("with a JSON body, query parameter %s belongs in the body", k)
		}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, badRequest("malformed JSON: %v", err)
	}
	req := new(enqueueRequest)
	if raw, ok := fields[fieldPriority]; ok {
		var p int64
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, badRequest("priority must be an integer")
		}
		if err := setPriority(&req.opts, p); err != nil {
			return nil, err
		}
	}
	if raw, ok := fields[fieldTTL]; ok {
		ttl, err := jsonTTL(raw)
		if err != nil {
			return nil, err
		}
		req.opts.TTL = ttl
	}
	if raw, ok := fields[fieldNoPush]; ok {
		if err := json.Unmarshal(raw, &req.opts.NoPush); err != nil {
			return nil, badRequest("no_push must be a boolean")
		}
	}
	if raw, ok := fields[fieldEnrollmentIDs]; ok {
		if !many {
			return nil, badRequest("enrollment_ids is not allowed here: the path names the enrollment")
		}
		if err := json.Unmarshal(raw, &req.enrollmentIDs); err != nil {
			return nil, badRequest("enrollment_ids must be an array of strings")
		}
	}
	for _, k := range []string{fieldPriority, fieldTTL, fieldNoPush, fieldEnrollmentIDs} {
		delete(fields, k)
	}
	rest, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("re-encoding command JSON: %w", err)
	}
	if req.cmd, err = mdm.CommandFromJSON(rest); err != nil {
		return nil, badRequest("invalid command: %v", err)
	}
	return req, nil
}

func decodePlistRequest(body []byte, q url.Values, many bool) (*enqueueRequest, error) {
	req := new(enqueueRequest)
	if q.Has(fieldPriority) {
		p, err := strconv.ParseInt(q.Get(fieldPriority), 10, 64)
		if err != nil {
			return nil, badRequest("priority must be an integer")
		}
		if err := setPriority(&req.opts, p); err != nil {
			return nil, err
		}
	}
	if q.Has(fieldTTL) {
		ttl, err := parseTTL(q.Get(fieldTTL))
		if err != nil {
			return nil, err
		}
		req.opts.TTL = ttl
	}
	if q.Has(fieldNoPush) {
		// A bare ?no_push means yes.
		v := q.Get(fieldNoPush)
		noPush, err := strconv.ParseBool(v)
		if v != "" && err != nil {
			return nil, badRequest("no_push must be a boolean")
		}
		req.opts.NoPush = v == "" || noPush
	}
	if q.Has(paramEnrollmentID) {
		if !many {
			return nil, badRequest("enrollment_id is not allowed here: the path names the enrollment")
		}
		req.enrollmentIDs = q[paramEnrollmentID]
	}
	var err error
	if req.cmd, err = mdm.DecodeCommand(body); err != nil {
		return nil, badRequest("invalid command: %v", err)
	}
	return req, nil
}

// setPriority keeps priorities in 32 bits, which every storage backend's
// integer column holds.
func setPriority(opts *queue.EnqueueOptions, p int64) error {
	if p < math.MinInt32 || p > math.MaxInt32 {
		return badRequest("priority is out of range")
	}
	opts.Priority = int(p)
	return nil
}

// jsonTTL reads a ttl field: a duration string or a number of seconds.
func jsonTTL(raw json.RawMessage) (time.Duration, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return parseTTL(s)
	}
	var secs int64
	if err := json.Unmarshal(raw, &secs); err != nil {
		return 0, badRequest(`ttl must be a duration like "24h" or a whole number of seconds`)
	}
	return secondsTTL(secs)
}

// parseTTL reads a duration like "24h" or a whole number of seconds.
func parseTTL(s string) (time.Duration, error) {
	if secs, err := strconv.ParseInt(s, 10, 64); err == nil {
		return secondsTTL(secs)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, badRequest(`ttl must be a duration like "24h" or a whole number of seconds`)
	}
	if d < 0 {
		return 0, badRequest("ttl must not be negative")
	}
	return d, nil
}

func secondsTTL(secs int64) (time.Duration, error) {
	if secs < 0 {
		return 0, badRequest("ttl must not be negative")
	}
	if secs > math.MaxInt64/int64(time.Second) {
		return 0, badRequest("ttl is too long")
	}
	return time.Duration(secs) * time.Second, nil
}

// cleanIDs checks the targets of POST /commands and drops repeats, sorted
// as the queue sorts them.
func cleanIDs(ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, badRequest("enrollment_ids is required")
	}
	for _, id := range ids {
		if strings.TrimSpace(id) == "" {
			return nil, badRequest("enrollment_ids must not contain empty IDs")
		}
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

func badRequest(format string, args ...any) error {
	return handler.Errorf(http.StatusBadRequest, format, args...)
}
