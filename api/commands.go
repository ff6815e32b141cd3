package api

import (
	"context"
	"mime"
	"net/http"
	"strings"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

// commandView is a stored command as GET /commands/{uuid} shows it: the
// command plist as JSON, and each target with its result as JSON.
type commandView struct {
	*storage.Command
	Body    map[string]any `json:"command,omitempty"`
	Targets []targetView   `json:"targets"` // shadows storage.Command.Targets
}

type targetView struct {
	storage.CommandTarget
	Result map[string]any `json:"result,omitempty"`
}

func (a *API) getCommand(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	uuid := r.PathValue("uuid")
	asPlist, err := wantsPlist(r)
	if err != nil {
		return err
	}
	cmd, err := a.cmds.Command(ctx, uuid, a.now())
	if err != nil {
		return lookupError(err, "command", uuid)
	}
	q := r.URL.Query()
	targets := cmd.Targets
	if q.Has(paramEnrollmentID) {
		id := q.Get(paramEnrollmentID)
		i := indexTarget(targets, id)
		if i < 0 {
			return handler.Errorf(http.StatusNotFound, "enrollment %q is not a target of command %q", id, uuid)
		}
		targets = targets[i : i+1]
	}
	if asPlist {
		raw := cmd.Raw
		if q.Has(paramEnrollmentID) {
			if raw = targets[0].Result; len(raw) == 0 {
				return handler.Errorf(http.StatusNotFound, "no result from %q yet", targets[0].EnrollmentID)
			}
		}
		w.Header().Set("Content-Type", mediaPlist)
		_, _ = w.Write(raw)
		return nil
	}
	view := commandView{Command: cmd, Body: a.plistJSON(ctx, cmd.Raw, uuid, ""),
		Targets: make([]targetView, len(targets))}
	for i, t := range targets {
		view.Targets[i] = targetView{CommandTarget: t}
		if len(t.Result) > 0 {
			view.Targets[i].Result = a.plistJSON(ctx, t.Result, uuid, t.EnrollmentID)
		}
	}
	return writeJSON(w, http.StatusOK, view)
}

// plistJSON converts a stored plist for display. Both the queue and the
// enqueue routes decoded it before it was stored, so a failure means
// corruption: it is logged, and the raw form stays readable with
// ?format=plist.
func (a *API) plistJSON(ctx context.Context, raw []byte, uuid, enrollmentID string) map[string]any {
	m, err := mdm.ResultJSON(raw)
	if err != nil {
		a.logger.ErrorContext(ctx, "stored plist does not decode", "command_uuid", uuid,
			"enrollment_id", enrollmentID, "err", err)
		return nil
	}
	return m
}

func indexTarget(targets []storage.CommandTarget, enrollmentID string) int {
	for i, t := range targets {
		if t.EnrollmentID == enrollmentID {
			return i
		}
	}
	return -1
}

// wantsPlist reads ?format=plist|json, falling back on the Accept header;
// the query wins because browsers and curl send Accept: */*.
func wantsPlist(r *http.Request) (bool, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "plist":
		return true, nil
	case "json":
		return false, nil
	case "":
	default:
		return false, handler.Errorf(http.StatusBadRequest, "format must be json or plist")
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if media, _, err := mime.ParseMediaType(part); err == nil && media == mediaPlist {
			return true, nil
		}
	}
	return false, nil
}

// cancelled is the answer of DELETE /commands/{uuid}.
type cancelled struct {
	CommandUUID string `json:"command_uuid"`
	Cancelled   int    `json:"cancelled"`
}

func (a *API) cancelCommand(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	uuid := r.PathValue("uuid")
	n, err := a.cmds.CancelCommand(ctx, uuid, a.now())
	if err != nil {
		return lookupError(err, "command", uuid)
	}
	if n == 0 {
		// A device that received the command may already be running it;
		// claiming it was cancelled would be a lie.
		return handler.Errorf(http.StatusConflict,
			"nothing to cancel: command %q was already delivered, answered or cancelled on every target", uuid)
	}
	a.logger.InfoContext(ctx, "command cancelled", "command_uuid", uuid, "cancelled", n)
	return writeJSON(w, http.StatusOK, cancelled{CommandUUID: uuid, Cancelled: n})
}
