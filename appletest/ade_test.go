package appletest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/ade"
)

func adeHTTPClient(t *testing.T, a *ADE) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.RootCAs()}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type adeReply struct {
	status int
	header http.Header
	body   string
}

func adeDo(t *testing.T, c *http.Client, method, u string, header map[string]string, body string) adeReply {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return adeReply{resp.StatusCode, resp.Header, strings.TrimSpace(string(b))}
}

// adeOAuthHeader signs GET /session of a with params (the defaults for
// those not given; a value of "-" leaves a parameter out).
func adeOAuthHeader(a *ADE, tok ADEServerToken, over map[string]string) string {
	params := map[string]string{
		"oauth_consumer_key":     tok.ConsumerKey,
		"oauth_token":            tok.AccessToken,
		"oauth_signature_method": "HMAC-SHA1",
		"oauth_timestamp":        strconv.FormatInt(time.Now().Unix(), 10),
		"oauth_nonce":            adeRandomHex(8),
		"oauth_version":          "1.0",
	}
	realm := "ADM"
	for k, v := range over {
		switch {
		case k == "realm":
			realm = v
		case v == "-":
			delete(params, k)
		default:
			params[k] = v
		}
	}
	u, _ := url.Parse(a.URL() + "/session")
	if _, ok := over["oauth_signature"]; !ok {
		params["oauth_signature"] = adeOAuthSignature("GET", u, params, tok.ConsumerSecret, tok.AccessSecret)
	}
	h := `OAuth realm="` + realm + `"`
	for k, v := range params {
		h += fmt.Sprintf(`, %s="%s"`, k, url.QueryEscape(v))
	}
	return h
}

func TestADESession(t *testing.T) {
	a := NewADE(t)
	c := adeHTTPClient(t, a)
	tok := a.ServerToken()
	session := a.URL() + "/session"
	tests := []struct {
		name   string
		header string
		status int
	}{
		{"valid", adeOAuthHeader(a, tok, nil), 200},
		{"no version (optional)", adeOAuthHeader(a, tok, map[string]string{"oauth_version": "-"}), 200},
		{"no Authorization", "", 400},
		{"not OAuth", "Bearer x", 400},
		{"other realm", adeOAuthHeader(a, tok, map[string]string{"realm": "Photos"}), 400},
		{"PLAINTEXT", adeOAuthHeader(a, tok, map[string]string{"oauth_signature_method": "PLAINTEXT"}), 400},
		{"no nonce", adeOAuthHeader(a, tok, map[string]string{"oauth_nonce": "-"}), 400},
		{"version 2", adeOAuthHeader(a, tok, map[string]string{"oauth_version": "2.0"}), 400},
		{"duplicated", adeOAuthHeader(a, tok, nil) + `, oauth_nonce="again"`, 400},
		{"bad signature", adeOAuthHeader(a, tok, map[string]string{"oauth_signature": "AAAA"}), 401},
		{"other consumer key", adeOAuthHeader(a, tok, map[string]string{"oauth_consumer_key": "CK_other"}), 401},
		{"other secret", adeOAuthHeader(a, ADEServerToken{ConsumerKey: tok.ConsumerKey, AccessToken: tok.AccessToken, ConsumerSecret: "x", AccessSecret: "y"}, nil), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := adeDo(t, c, "GET", session, map[string]string{"Authorization": tt.header}, "")
			if r.status != tt.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tt.status)
			}
			if tt.status == 200 {
				var out struct {
					Token string `json:"auth_session_token"`
				}
				if err := json.Unmarshal([]byte(r.body), &out); err != nil || out.Token == "" {
					t.Errorf("body %s", r.body)
				}
			}
		})
	}
	// A nonce and timestamp are good once.
	h := adeOAuthHeader(a, tok, map[string]string{"oauth_nonce": "once", "oauth_timestamp": "1700000000"})
	if r := adeDo(t, c, "GET", session, map[string]string{"Authorization": h}, ""); r.status != 200 {
		t.Fatalf("first use: %d", r.status)
	}
	if r := adeDo(t, c, "GET", session, map[string]string{"Authorization": h}, ""); r.status != 401 {
		t.Errorf("reused nonce: %d", r.status)
	}
	if r := adeDo(t, c, "POST", session, map[string]string{"Authorization": adeOAuthHeader(a, tok, nil)}, ""); r.status != 405 {
		t.Errorf("POST /session: %d", r.status)
	}
	if n := a.SessionsOpened(); n != 3 {
		t.Errorf("%d sessions, want 3", n)
	}
}

// TestFakeOAuthSignature checks the fake's signer against a value made
// apart from both implementations (Python's hmac, RFC 5849 section 1.2's
// request over https).
func TestFakeOAuthSignature(t *testing.T) {
	u, _ := url.Parse("https://photos.example.net/photos?file=vacation.jpg&size=original")
	params := map[string]string{
		"realm": "Photos", "oauth_consumer_key": "dpf43f3p2l4k3l03", "oauth_token": "nnch734d00sl2jdk",
		"oauth_signature_method": "HMAC-SHA1", "oauth_timestamp": "137131202", "oauth_nonce": "chapoH",
	}
	if got := adeOAuthSignature("GET", u, params, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00"); got != "91yh92rtXzicpezVYjTDNzieVps=" {
		t.Errorf("signature %s", got)
	}
}

