package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/bramley-mdm/bramley/pki"
)

const (
	defaultServer = "https://localhost:8443"
	// clientTimeout bounds each request to the admin API, connection and
	// answer included.
	clientTimeout = 30 * time.Second
	// maxAnswer caps what is read of an answer: device listings are the
	// largest, and far below this.
	maxAnswer = 32 << 20
)

// clientFlags are the flags of every subcommand that talks to the admin API.
type clientFlags struct {
	server, apiKey, caFile string
}

// clientEnv names the client flags that take BRAMLEY_ environment twins.
var clientEnv = []string{"server", "api-key", "ca-file"}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	cf := &clientFlags{server: defaultServer}
	f := cmd.Flags()
	f.StringVar(&cf.server, "server", cf.server, "base URL of the bramley server")
	f.StringVar(&cf.apiKey, "api-key", "", "admin API key, required (prefer the variable: flags show in the process list)")
	f.StringVar(&cf.caFile, "ca-file", "", "PEM file of the CA to trust for the server's HTTPS certificate, such as bramley ca export writes (default: the system's roots)")
	return cf
}

// applyEnvFor is applyEnv for the named flags only. Subcommands give
// environment twins to the flags saying where and as whom to act, and not
// to per-run inputs (files, --force), which a variable exported for one
// command would silently change for the next.
func applyEnvFor(cmd *cobra.Command, getenv func(string) string, flags ...string) error {
	return applyEnv(cmd, func(name string) string {
		for _, f := range flags {
			if envName(f) == name {
				return getenv(name)
			}
		}
		return ""
	})
}

// withEnvUsageFor is withEnvUsage for the named flags only.
func withEnvUsageFor(cmd *cobra.Command, flags ...string) {
	for _, name := range flags {
		if f := cmd.Flags().Lookup(name); f != nil {
			f.Usage += " [" + envName(name) + "]"
		}
	}
}

// apiClient calls bramley's admin API.
type apiClient struct {
	base string // scheme://host[:port][/prefix], no trailing slash
	key  string
	http *http.Client
}

// connect applies the client flags' BRAMLEY_ twins and returns the API
// client: the start of every client subcommand.
func (cf *clientFlags) connect(cmd *cobra.Command, getenv func(string) string) (*apiClient, error) {
	if err := applyEnvFor(cmd, getenv, clientEnv...); err != nil {
		return nil, err
	}
	return cf.client()
}

func (cf *clientFlags) client() (*apiClient, error) {
	if cf.apiKey == "" {
		return nil, errors.New("an admin API key is required: set BRAMLEY_API_KEY or pass --api-key")
	}
	base := strings.TrimRight(cf.server, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
		return nil, fmt.Errorf("--server %q: want the server's base URL, such as %s", cf.server, defaultServer)
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if cf.caFile != "" {
		data, err := os.ReadFile(cf.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		certs, err := pki.ParseCertificatesPEM(data)
		if err != nil {
			return nil, fmt.Errorf("--ca-file %s: %w", cf.caFile, err)
		}
		pool := x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
		tlsConfig.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	return &apiClient{
		base: base,
		key:  cf.apiKey,
		http: &http.Client{Timeout: clientTimeout, Transport: transport},
	}, nil
}

// apiError is an error answer of the admin API.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// rawBody is a request body sent as it is, not as JSON.
type rawBody struct {
	contentType string
	data        []byte
}

// do sends a request under /api/v1 with in, when not nil, as its JSON body
// (a rawBody as it is), and decodes a 2xx answer into out, when not nil. It
// returns the answer as it came, for --json. Other answers are an *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, in, out any) ([]byte, error) {
	var body io.Reader
	contentType := "application/json"
	if raw, ok := in.(rawBody); ok {
		body, contentType = bytes.NewReader(raw.data), raw.contentType
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	target := c.base + "/api/v1" + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.connectionError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer to %s %s: %w", method, path, err)
	}
	if len(data) > maxAnswer {
		return nil, fmt.Errorf("the answer to %s %s is larger than %d bytes", method, path, maxAnswer)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, answerError(resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("the answer to %s %s is not the JSON expected: %w", method, path, err)
		}
	}
	return data, nil
}

// answerError reads an error answer: {"error": "..."} from bramley, or
// whatever a proxy in between sent.
func answerError(status int, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return &apiError{Status: status, Message: e.Error}
	}
	msg := strings.Join(strings.Fields(string(body)), " ")
	if len(msg) > 200 || !utf8.ValidString(msg) || strings.HasPrefix(msg, "<") {
		msg = "" // an HTML page or binary: its status says more
	}
	if msg == "" {
		msg = http.StatusText(status)
		if msg == "" {
			msg = "unexpected answer"
		}
	}
	return &apiError{Status: status, Message: msg}
}

// connectionError says what to do about the usual reasons a request never
// got an answer.
func (c *apiClient) connectionError(err error) error {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("%w\n(the server's HTTPS certificate is not issued by a CA this computer trusts: pass its CA with --ca-file or BRAMLEY_CA_FILE; `bramley ca export` writes bramley's)", err)
	case errors.As(err, &host):
		return fmt.Errorf("%w\n(--server must name a host the server's certificate is for)", err)
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		return fmt.Errorf("no answer from %s within %s: %w", c.base, clientTimeout, err)
	}
	return fmt.Errorf("reaching %s: %w", c.base, err)
}

// printJSON writes an answer as it came, for --json.
func printJSON(w io.Writer, data []byte) error { return writeLine(w, data) }

// writeLine writes data ending in a newline.
func writeLine(w io.Writer, data []byte) error {
	if !bytes.HasSuffix(data, []byte("\n")) {
		data = append(slices.Clip(data), '\n')
	}
	_, err := w.Write(data)
	return err
}
