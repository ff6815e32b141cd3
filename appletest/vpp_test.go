package appletest

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// vppCall is one raw request to the fake; the tests speak Apple's wire
// format directly, without the vpp package.
type vppCall struct {
	t    *testing.T
	v    *VPP
	c    *http.Client
	auth string
}

func newVPPCall(t *testing.T, v *VPP) *vppCall {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = v.RootCAs()
	t.Cleanup(tr.CloseIdleConnections)
	return &vppCall{t: t, v: v, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}, auth: "Bearer " + v.SToken()}
}

type vppResult struct {
	status     int
	retryAfter string
	body       map[string]any
}

func (r vppResult) errNumber() int {
	n, _ := r.body["errorNumber"].(float64)
	return int(n)
}

func (c *vppCall) do(method, path, body string) vppResult {
	c.t.Helper()
	req, err := http.NewRequest(method, c.v.URL()+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := vppResult{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &r.body); err != nil {
			c.t.Fatalf("%s %s: answer %q is not JSON", method, path, b)
		}
	}
	return r
}

// event submits a write and returns its eventId.
func (c *vppCall) event(path, body string) string {
	c.t.Helper()
	r := c.do(http.MethodPost, path, body)
	id, _ := r.body["eventId"].(string)
	if r.status != http.StatusOK || id == "" || r.body["uId"] != c.v.UID() || r.body["tokenExpirationDate"] == nil {
		c.t.Fatalf("POST %s: %d %v", path, r.status, r.body)
	}
	return id
}

func (c *vppCall) status(eventID string) map[string]any {
	c.t.Helper()
	r := c.do(http.MethodGet, "/status?eventId="+eventID, "")
	if r.status != http.StatusOK {
		c.t.Fatalf("status: %d %v", r.status, r.body)
	}
	return r.body
}

func (c *vppCall) createUsers(ids ...string) {
	c.t.Helper()
	var users []string
	for _, id := range ids {
		users = append(users, `{"clientUserId":"`+id+`","email":"`+id+`@example.com"}`)
	}
	c.event("/users/create", `{"users":[`+strings.Join(users, ",")+`]}`)
	c.v.CompleteEvents()
}

func TestVPPContentToken(t *testing.T) {
	exp := time.Date(2030, 11, 8, 22, 33, 22, 0, time.UTC)
	v := NewVPP(t, WithVPPTokenExpiry(exp), WithVPPLocation("ORG12345", "PS01"))
	raw, err := base64.StdEncoding.DecodeString(string(v.ContentToken()))
	if err != nil {
		t.Fatal(err)
	}
	var tok map[string]string
	if err := json.Unmarshal(raw, &tok); err != nil {
		t.Fatal(err)
	}
	if tok["expDate"] != "2030-11-08T22:33:22+0000" || tok["orgName"] != "ORG12345" || tok["token"] == "" {
		t.Errorf("token %v", tok)
	}
	if v.OtherToken() == v.SToken() {
		t.Error("OtherToken is the location's token")
	}
}

func TestVPPAuthentication(t *testing.T) {
	tests := []struct {
		name       string
		opts       []VPPOption
		auth       func(v *VPP) string
		revoke     bool
		status     int
		errorNumer int
	}{
		{name: "good", auth: func(v *VPP) string { return "Bearer " + v.SToken() }, status: 200},
		{name: "missing", auth: func(*VPP) string { return "" }, status: 401, errorNumer: 9722},
		{name: "not Bearer", auth: func(v *VPP) string { return "Basic " + v.SToken() }, status: 401, errorNumer: 9722},
		{name: "unknown token: 200 and 9622, as Apple", auth: func(v *VPP) string { return "Bearer " + v.OtherToken() }, status: 200, errorNumer: 9622},
		{name: "revoked", auth: func(v *VPP) string { return "Bearer " + v.SToken() }, revoke: true, status: 401, errorNumer: 9625},
		{name: "expired", opts: []VPPOption{WithVPPTokenExpiry(time.Now().Add(-time.Minute))},
			auth: func(v *VPP) string { return "Bearer " + v.SToken() }, status: 401, errorNumer: 9621},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewVPP(t, tt.opts...)
			if tt.revoke {
				v.RevokeToken()
			}
			c := newVPPCall(t, v)
			c.auth = tt.auth(v)
			r := c.do(http.MethodGet, "/client/config", "")
			if r.status != tt.status || r.errNumber() != tt.errorNumer {
				t.Errorf("got %d %v", r.status, r.body)
			}
			// The service configuration needs no token.
			if r := c.do(http.MethodGet, "/service/config", ""); r.status != 200 || r.body["limits"] == nil {
				t.Errorf("service config: %d %v", r.status, r.body)
			}
		})
	}
}

