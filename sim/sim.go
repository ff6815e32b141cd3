// Package sim is a simulated Apple device. It enrolls for real — downloads
// and verifies the signed enrollment profile, gets its identity through SCEP
// (EnrollDirect) — or is handed an identity, then speaks the real MDM
// protocol over HTTP: Authenticate, TokenUpdate, connect, answering commands
// with results shaped like a real device's (see the captures in
// mdm/testdata), now and then NotNow. A Fleet keeps devices connected, woken
// by pushes or polling.
//
// Tests, `bramley sim` and `bramley demo` drive it.
package sim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/pki"
)

// Device is one simulated device.
type Device struct {
	UDID         string
	SerialNumber string
	Model        string
	ModelName    string
	ProductName  string
	DeviceName   string
	OSVersion    string
	BuildVersion string
	Topic        string

	// Token and PushMagic are what the device registers with TokenUpdate.
	Token     []byte
	PushMagic string

	key    crypto.Signer
	cert   *x509.Certificate
	server string // base URL
	client *http.Client
	sign   bool
	// noIdentity sends requests with neither client certificate nor signature.
	noIdentity bool
	notNow     float64
	rng        *mrand.Rand
	// ade: enrolled in Setup Assistant (sim/ade.go), supervised as the
	// ADE profile says; awaiting: in Setup Assistant until DeviceConfigured.
	ade      adeState
	awaiting bool
}

// Option configures a Device.
type Option func(*Device)

// WithMdmSignature makes the device sign every body into the Mdm-Signature
// header (the profile's SignMessage) instead of presenting its certificate
// in TLS, as a device behind a TLS-terminating proxy must.
func WithMdmSignature() Option { return func(d *Device) { d.sign = true } }

// WithNotNow makes the device answer NotNow to a fraction of the commands
// a real device may defer.
func WithNotNow(fraction float64) Option { return func(d *Device) { d.notNow = fraction } }

// WithoutIdentity makes the device present no certificate at all, as a
// misconfigured client would.
func WithoutIdentity() Option { return func(d *Device) { d.noIdentity = true } }

// WithRootCAs sets the roots the device trusts for the server's TLS.
func WithRootCAs(pool *x509.CertPool) Option {
	return func(d *Device) { d.client.Transport.(*http.Transport).TLSClientConfig.RootCAs = pool }
}

// WithSeed makes the device's choices (NotNow) repeatable.
func WithSeed(seed uint64) Option {
	return func(d *Device) { d.rng = mrand.New(mrand.NewPCG(seed, seed^0x5eed)) }
}

// WithTopic sets the APNs topic the device reports.
func WithTopic(topic string) Option { return func(d *Device) { d.Topic = topic } }

// New returns a device with identity cert and key that talks to the server
// at baseURL (e.g. https://127.0.0.1:8443). Its attributes are those of an
// iPhone; change the fields to play another device.
func New(baseURL string, cert *x509.Certificate, key crypto.Signer, opts ...Option) *Device {
	d := &Device{
		UDID:         randomUDID(),
		SerialNumber: randomSerial(),
		Model:        "MN9H2LL/A",
		ModelName:    "iPhone",
		ProductName:  "iPhone14,5",
		DeviceName:   "Simulated iPhone",
		OSVersion:    "17.5.1",
		BuildVersion: "21F90",
		Topic:        "com.apple.mgmt.External.bramley-sim",
		Token:        randomBytes(32),
		PushMagic:    strings.ToUpper(mdm.NewUUID()),
		key:          key,
		cert:         cert,
		server:       strings.TrimRight(baseURL, "/"),
		rng:          mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64())),
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	d.client = &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsConfig, MaxIdleConnsPerHost: 2},
	}
	for _, o := range opts {
		o(d)
	}
	if !d.sign && !d.noIdentity {
		tlsConfig.Certificates = []tls.Certificate{{
			Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert,
		}}
	}
	return d
}

// SetNotNow changes the fraction of deferrable commands the device answers
// NotNow, as a device does when it is locked or unlocked.
func (d *Device) SetNotNow(fraction float64) { d.notNow = fraction }

// Certificate is the device's identity certificate.
func (d *Device) Certificate() *x509.Certificate { return d.cert }

// StatusError is a non-200 answer from the server.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("server answered %d: %s", e.Status, strings.TrimSpace(e.Body))
}

