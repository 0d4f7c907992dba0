package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
)

// maxRedirects bounds the redirects an HTTP probe follows. A health URL
// that moved (http → https, a trailing slash) is still answered; a loop is
// not followed forever, and the last 3xx is then judged as a status. A
// spec that expects a 3xx follows none.
const maxRedirects = 5

// httpChecker probes with a GET on a fresh connection.
type httpChecker struct {
	url       *field
	token     *field // nil if none
	tokenFile *field // nil if none
	expect    []int  // nil: any 2xx
	client    *http.Client
}

func compileHTTP(s HTTPSpec, env Env) (*httpChecker, error) {
	var c compiler
	u := c.field("probe.http.url", s.URL, true, checkProbeURL)
	for _, code := range s.ExpectStatus {
		if code < 100 || code > 599 {
			c.errorf("probe.http.expectStatus", "%d is not an HTTP status (100-599)", code)
		}
	}
	if s.BearerToken != "" && s.BearerTokenFile != "" {
		c.errorf("probe.http.bearerToken", "set bearerToken or bearerTokenFile, not both")
	}
	token := c.field("probe.http.bearerToken", s.BearerToken, false, nil)
	tokenFile := c.field("probe.http.bearerTokenFile", s.BearerTokenFile, false, nil)
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: s.InsecureSkipVerify}
	if s.CAFile != "" {
		if s.InsecureSkipVerify {
			c.errorf("probe.http.insecureSkipVerify", "cannot be combined with caFile")
		}
		pool, err := loadCAFile(s.CAFile)
		if err != nil {
			c.errorf("probe.http.caFile", "%v", err)
		}
		tlsConf.RootCAs = pool
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	expects3xx := slices.ContainsFunc(s.ExpectStatus, func(code int) bool { return code >= 300 && code <= 399 })
	return &httpChecker{
		url:       u,
		token:     token,
		tokenFile: tokenFile,
		expect:    slices.Clone(s.ExpectStatus),
		client: &http.Client{
			Transport: newTransport(env, tlsConf),
			CheckRedirect: func(_ *http.Request, via []*http.Request) error {
				// A 3xx the spec expects is the answer itself.
				if len(via) > maxRedirects || expects3xx {
					return http.ErrUseLastResponse
				}
				return nil
			},
		},
	}, nil
}

func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// checkProbeURL accepts absolute http and https URLs only: anything else
// would fail at every probe with a message about the URL, not the target.
func checkProbeURL(s string) error {
	_, err := parseProbeURL(s)
	return err
}

func parseProbeURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q is not an http or https URL", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	return u, nil
}

func (c *httpChecker) Check(ctx context.Context, t *Target) Result {
	u, err := c.url.render(t) // checked by checkProbeURL
	if err != nil {
		return probeError(err)
	}
	token, err := c.bearerToken(t)
	if err != nil {
		return probeError(err)
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return probeError(fmt.Errorf("%s: %w", c.url.name, err))
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return get(ctx, c.client, req, c.expected)
}

func (c *httpChecker) expected(code int) bool {
	if c.expect == nil {
		return code >= 200 && code <= 299
	}
	return slices.Contains(c.expect, code)
}

// bearerToken renders the token, or reads the token file: at every probe,
// so that a rotated token is used at once.
func (c *httpChecker) bearerToken(t *Target) (string, error) {
	switch {
	case c.token != nil:
		return c.token.render(t)
	case c.tokenFile != nil:
		path, err := c.tokenFile.render(t)
		if err != nil {
			return "", err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", c.tokenFile.name, err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", errors.New(c.tokenFile.name + ": " + path + " is empty")
		}
		return tok, nil
	}
	return "", nil
}