func TestVPPRequestChecks(t *testing.T) {
	v := NewVPP(t, WithVPPAssets(VPPAsset{AdamID: "1", Total: 3}, VPPAsset{AdamID: "2", ProductType: "Book", NotDeviceAssignable: true}),
		WithVPPLimit("maxClientUserIds", 2))
	c := newVPPCall(t, v)
	tests := []struct {
		name, method, path, body string
		contentType              string
		status, errorNumber      int
	}{
		{"method", http.MethodPost, "/assets", `{}`, "application/json", 405, 9726},
		{"content type", http.MethodPost, "/users/create", `{"users":[]}`, "text/plain", 415, 9727},
		{"no assets", http.MethodPost, "/assets/associate", `{"assets":[],"serialNumbers":["S"]}`, "", 400, 9718},
		{"no targets", http.MethodPost, "/assets/associate", `{"assets":[{"adamId":"1"}]}`, "", 400, 9719},
		{"too many users", http.MethodPost, "/assets/associate", `{"assets":[{"adamId":"1"}],"clientUserIds":["a","b","c"]}`, "", 400, 9701},
		{"duplicate serials", http.MethodPost, "/assets/disassociate", `{"assets":[{"adamId":"1"}],"serialNumbers":["S","S"]}`, "", 400, 9705},
		{"book to a device", http.MethodPost, "/assets/associate", `{"assets":[{"adamId":"2"}],"serialNumbers":["S"]}`, "", 400, 9707},
		{"no users", http.MethodPost, "/users/create", `{"users":[]}`, "", 400, 9720},
		{"duplicate users", http.MethodPost, "/users/create", `{"users":[{"clientUserId":"a"},{"clientUserId":"a"}]}`, "", 400, 9715},
		{"bad email", http.MethodPost, "/users/create", `{"users":[{"clientUserId":"a","email":"nope"}]}`, "", 400, 9717},
		{"unknown event", http.MethodGet, "/status?eventId=nope", "", "", 400, 9708},
		{"bad page", http.MethodGet, "/assets?pageIndex=7", "", "", 400, 9650},
		{"bad version", http.MethodGet, "/users?sinceVersionId=x", "", "", 400, 9721},
		{"mdmInfo incomplete", http.MethodPost, "/client/config", `{"mdmInfo":{"id":"x","name":"y"}}`, "", 400, 9723},
		{"notification URL without token", http.MethodPost, "/client/config", `{"notificationUrl":"https://x/n"}`, "", 400, 9710},
		{"notification URL not HTTPS", http.MethodPost, "/client/config", `{"notificationUrl":"http://x/n","notificationAuthToken":"s"}`, "", 400, 9712},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, v.URL()+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", c.auth)
			ct := tt.contentType
			if ct == "" && tt.body != "" {
				ct = "application/json"
			}
			if ct != "" {
				req.Header.Set("Content-Type", ct)
			}
			resp, err := c.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			n, _ := body["errorNumber"].(float64)
			if resp.StatusCode != tt.status || int(n) != tt.errorNumber || body["errorMessage"] == "" {
				t.Errorf("got %d %v, want %d %d", resp.StatusCode, body, tt.status, tt.errorNumber)
			}
		})
	}
	if v.PendingEvents() != 0 {
		t.Error("a refused request queued an event")
	}
}

