package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeADE is ADETokens and ADEDevices over fixed answers.
type fakeADE struct {
	imported  []byte
	importErr error
	syncErr   error
	devices   []ade.DeviceRecord
	tokenID   string // the tokenID Devices was asked for
}

func (f *fakeADE) CertificatePEM(context.Context) ([]byte, error) {
	return []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), nil
}

func (f *fakeADE) Import(_ context.Context, p7m []byte) (ade.Token, error) {
	if f.importErr != nil {
		return ade.Token{}, f.importErr
	}
	f.imported = p7m
	return ade.Token{ID: "T1", ConsumerKey: "CK_1", AccessTokenExpiry: testNow.Add(time.Hour),
		ServerName: "bramley", CreatedAt: testNow, UpdatedAt: testNow, Sealed: []byte("SECRET")}, nil
}

func (f *fakeADE) Tokens(ctx context.Context) ([]ade.Token, error) {
	t, _ := f.Import(ctx, nil)
	return []ade.Token{t}, nil
}

func (f *fakeADE) Sync(_ context.Context, id string) (ade.SyncResult, error) {
	if id != "T1" {
		return ade.SyncResult{}, fmt.Errorf("reading token: %w", storage.ErrNotFound)
	}
	if f.syncErr != nil {
		return ade.SyncResult{}, f.syncErr
	}
	return ade.SyncResult{Pages: 2, Fetched: 3, Added: 1, Cursor: "secret-ish cursor"}, nil
}

func (f *fakeADE) Devices(_ context.Context, tokenID string) ([]ade.DeviceRecord, error) {
	f.tokenID = tokenID
	return f.devices, nil
}

func TestADENotConfigured(t *testing.T) {
	e := newEnv(t)
	for _, rt := range e.api.routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		if !strings.HasPrefix(path, prefix+"/ade/") {
			continue
		}
		path = strings.ReplaceAll(path, "{id}", "T1")
		wantError(t, e.serve(request(method, path, "", []byte("x"))), http.StatusServiceUnavailable)
	}
}

func TestADECertificate(t *testing.T) {
	e := newEnv(t, WithADE(&fakeADE{}, &fakeADE{}))
	rec := e.get("/api/v1/ade/certificate")
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/x-pem-file" ||
		!strings.HasPrefix(rec.Body.String(), "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("answer %d %q: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
}

func TestADEUpload(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		err    error
		status int
		want   string // in the error message
	}{
		{"stored", "p7m bytes", nil, http.StatusCreated, ""},
		{"empty", "", nil, http.StatusBadRequest, "server token"},
		{"malformed", "x", fmt.Errorf("%w (asn1: detail)", ade.ErrTokenMalformed), http.StatusBadRequest, "exactly as Apple"},
		{"foreign", "x", fmt.Errorf("%w (detail)", ade.ErrTokenForeign), http.StatusBadRequest, "GET /api/v1/ade/certificate"},
		{"tampered", "x", fmt.Errorf("%w (detail)", ade.ErrTokenTampered), http.StatusBadRequest, "altered"},
		{"expired", "x", fmt.Errorf("%w (it expired at 2020-01-01T00:00:00Z)", ade.ErrTokenExpired), http.StatusBadRequest, "expired"},
		{"internal", "x", fmt.Errorf("storing ADE token: disk on fire"), http.StatusInternalServerError, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeADE{importErr: tt.err}
			e := newEnv(t, WithADE(f, f))
			rec := e.serve(request(http.MethodPost, "/api/v1/ade/tokens", "application/pkcs7-mime", []byte(tt.body)))
			if tt.status != http.StatusCreated {
				if msg := wantError(t, rec, tt.status); !strings.Contains(msg, tt.want) || strings.Contains(msg, "detail") {
					t.Errorf("error %q, want it to contain %q and no parser detail", msg, tt.want)
				}
				return
			}
			got := decode[map[string]any](t, rec, http.StatusCreated)
			if got["id"] != "T1" || got["consumer_key"] != "CK_1" || got["access_token_expiry"] == nil {
				t.Errorf("answer %s", rec.Body)
			}
			if strings.Contains(rec.Body.String(), "SECRET") || strings.Contains(rec.Body.String(), "sealed") {
				t.Errorf("answer carries the sealed secrets: %s", rec.Body)
			}
			if string(f.imported) != tt.body {
				t.Errorf("imported %q, want the body as sent", f.imported)
			}
		})
	}
}

func TestADEUploadTooLarge(t *testing.T) {
	f := &fakeADE{}
	e := newEnv(t, WithADE(f, f), WithMaxBody(4096))
	wantError(t, e.serve(request(http.MethodPost, "/api/v1/ade/tokens", "", make([]byte, 5000))), http.StatusRequestEntityTooLarge)
}

func TestADETokens(t *testing.T) {
	f := &fakeADE{}
	e := newEnv(t, WithADE(f, f))
	got := decode[adeTokenList](t, e.get("/api/v1/ade/tokens"), http.StatusOK)
	if len(got.Tokens) != 1 || got.Tokens[0].ID != "T1" || got.Tokens[0].Sealed != nil {
		t.Errorf("tokens %+v", got.Tokens)
	}
}

func TestADESync(t *testing.T) {
	tests := []struct {
		name   string
		id     string
		err    error
		status int
		want   string
	}{
		{"synced", "T1", nil, http.StatusOK, ""},
		{"unknown token", "T9", nil, http.StatusNotFound, "T9"},
		{"terms", "T1", &ade.Error{Endpoint: "GET /session", Status: 403, Code: "T_C_NOT_SIGNED"}, http.StatusConflict, "accept the new terms"},
		{"apple refuses", "T1", fmt.Errorf("ADE fetch: %w", &ade.Error{Endpoint: "POST /server/devices", Status: 401, Code: "UNAUTHORIZED"}), http.StatusBadGateway, "UNAUTHORIZED"},
		{"apple unreachable", "T1", &url.Error{Op: "Post", URL: "https://x", Err: fmt.Errorf("connection refused")}, http.StatusBadGateway, "reach"},
		{"internal", "T1", fmt.Errorf("saving ADE cursor: disk on fire"), http.StatusInternalServerError, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeADE{syncErr: tt.err}
			e := newEnv(t, WithADE(f, f))
			rec := e.serve(request(http.MethodPost, "/api/v1/ade/tokens/"+tt.id+"/sync", "", nil))
			if tt.status != http.StatusOK {
				if msg := wantError(t, rec, tt.status); !strings.Contains(msg, tt.want) {
					t.Errorf("error %q, want it to contain %q", msg, tt.want)
				}
				return
			}
			got := decode[adeSyncResult](t, rec, http.StatusOK)
			if got != (adeSyncResult{Pages: 2, Fetched: 3, Added: 1}) {
				t.Errorf("result %+v", got)
			}
		})
	}
}

func TestADEDevices(t *testing.T) {
	f := &fakeADE{}
	e := newEnv(t, WithADE(f, f))
	if body := e.get("/api/v1/ade/devices").Body.String(); body != "{\"devices\":[]}\n" {
		t.Errorf("no devices: %s", body)
	}
	f.devices = []ade.DeviceRecord{{TokenID: "T1", SerialNumber: "S1", OpType: ade.OpDeleted, Deleted: true}}
	got := decode[adeDeviceList](t, e.get("/api/v1/ade/devices?token_id=T1"), http.StatusOK)
	if len(got.Devices) != 1 || got.Devices[0].SerialNumber != "S1" || !got.Devices[0].Deleted || f.tokenID != "T1" {
		t.Errorf("devices %+v, asked for token %q", got.Devices, f.tokenID)
	}
}