// Authenticate sends the first check-in message of an enrollment.
func (d *Device) Authenticate(ctx context.Context) error {
	msg := map[string]any{
		"MessageType": mdm.MessageAuthenticate, "UDID": d.UDID, "Topic": d.Topic,
		"SerialNumber": d.SerialNumber, "Model": d.Model, "ModelName": d.ModelName,
		"ProductName": d.ProductName, "DeviceName": d.DeviceName,
		"OSVersion": d.OSVersion, "BuildVersion": d.BuildVersion,
	}
	_, err := d.checkin(ctx, msg)
	return err
}

// TokenUpdate registers the device's push token; enrollment is complete
// once the server accepts it.
func (d *Device) TokenUpdate(ctx context.Context) error {
	msg := map[string]any{
		"MessageType": mdm.MessageTokenUpdate, "UDID": d.UDID, "Topic": d.Topic,
		"Token": d.Token, "PushMagic": d.PushMagic, "AwaitingConfiguration": d.awaiting,
	}
	_, err := d.checkin(ctx, msg)
	return err
}

// CheckOut tells the server the MDM profile was removed.
func (d *Device) CheckOut(ctx context.Context) error {
	_, err := d.checkin(ctx, map[string]any{"MessageType": mdm.MessageCheckOut, "UDID": d.UDID, "Topic": d.Topic})
	return err
}

// Enroll runs Authenticate then TokenUpdate.
func (d *Device) Enroll(ctx context.Context) error {
	if err := d.Authenticate(ctx); err != nil {
		return fmt.Errorf("Authenticate: %w", err)
	}
	if err := d.TokenUpdate(ctx); err != nil {
		return fmt.Errorf("TokenUpdate: %w", err)
	}
	return nil
}

func (d *Device) checkin(ctx context.Context, msg map[string]any) ([]byte, error) {
	body, err := plist.Marshal(msg)
	if err != nil {
		return nil, err
	}
	return d.Send(ctx, "/mdm/checkin", "application/x-apple-aspen-mdm-checkin", body)
}

// Send PUTs a body to the server as this device — signed or over mTLS — and
// returns the response body of a 200, or a *StatusError.
func (d *Device) Send(ctx context.Context, path, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, d.server+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if d.sign && !d.noIdentity {
		sig, err := pki.SignDetached(body, d.cert, d.key)
		if err != nil {
			return nil, fmt.Errorf("signing body: %w", err)
		}
		req.Header.Set("Mdm-Signature", sig)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Status: resp.StatusCode, Body: string(respBody)}
	}
	return respBody, nil
}

// Handled is one command the device received and what it answered.
type Handled struct {
	CommandUUID string
	RequestType string
	Status      string
}

// Connect runs one session, as a device does after a push: Idle, then
// answer each command the server sends until it sends none. A command
// answered NotNow is not retried in the session; the server holds it.
func (d *Device) Connect(ctx context.Context) ([]Handled, error) {
	return d.session(ctx, map[string]any{"UDID": d.UDID})
}

// session runs one connect session on the channel the identifiers ids
// name: the device's, or a user's (see ConnectUser).
func (d *Device) session(ctx context.Context, ids map[string]any) ([]Handled, error) {
	var handled []Handled
	report := map[string]any{"Status": mdm.StatusIdle}
	for k, v := range ids {
		report[k] = v
	}
	for range 1000 { // a bound, not a limit a real queue reaches
		body, err := plist.Marshal(report)
		if err != nil {
			return handled, err
		}
		resp, err := d.Send(ctx, "/mdm/connect", "application/x-apple-aspen-mdm; charset=UTF-8", body)
		if err != nil {
			return handled, err
		}
		if len(resp) == 0 {
			return handled, nil
		}
		var cmd struct {
			CommandUUID string
			Command     map[string]any
		}
		if err := plist.Unmarshal(resp, &cmd); err != nil {
			return handled, fmt.Errorf("decoding command: %w", err)
		}
		requestType, _ := cmd.Command["RequestType"].(string)
		report = d.answer(cmd.CommandUUID, requestType, cmd.Command)
		for k, v := range ids {
			report[k] = v
		}
		handled = append(handled, Handled{CommandUUID: cmd.CommandUUID, RequestType: requestType, Status: report["Status"].(string)})
	}
	return handled, errors.New("server kept sending commands")
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomUDID() string {
	return fmt.Sprintf("%X-%X", randomBytes(4), randomBytes(8))
}

func randomSerial() string {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
	var sb strings.Builder
	for range 12 {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		sb.WriteByte(alphabet[n.Int64()])
	}
	return sb.String()
}
