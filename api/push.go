package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/push"
	"github.com/bramley-mdm/bramley/storage"
)

// PushCertificates installs and lists push certificates; *push.Manager
// implements it.
type PushCertificates interface {
	// Upload validates and installs a certificate: a *push.CertificateError
	// when it is unusable, push.ErrTopicChange when its topic is not the
	// enrolled devices' and u.Force is not set.
	Upload(ctx context.Context, u push.Upload) (*push.CertificateInfo, error)
	// List describes the stored certificates, ordered by topic.
	List(ctx context.Context) ([]push.CertificateInfo, error)
}

// Pusher pushes enrollments now; *push.Service implements it.
type Pusher interface {
	// PushEnrollments pushes those of ids that can be pushed and returns
	// their results; the others (unknown, disabled, no valid token) have
	// none.
	PushEnrollments(ctx context.Context, ids []string) ([]push.Result, error)
}

// WithPush serves the push certificate and push routes with certs and
// pusher; without it they answer 503.
func WithPush(certs PushCertificates, pusher Pusher) Option {
	return func(a *API) { a.pushCerts, a.pusher = certs, pusher }
}

// maxPushIDs caps POST /push: a larger fleet is pushed in several calls,
// so that one request does not hold APNs connections for minutes.
const maxPushIDs = 10000

func pushNotConfigured() error {
	return handler.Errorf(http.StatusServiceUnavailable, "push is not configured")
}

// certificateUpload is the body of PUT /push-certificates: the PEM pair,
// or a .p12 in base64 with its password.
type certificateUpload struct {
	Certificate string `json:"certificate"`
	PrivateKey  string `json:"private_key"`
	PKCS12      string `json:"pkcs12"`
	Password    string `json:"password"`
}

func (a *API) uploadPushCertificate(w http.ResponseWriter, r *http.Request) error {
	if a.pushCerts == nil {
		return pushNotConfigured()
	}
	force, err := boolParam(r, "force")
	if err != nil {
		return err
	}
	var body certificateUpload
	if err := a.readJSON(w, r, &body); err != nil {
		return err
	}
	u := push.Upload{CertPEM: []byte(body.Certificate), KeyPEM: []byte(body.PrivateKey),
		Password: body.Password, Force: force}
	pemGiven := body.Certificate != "" || body.PrivateKey != ""
	switch {
	case pemGiven && body.PKCS12 != "":
		return badRequest("send either certificate and private_key, or pkcs12, not both")
	case body.PKCS12 != "":
		// base64 tools wrap their output; the line breaks are not data.
		p12 := strings.Join(strings.Fields(body.PKCS12), "")
		if u.PKCS12, err = base64.StdEncoding.DecodeString(p12); err != nil {
			return badRequest("pkcs12 must be base64")
		}
	case body.Certificate == "" || body.PrivateKey == "":
		return badRequest("send certificate and private_key (PEM), or pkcs12 (base64) and password")
	}

	info, err := a.pushCerts.Upload(r.Context(), u)
	var certErr *push.CertificateError
	switch {
	case err == nil:
	case errors.As(err, &certErr):
		return handler.Wrap(http.StatusBadRequest, certErr.Error(), err)
	case errors.Is(err, push.ErrTopicChange):
		// The explanation (topics, device counts, what to do) is the
		// answer: it is all the administrator needs to decide.
		return handler.Wrap(http.StatusConflict, err.Error(), err)
	default:
		return fmt.Errorf("uploading push certificate: %w", err)
	}
	return writeJSON(w, http.StatusOK, info)
}

// pushCertificateList is the answer of GET /push-certificates.
type pushCertificateList struct {
	PushCertificates []push.CertificateInfo `json:"push_certificates"`
}

func (a *API) listPushCertificates(w http.ResponseWriter, r *http.Request) error {
	if a.pushCerts == nil {
		return pushNotConfigured()
	}
	infos, err := a.pushCerts.List(r.Context())
	if err != nil {
		return fmt.Errorf("listing push certificates: %w", err)
	}
	if infos == nil {
		infos = []push.CertificateInfo{}
	}
	return writeJSON(w, http.StatusOK, pushCertificateList{PushCertificates: infos})
}