// adeSession opens a session on a with a correct signature.
func adeSession(t *testing.T, a *ADE, c *http.Client) map[string]string {
	t.Helper()
	r := adeDo(t, c, "GET", a.URL()+"/session", map[string]string{"Authorization": adeOAuthHeader(a, a.ServerToken(), nil)}, "")
	var out struct {
		Token string `json:"auth_session_token"`
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		t.Fatal(err)
	}
	return map[string]string{adeSessionHeader: out.Token, "Content-Type": adeContentType}
}

func TestADEAnswers(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC).Unix())
	a := NewADE(t, WithADEClock(func() time.Time { return time.Unix(now.Load(), 0) }), WithADELimits(2, 3))
	a.AddDevices(ADEDevice{SerialNumber: "S1"}, ADEDevice{SerialNumber: "S2"}, ADEDevice{SerialNumber: "S3"}, ADEDevice{SerialNumber: "S4"})
	c := adeHTTPClient(t, a)
	h := adeSession(t, a, c)
	u := a.URL()

	r := adeDo(t, c, "GET", u+"/account", nil, "")
	if r.status != 401 || r.body != "UNAUTHORIZED" || r.header.Get("WWW-Authenticate") != "ADM-Auth-Token" {
		t.Errorf("no session: %d %s %v", r.status, r.body, r.header)
	}
	var acct ade.Account
	r = adeDo(t, c, "GET", u+"/account", h, "")
	if err := json.Unmarshal([]byte(r.body), &acct); err != nil || acct.ServerUUID == "" || len(acct.URLs) == 0 {
		t.Errorf("account %d %s", r.status, r.body)
	}

	pageOf := func(r adeReply) ade.DevicePage {
		t.Helper()
		var p ade.DevicePage
		if err := json.Unmarshal([]byte(r.body), &p); err != nil {
			t.Fatalf("%d %s: %v", r.status, r.body, err)
		}
		return p
	}
	if p := pageOf(adeDo(t, c, "POST", u+"/server/devices", h, `{}`)); len(p.Devices) != 2 || !p.MoreToFollow {
		t.Errorf("default limit: %+v", p)
	}
	p := pageOf(adeDo(t, c, "POST", u+"/server/devices", h, `{"limit":10}`))
	if len(p.Devices) != 3 || !p.MoreToFollow {
		t.Errorf("limit past the maximum: %+v", p)
	}
	p = pageOf(adeDo(t, c, "POST", u+"/server/devices", h, `{"limit":10,"cursor":"`+p.Cursor+`"}`))
	if len(p.Devices) != 1 || p.MoreToFollow || p.Devices[0].SerialNumber != "S4" {
		t.Errorf("last page: %+v", p)
	}
	cursor := p.Cursor

	for _, tt := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/server/devices", "", 405, "METHOD_NOT_ALLOWED"},
		{"POST", "/server/devices", `{"cursor":"` + cursor + `"}`, 400, "EXHAUSTED_CURSOR"},
		{"POST", "/server/devices", `{"cursor":"garbage!"}`, 400, "INVALID_CURSOR"},
		{"POST", "/server/devices", `not json`, 400, "MALFORMED_REQUEST_BODY"},
		{"POST", "/devices/sync", `{}`, 400, "CURSOR_REQUIRED"},
		{"POST", "/devices/sync", `{"cursor":"garbage!"}`, 400, "INVALID_CURSOR"},
		{"POST", "/devices", `{"devices":[]}`, 400, "DEVICE_ID_REQUIRED"},
		{"POST", "/devices/disown", `{}`, 400, "DEVICE_ID_REQUIRED"},
		{"POST", "/profile", `{"url":"https://a.example/e"}`, 400, "CONFIG_NAME_REQUIRED"},
		{"POST", "/profile", `{"profile_name":"p"}`, 400, "CONFIG_URL_REQUIRED"},
		{"POST", "/profile", `{"profile_name":"p","url":"http://a.example/e"}`, 400, "CONFIG_URL_INVALID"},
		{"POST", "/profile", `{"profile_name":"p","url":"https://a.example/e","is_mdm_removable":false}`, 400, "FLAGS_INVALID"},
		{"GET", "/profile", "", 400, "PROFILE_UUID_REQUIRED"},
		{"GET", "/profile?profile_uuid=ABC", "", 404, "NOT_FOUND"},
		{"POST", "/profile/devices", `{"devices":["S1"]}`, 400, "PROFILE_UUID_REQUIRED"},
		{"PUT", "/profile/devices", `{"profile_uuid":"ABC"}`, 400, "DEVICE_ID_REQUIRED"},
		{"POST", "/profile/devices", `{"profile_uuid":"ABC","devices":["S1"]}`, 404, "NOT_FOUND"},
		{"GET", "/nowhere", "", 404, "NOT_FOUND"},
	} {
		r := adeDo(t, c, tt.method, u+tt.path, h, tt.body)
		if r.status != tt.status || r.body != tt.code {
			t.Errorf("%s %s %s: %d %s, want %d %s", tt.method, tt.path, tt.body, r.status, r.body, tt.status, tt.code)
		}
	}

	// A sync cursor lives seven days.
	a.RemoveDevice("S1")
	p = pageOf(adeDo(t, c, "POST", u+"/devices/sync", h, `{"cursor":"`+cursor+`"}`))
	if len(p.Devices) != 1 || p.Devices[0].OpType != ade.OpDeleted {
		t.Errorf("sync %+v", p)
	}
	now.Add(int64(8 * 24 * time.Hour / time.Second))
	if r := adeDo(t, c, "POST", u+"/devices/sync", h, `{"cursor":"`+p.Cursor+`"}`); r.status != 400 || r.body != "EXPIRED_CURSOR" {
		t.Errorf("old cursor: %d %s", r.status, r.body)
	}
}