func TestVPPUsersAndInvitations(t *testing.T) {
	v := NewVPP(t, WithVPPPageSize(2))
	c := newVPPCall(t, v)
	id := c.event("/users/create", `{"users":[{"clientUserId":"u1","email":"u1@example.com"},{"clientUserId":"u2"},{"clientUserId":"u3"}]}`)
	st := c.status(id)
	if st["eventStatus"] != "PENDING" || st["eventType"] != "CREATE" || st["numRequested"] != 3.0 || st["numCompleted"] != 0.0 {
		t.Fatalf("before: %v", st)
	}
	if n := v.CompleteEvents(); n != 1 {
		t.Fatalf("completed %d", n)
	}
	if st := c.status(id); st["eventStatus"] != "COMPLETE" || st["numCompleted"] != 3.0 {
		t.Fatalf("after: %v", st)
	}

	// Paged: two users, then one.
	p0 := c.do(http.MethodGet, "/users", "")
	if p0.body["nextPageIndex"] != 1.0 || p0.body["totalPages"] != 2.0 || p0.body["size"] != 2.0 || p0.body["versionId"] == "" {
		t.Fatalf("page 0: %v", p0.body)
	}
	p1 := c.do(http.MethodGet, "/users?pageIndex=1", "")
	if _, ok := p1.body["nextPageIndex"]; ok || p1.body["currentPageIndex"] != 1.0 {
		t.Fatalf("page 1: %v", p1.body)
	}
	u1 := p0.body["users"].([]any)[0].(map[string]any)
	code, _ := u1["inviteCode"].(string)
	if u1["status"] != "Registered" || len(code) != 32 || u1["email"] != "u1@example.com" {
		t.Fatalf("user %v", u1)
	}

	// Two people accept with one Apple ID (one by opening the URL), a
	// third with another.
	cfg := c.do(http.MethodGet, "/service/config", "").body
	tmpl := cfg["urls"].(map[string]any)["invitationEmail"].(string)
	url := strings.ReplaceAll(tmpl, "%25inviteCode%25", code) + "&appleId=Family@iCloud.com"
	resp, err := c.c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("invitation page: %s", resp.Status)
	}
	if err := v.AcceptInvitation("u2", "family@icloud.com"); err != nil {
		t.Fatal(err)
	}
	if err := v.AcceptInvitation("u3", "other@icloud.com"); err != nil {
		t.Fatal(err)
	}
	if err := v.AcceptInvitation("u3", "family@icloud.com"); err == nil {
		t.Error("an associated user accepted again with another account")
	}
	a, _ := v.User("u1")
	b, _ := v.User("u2")
	o, _ := v.User("u3")
	if a.Status != "Associated" || a.IDHash == "" || a.IDHash != b.IDHash || a.IDHash == o.IDHash || a.InviteCode != "" {
		t.Errorf("users %+v %+v %+v", a, b, o)
	}
	r := c.do(http.MethodGet, "/users?clientUserId=u2", "")
	got := r.body["users"].([]any)[0].(map[string]any)
	if got["idHash"] != VPPIDHash("family@icloud.com") || got["inviteCode"] != nil {
		t.Errorf("listed %v", got)
	}

	// Retire u3, then u3 again: 9609. activeOnly / retiredOnly filter.
	c.event("/users/retire", `{"users":[{"clientUserId":"u3"}]}`)
	v.CompleteEvents()
	id = c.event("/users/retire", `{"users":[{"clientUserId":"u3"}]}`)
	v.CompleteEvents()
	if st := c.status(id); st["eventStatus"] != "FAILED" || !strings.Contains(jsonString(st["failures"]), `"errorNumber":9609`) {
		t.Errorf("retiring twice: %v", st)
	}
	if n := len(c.do(http.MethodGet, "/users?retiredOnly=true", "").body["users"].([]any)); n != 1 {
		t.Errorf("%d retired", n)
	}
	if n := c.do(http.MethodGet, "/users?activeOnly=true", "").body["size"]; n != 2.0 {
		t.Errorf("%v active on the first page", n)
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestVPPAssignments(t *testing.T) {
	v := NewVPP(t, WithVPPAssets(VPPAsset{AdamID: "361309726", Total: 2}, VPPAsset{AdamID: "9", Total: 10}))
	c := newVPPCall(t, v)
	c.createUsers("u1", "u2", "u3")
	if err := v.AcceptInvitation("u1", "same@icloud.com"); err != nil {
		t.Fatal(err)
	}
	if err := v.AcceptInvitation("u2", "same@icloud.com"); err != nil {
		t.Fatal(err)
	}

	id := c.event("/assets/associate", `{"assets":[{"adamId":"361309726"}],"clientUserIds":["u1"]}`)
	if st := c.status(id); st["eventStatus"] != "PENDING" || st["eventType"] != "ASSOCIATE" {
		t.Fatalf("%v", st)
	}
	if assigned, _ := v.Counts("361309726"); assigned != 0 {
		t.Error("assigned before the event completed")
	}
	v.CompleteEvents()
	if assigned, available := v.Counts("361309726"); assigned != 1 || available != 1 {
		t.Fatalf("%d assigned, %d available", assigned, available)
	}

	// u2 shares u1's Apple account: 9616. u3 and a device share the last
	// licence: one of them gets 9709.
	id = c.event("/assets/associate", `{"assets":[{"adamId":"361309726"}],"clientUserIds":["u2","u3","u1","ghost"],"serialNumbers":["C02X"]}`)
	v.CompleteEvents()
	st := c.status(id)
	if st["eventStatus"] != "FAILED" || st["numRequested"] != 5.0 || st["numCompleted"] != 2.0 {
		t.Fatalf("%v", st)
	}
	fails := map[int][]string{}
	for _, f := range st["failures"].([]any) {
		m := f.(map[string]any)
		info := m["errorInfo"].(map[string]any)
		for _, k := range []string{"clientUserIds", "serialNumbers"} {
			for _, id := range asStrings(info[k]) {
				fails[int(m["errorNumber"].(float64))] = append(fails[int(m["errorNumber"].(float64))], id)
			}
		}
		if m["errorMessage"] == "" || len(asAny(info["assets"])) != 1 {
			t.Errorf("failure %v", m)
		}
	}
	if !slices.Equal(fails[9616], []string{"u2"}) || !slices.Equal(fails[9609], []string{"ghost"}) || !slices.Equal(fails[9709], []string{"C02X"}) {
		t.Errorf("failures %v", fails)
	}
	if h := v.Holders("361309726"); !slices.Equal(h, []string{"u1", "u3"}) {
		t.Errorf("holders %v", h)
	}

	r := c.do(http.MethodGet, "/assignments?adamId=361309726", "")
	if jsonString(r.body["assignments"]) != `[{"adamId":"361309726","clientUserId":"u1","pricingParam":"STDQ"},{"adamId":"361309726","clientUserId":"u3","pricingParam":"STDQ"}]` {
		t.Errorf("assignments %s", jsonString(r.body["assignments"]))
	}
	c.event("/assets/associate", `{"assets":[{"adamId":"9"}],"serialNumbers":["C02X"]}`)
	v.CompleteEvents()
	r = c.do(http.MethodGet, "/assignments?serialNumber=C02X", "")
	if jsonString(r.body["assignments"]) != `[{"adamId":"9","pricingParam":"STDQ","serialNumber":"C02X"}]` {
		t.Errorf("device assignments %s", jsonString(r.body["assignments"]))
	}
	a := c.do(http.MethodGet, "/assets?adamId=361309726", "").body["assets"].([]any)[0].(map[string]any)
	if a["assignedCount"] != 2.0 || a["availableCount"] != 0.0 || a["totalCount"] != 2.0 || a["productType"] != "App" || a["revocable"] != true {
		t.Errorf("asset %v", a)
	}

	// Disassociating frees the licence; retiring frees a revocable one.
	c.event("/assets/disassociate", `{"assets":[{"adamId":"361309726"}],"clientUserIds":["u3"]}`)
	v.CompleteEvents()
	c.event("/users/retire", `{"users":[{"clientUserId":"u1"}]}`)
	v.CompleteEvents()
	if assigned, available := v.Counts("361309726"); assigned != 0 || available != 2 {
		t.Errorf("%d assigned, %d available", assigned, available)
	}
}

func asAny(v any) []any { s, _ := v.([]any); return s }

func asStrings(v any) []string {
	var out []string
	for _, x := range asAny(v) {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func TestVPPTooManyAlreadyAssigned(t *testing.T) {
	v := NewVPP(t, WithVPPAssets(VPPAsset{AdamID: "1", Total: 10}), WithVPPAlreadyAssignedLimit(2))
	c := newVPPCall(t, v)
	c.createUsers("a", "b", "c")
	for _, u := range []string{"a", "b", "c"} {
		if err := v.AcceptInvitation(u, "one@icloud.com"); err != nil {
			t.Fatal(err)
		}
	}
	c.event("/assets/associate", `{"assets":[{"adamId":"1"}],"clientUserIds":["a"]}`)
	v.CompleteEvents()
	c.event("/assets/associate", `{"assets":[{"adamId":"1"}],"clientUserIds":["b","c"]}`) // two 9616s
	v.CompleteEvents()
	r := c.do(http.MethodPost, "/assets/associate", `{"assets":[{"adamId":"1"}],"clientUserIds":["b"]}`)
	if r.status != 400 || r.errNumber() != 9630 {
		t.Fatalf("got %d %v, want 9630", r.status, r.body)
	}
	// Apple lifts it after the back-off: here, at the next request.
	c.event("/assets/associate", `{"assets":[{"adamId":"1"}],"clientUserIds":["b"]}`)
}

func TestVPPInjectedFailures(t *testing.T) {
	v := NewVPP(t)
	c := newVPPCall(t, v)
	v.RateLimitNext(1, 1500*time.Millisecond)
	r := c.do(http.MethodGet, "/assets", "")
	if r.status != 429 || r.errNumber() != 9646 || r.retryAfter != "2" {
		t.Errorf("rate limited: %d %q %v", r.status, r.retryAfter, r.body)
	}
	v.FailNext(1, VPPFailure{Path: "/users", Status: 503, ErrorNumber: 9729})
	if r := c.do(http.MethodGet, "/assets", ""); r.status != 200 {
		t.Errorf("a failure for /users hit /assets: %d", r.status)
	}
	if r := c.do(http.MethodGet, "/users", ""); r.status != 503 || r.errNumber() != 9729 || r.retryAfter != "" {
		t.Errorf("503: %d %v", r.status, r.body)
	}
	if r := c.do(http.MethodGet, "/users", ""); r.status != 200 {
		t.Errorf("after: %d", r.status)
	}
	reqs := v.Requests()
	if len(reqs) != 4 || reqs[0].ErrorNumber != 9646 || reqs[3].Path != "/users" || reqs[3].Status != 200 {
		t.Errorf("requests %+v", reqs)
	}
}

func TestVPPClientConfigAndEventPolls(t *testing.T) {
	v := NewVPP(t, WithVPPEventPolls(1), WithVPPLocation("Org", "Main Street"), WithVPPAssets(VPPAsset{AdamID: "1", Total: 1}))
	c := newVPPCall(t, v)
	r := c.do(http.MethodPost, "/client/config", `{"mdmInfo":{"id":"m1","name":"bramley","metadata":"1.0"},"notificationUrl":"https://mdm.example/vpp","notificationAuthToken":"s3cret","notificationTypes":["ASSET_MANAGEMENT"]}`)
	if r.status != 200 || r.body["locationName"] != "Main Street" || r.body["uId"] != v.UID() ||
		jsonString(r.body["mdmInfo"]) != `{"id":"m1","metadata":"1.0","name":"bramley"}` || r.body["notificationUrl"] != "https://mdm.example/vpp" {
		t.Fatalf("client config %d %v", r.status, r.body)
	}
	// Every answer names the location's manager from then on.
	if r := c.do(http.MethodGet, "/assets", ""); jsonString(r.body["mdmInfo"]) != `{"id":"m1","metadata":"1.0","name":"bramley"}` {
		t.Errorf("assets answer without mdmInfo: %v", r.body)
	}
	v.ClaimAs("m2", "Other")
	if r := c.do(http.MethodGet, "/client/config", ""); r.body["mdmInfo"].(map[string]any)["id"] != "m2" {
		t.Errorf("after ClaimAs: %v", r.body)
	}

	id := c.event("/assets/associate", `{"assets":[{"adamId":"1"}],"serialNumbers":["S1"]}`)
	if st := c.status(id); st["eventStatus"] != "PENDING" {
		t.Errorf("first poll: %v", st)
	}
	if st := c.status(id); st["eventStatus"] != "COMPLETE" || st["numCompleted"] != 1.0 {
		t.Errorf("second poll: %v", st)
	}
}
