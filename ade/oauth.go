package ade

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Apple authenticates GET /session with OAuth 1.0a (RFC 5849), HMAC-SHA1,
// the parameters in an Authorization header with realm "ADM" (g.1). It is
// the only OAuth request: every other call carries the session it returns.

// oauthParam is one name/value pair of a request's OAuth parameters.
type oauthParam struct{ name, value string }

// sessionAuthorization returns the Authorization header of GET u (the
// /session URL) signed with tok at now with nonce.
func sessionAuthorization(tok *ServerToken, u *url.URL, now time.Time, nonce string) string {
	params := []oauthParam{
		{"oauth_consumer_key", tok.ConsumerKey},
		{"oauth_token", tok.AccessToken},
		{"oauth_signature_method", "HMAC-SHA1"},
		{"oauth_timestamp", strconv.FormatInt(now.Unix(), 10)},
		{"oauth_nonce", nonce},
		{"oauth_version", "1.0"},
	}
	sig := oauthSignature("GET", u, params, nil, tok.ConsumerSecret, tok.AccessSecret)
	params = append(params, oauthParam{"oauth_signature", sig})
	return authorizationHeader("ADM", params)
}

// oauthSignature is RFC 5849's HMAC-SHA1 signature (3.4.2) of a request:
// its method, URL (with query), protocol parameters and, for a form body,
// the body's parameters. The key is both secrets, each encoded.
func oauthSignature(method string, u *url.URL, params, bodyParams []oauthParam, consumerSecret, tokenSecret string) string {
	mac := hmac.New(sha1.New, []byte(percentEncode(consumerSecret)+"&"+percentEncode(tokenSecret)))
	mac.Write([]byte(signatureBase(method, u, params, bodyParams)))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// signatureBase is RFC 5849's signature base string (3.4.1).
func signatureBase(method string, u *url.URL, params, bodyParams []oauthParam) string {
	var all []oauthParam
	// The query is decoded as a form (3.4.1.3.1): "+" is a space.
	query, _ := url.ParseQuery(u.RawQuery)
	for name, values := range query {
		for _, v := range values {
			all = append(all, oauthParam{name, v})
		}
	}
	for _, p := range append(slices.Clip(params), bodyParams...) {
		if p.name != "oauth_signature" && p.name != "realm" {
			all = append(all, p)
		}
	}
	pairs := make([]oauthParam, len(all))
	for i, p := range all {
		pairs[i] = oauthParam{percentEncode(p.name), percentEncode(p.value)}
	}
	// Sorted by encoded name, then encoded value (3.4.1.3.2).
	slices.SortFunc(pairs, func(a, b oauthParam) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		return strings.Compare(a.value, b.value)
	})
	var normalized strings.Builder
	for i, p := range pairs {
		if i > 0 {
			normalized.WriteByte('&')
		}
		normalized.WriteString(p.name + "=" + p.value)
	}
	return strings.ToUpper(method) + "&" + percentEncode(baseStringURI(u)) + "&" + percentEncode(normalized.String())
}

// baseStringURI is RFC 5849's base string URI (3.4.1.2): scheme and host
// in lower case, the port only when it is not the scheme's default, no
// query.
func baseStringURI(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path
}

// authorizationHeader writes params as an OAuth Authorization header
// (3.5.1), values encoded.
func authorizationHeader(realm string, params []oauthParam) string {
	var b strings.Builder
	b.WriteString(`OAuth realm="` + realm + `"`)
	for _, p := range params {
		b.WriteString(", " + percentEncode(p.name) + `="` + percentEncode(p.value) + `"`)
	}
	return b.String()
}

// percentEncode is RFC 5849's encoding (3.6): every byte but the
// unreserved characters as %XX with upper-case hex. url.QueryEscape writes
// a space as "+" and url.PathEscape leaves "&", "=" and "+" alone; a
// signature needs exactly this encoding or Apple answers 401.
func percentEncode(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// newNonce returns a random nonce. Apple refuses a nonce used before with
// the same timestamp, so it is random rather than a counter that restarts
// with the process.
func newNonce() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