func TestADEFailuresAndTerms(t *testing.T) {
	a := NewADE(t)
	c := adeHTTPClient(t, a)
	h := adeSession(t, a, c)
	u := a.URL()
	a.ThrottleNext("/account", 1, 42*time.Second)
	if r := adeDo(t, c, "GET", u+"/account", h, ""); r.status != 429 || r.header.Get("Retry-After") != "42" {
		t.Errorf("throttled: %d %v", r.status, r.header)
	}
	a.FailNext("", 1, 503, "")
	if r := adeDo(t, c, "POST", u+"/server/devices", h, "{}"); r.status != 503 {
		t.Errorf("failure: %d", r.status)
	}
	if r := adeDo(t, c, "GET", u+"/account", h, ""); r.status != 200 {
		t.Errorf("after the failures: %d %s", r.status, r.body)
	}
	a.RequireTerms(true)
	if r := adeDo(t, c, "GET", u+"/account", h, ""); r.status != 403 || r.body != "T_C_NOT_SIGNED" {
		t.Errorf("terms: %d %s", r.status, r.body)
	}
	a.RequireTerms(false)
	a.RotateSessions(true)
	r := adeDo(t, c, "GET", u+"/account", h, "")
	next := r.header.Get(adeSessionHeader)
	if r.status != 200 || next == "" || next == h[adeSessionHeader] {
		t.Fatalf("rotated: %d %q", r.status, next)
	}
	if r := adeDo(t, c, "GET", u+"/account", h, ""); r.status != 401 {
		t.Errorf("old session after rotation: %d", r.status)
	}
	a.ExpireSessions()
	if r := adeDo(t, c, "GET", u+"/account", map[string]string{adeSessionHeader: next}, ""); r.status != 401 {
		t.Errorf("expired session: %d", r.status)
	}
}

// TestADEServerTokenP7M: the fake's token opens with bramley's parser and
// with openssl, so it is S/MIME as tools other than ours read it.
func TestADEServerTokenP7M(t *testing.T) {
	a := NewADE(t)
	cert, key, err := ade.NewTokenKeyPair(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p7m, err := a.ServerTokenP7M(cert)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ade.ParseServerToken(p7m, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	want := a.ServerToken()
	if tok.ConsumerKey != want.ConsumerKey || tok.ConsumerSecret != want.ConsumerSecret ||
		tok.AccessToken != want.AccessToken || tok.AccessSecret != want.AccessSecret || !tok.AccessTokenExpiry.Equal(want.AccessTokenExpiry) {
		t.Errorf("token %+v, want %+v", tok, want)
	}

	c, err := ade.NewClient(tok, ade.WithURL(a.URL()), ade.WithRootCAs(a.RootCAs()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Account(t.Context()); err != nil {
		t.Fatal(err)
	}

	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl")
	}
	dir := t.TempDir()
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	files := map[string][]byte{
		"cert.pem":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		"key.pem":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"token.p7m": p7m,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(openssl, "smime", "-decrypt", "-in", filepath.Join(dir, "token.p7m"),
		"-recip", filepath.Join(dir, "cert.pem"), "-inkey", filepath.Join(dir, "key.pem")).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("-----BEGIN MESSAGE-----")) || !bytes.Contains(out, []byte(want.ConsumerKey)) {
		t.Errorf("openssl decrypted:\n%s", out)
	}
}

func TestEncryptSMIMENeedsRSA(t *testing.T) {
	ca, err := newTestCA("ec")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EncryptSMIME([]byte("x"), ca.cert); err == nil {
		t.Error("encrypted to an EC certificate")
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "r"}, NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	if _, err := EncryptSMIME(nil, cert); err != nil {
		t.Errorf("empty content: %v", err)
	}
}
