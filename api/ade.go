package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/storage"
)

// ADETokens imports and syncs Automated Device Enrollment server tokens;
// *ade.Service implements it.
type ADETokens interface {
	// CertificatePEM returns the certificate Apple encrypts server tokens
	// to, made on first use.
	CertificatePEM(ctx context.Context) ([]byte, error)
	// Import decrypts and stores a server token (.p7m); the errors of
	// ade.ParseServerToken and ade.ErrTokenExpired are the uploader's.
	Import(ctx context.Context, p7m []byte) (ade.Token, error)
	// Tokens lists the stored tokens.
	Tokens(ctx context.Context) ([]ade.Token, error)
	// Sync brings one token's devices up to date now; storage.ErrNotFound
	// for an unknown token.
	Sync(ctx context.Context, id string) (ade.SyncResult, error)
	// RotateCertificate makes a new key pair and returns its certificate;
	// ade.ErrPreviousCertificateInUse unless force while the one before
	// the last rotation may still be in use.
	RotateCertificate(ctx context.Context, force bool) ([]byte, error)
}

// ADEDevices lists the devices Apple assigned to bramley's MDM servers;
// *ade.Service implements it.
type ADEDevices interface {
	// Devices lists the devices of the token, or of all when tokenID is "".
	Devices(ctx context.Context, tokenID string) ([]ade.DeviceRecord, error)
}

// WithADE serves the /ade routes with tokens and devices; without it they
// answer 503.
func WithADE(tokens ADETokens, devices ADEDevices) Option {
	return func(a *API) { a.adeTokens, a.adeDevices = tokens, devices }
}

func adeNotConfigured() error {
	return handler.Errorf(http.StatusServiceUnavailable, "Automated Device Enrollment is not configured")
}

func (a *API) adeCertificate(w http.ResponseWriter, r *http.Request) error {
	if a.adeTokens == nil {
		return adeNotConfigured()
	}
	pemBytes, err := a.adeTokens.CertificatePEM(r.Context())
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-pem-file")
	h.Set("Content-Disposition", `attachment; filename="bramley-ade.pem"`)
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(pemBytes)
	return nil
}

// uploadError turns what is wrong with an uploaded token into a 400 with
// the explanation; the parser's detail goes to the log only.
func uploadError(err error) error {
	for _, sentinel := range []error{ade.ErrTokenMalformed, ade.ErrTokenForeign, ade.ErrTokenTampered} {
		if errors.Is(err, sentinel) {
			return handler.Wrap(http.StatusBadRequest, sentinel.Error(), err)
		}
	}
	if errors.Is(err, ade.ErrTokenExpired) {
		return handler.Wrap(http.StatusBadRequest, err.Error(), err)
	}
	return fmt.Errorf("importing ADE token: %w", err)
}

func (a *API) uploadADEToken(w http.ResponseWriter, r *http.Request) error {
	if a.adeTokens == nil {
		return adeNotConfigured()
	}
	// Any Content-Type: the .p7m goes up as Apple gave it, and tools
	// label it variously (application/pkcs7-mime, octet-stream …).
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return err // handler.Status answers it 413
		}
		return handler.Wrap(http.StatusBadRequest, "reading body", err)
	}
	if len(body) == 0 {
		return badRequest("send the server token (.p7m) from Apple Business Manager as the body")
	}
	tok, err := a.adeTokens.Import(r.Context(), body)
	if err != nil {
		return uploadError(err)
	}
	return writeJSON(w, http.StatusCreated, tok)
}

// adeTokenList is the answer of GET /ade/tokens.
type adeTokenList struct {
	Tokens []adeTokenView `json:"tokens"`
}

// adeTokenView is a token with how soon it expires: expiring within
// ade.ExpiryWarning, or expired, is an administrator's cue to download a
// new one.
type adeTokenView struct {
	ade.Token
	DaysLeft int  `json:"days_left"`
	Expiring bool `json:"expiring"`
}