// pushResult is what became of the push of one enrollment. Error is empty
// only when APNs accepted the push; Status is 0 when APNs never answered,
// or was never asked.
type pushResult struct {
	EnrollmentID string `json:"enrollment_id"`
	Status       int    `json:"status"`
	Reason       string `json:"reason,omitempty"`
	APNsID       string `json:"apns_id,omitempty"`
	Error        string `json:"error,omitempty"`
}

// pushResults is the answer of both push routes.
type pushResults struct {
	Results []pushResult `json:"results"`
}

// pushRequest is the body of POST /push.
type pushRequest struct {
	EnrollmentIDs []string `json:"enrollment_ids"`
}

func (a *API) pushDevice(w http.ResponseWriter, r *http.Request) error {
	if a.pusher == nil {
		return pushNotConfigured()
	}
	ctx := r.Context()
	id := r.PathValue("id")
	enr, err := a.store.Enrollment(ctx, id)
	if err != nil {
		return lookupError(err, "enrollment", id)
	}
	results, err := a.pushNow(ctx, []string{id}, func(string) string { return notPushedReason(enr) })
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, results)
}

func (a *API) pushMany(w http.ResponseWriter, r *http.Request) error {
	if a.pusher == nil {
		return pushNotConfigured()
	}
	var req pushRequest
	if err := a.readJSON(w, r, &req); err != nil {
		return err
	}
	ids, err := cleanIDs(req.EnrollmentIDs)
	if err != nil {
		return err
	}
	if len(ids) > maxPushIDs {
		return badRequest("at most %d enrollment_ids at once, got %d", maxPushIDs, len(ids))
	}
	// Looking each one up to say precisely why it was skipped would cost a
	// query per enrollment; the single-device route does that.
	results, err := a.pushNow(r.Context(), ids, func(string) string {
		return "not pushed: unknown or disabled enrollment, no push token yet (no TokenUpdate), " +
			"or a token APNs refused (it is pushed again after the device's next TokenUpdate)"
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, results)
}

// pushNow pushes ids and returns a result for each, in order; skipped
// says why one the pusher did not push was skipped.
func (a *API) pushNow(ctx context.Context, ids []string, skipped func(id string) string) (pushResults, error) {
	results, err := a.pusher.PushEnrollments(ctx, ids)
	if err != nil {
		if results == nil {
			return pushResults{}, fmt.Errorf("pushing %d enrollments: %w", len(ids), err)
		}
		// The pushes went out; only recording them failed. The caller
		// gets what APNs said, the operator the error.
		a.logger.ErrorContext(ctx, "recording push results failed", "enrollments", len(ids), "err", err)
	}
	byID := make(map[string]push.Result, len(results))
	for _, res := range results {
		byID[res.EnrollmentID] = res
	}
	out := pushResults{Results: make([]pushResult, len(ids))}
	for i, id := range ids {
		res, ok := byID[id]
		if !ok {
			out.Results[i] = pushResult{EnrollmentID: id, Error: skipped(id)}
			continue
		}
		out.Results[i] = pushResult{EnrollmentID: id, Status: res.Status, Reason: res.Reason, APNsID: res.APNsID}
		if res.Err != nil {
			out.Results[i].Error = res.Err.Error()
		}
	}
	return out, nil
}

// notPushedReason says why the pusher skipped a known enrollment.
func notPushedReason(e *storage.Enrollment) string {
	switch {
	case !e.Enabled:
		return "not pushed: the enrollment is disabled (checked out, or replaced by a new enrollment)"
	case len(e.PushToken) == 0:
		return "not pushed: " + push.ErrNoToken.Error()
	}
	return "not pushed: APNs refused the enrollment's push token; it is pushed again after the device's next TokenUpdate"
}

// readJSON decodes a JSON body, capped at maxBody, into v, refusing
// unknown fields so a misspelt one is not silently ignored.
func (a *API) readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if media, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || media != mediaJSON {
		return handler.Errorf(http.StatusUnsupportedMediaType, "Content-Type must be %s", mediaJSON)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return err // handler.Status answers it 413
		}
		return handler.Wrap(http.StatusBadRequest, "reading body", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON: %v", err)
	}
	if dec.More() {
		return badRequest("malformed JSON: more than one value")
	}
	return nil
}

// boolParam reads a boolean query parameter; present without a value it
// means true, as no_push does.
func boolParam(r *http.Request, name string) (bool, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return false, nil
	}
	v := q.Get(name)
	if v == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("%s must be a boolean", name)
	}
	return b, nil
}