func (a *API) listADETokens(w http.ResponseWriter, r *http.Request) error {
	if a.adeTokens == nil {
		return adeNotConfigured()
	}
	tokens, err := a.adeTokens.Tokens(r.Context())
	if err != nil {
		return fmt.Errorf("listing ADE tokens: %w", err)
	}
	views := make([]adeTokenView, 0, len(tokens))
	now := a.now()
	for _, t := range tokens {
		views = append(views, adeTokenView{Token: t, DaysLeft: t.DaysLeft(now), Expiring: t.Expiring(now)})
	}
	return writeJSON(w, http.StatusOK, adeTokenList{Tokens: views})
}

func (a *API) rotateADECertificate(w http.ResponseWriter, r *http.Request) error {
	if a.adeTokens == nil {
		return adeNotConfigured()
	}
	force, err := boolParam(r, "force")
	if err != nil {
		return err
	}
	pemBytes, err := a.adeTokens.RotateCertificate(r.Context(), force)
	if errors.Is(err, ade.ErrPreviousCertificateInUse) {
		return handler.Wrap(http.StatusConflict, err.Error(), err)
	}
	if err != nil {
		return fmt.Errorf("rotating the ADE certificate: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-pem-file")
	h.Set("Content-Disposition", `attachment; filename="bramley-ade.pem"`)
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(pemBytes)
	return nil
}

// adeSyncResult is the answer of POST /ade/tokens/{id}/sync.
type adeSyncResult struct {
	Pages     int  `json:"pages"`
	Fetched   int  `json:"fetched"`
	Added     int  `json:"added"`
	Modified  int  `json:"modified"`
	Deleted   int  `json:"deleted"`
	Refetched bool `json:"refetched"`
	Stalled   bool `json:"stalled"`
}

// syncError maps a failed sync: Apple's terms are the administrator's to
// accept (409); Apple's other refusals, and not reaching Apple, are a bad
// gateway with Apple's answer.
func syncError(err error, id string) error {
	var appleErr *ade.Error
	var urlErr *url.Error
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return lookupError(err, "ADE token", id)
	case errors.Is(err, ade.ErrTermsNotSigned):
		return handler.Wrap(http.StatusConflict, ade.ErrTermsNotSigned.Error(), err)
	case errors.As(err, &appleErr):
		return handler.Wrap(http.StatusBadGateway, appleErr.Error(), err)
	case errors.As(err, &urlErr):
		return handler.Wrap(http.StatusBadGateway, "could not reach Apple's ADE service", err)
	}
	return fmt.Errorf("syncing ADE token %s: %w", id, err)
}

func (a *API) syncADEToken(w http.ResponseWriter, r *http.Request) error {
	if a.adeTokens == nil {
		return adeNotConfigured()
	}
	id := r.PathValue("id")
	res, err := a.adeTokens.Sync(r.Context(), id)
	if err != nil {
		return syncError(err, id)
	}
	return writeJSON(w, http.StatusOK, adeSyncResult{Pages: res.Pages, Fetched: res.Fetched, Added: res.Added,
		Modified: res.Modified, Deleted: res.Deleted, Refetched: res.Refetched, Stalled: res.Stalled})
}

// adeDeviceList is the answer of GET /ade/devices.
type adeDeviceList struct {
	Devices []ade.DeviceRecord `json:"devices"`
}

func (a *API) listADEDevices(w http.ResponseWriter, r *http.Request) error {
	if a.adeDevices == nil {
		return adeNotConfigured()
	}
	devices, err := a.adeDevices.Devices(r.Context(), r.URL.Query().Get("token_id"))
	if err != nil {
		return fmt.Errorf("listing ADE devices: %w", err)
	}
	if devices == nil {
		devices = []ade.DeviceRecord{}
	}
	return writeJSON(w, http.StatusOK, adeDeviceList{Devices: devices})
}
