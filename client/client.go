package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/berth-ci/berth"
)

// Defaults for Options.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	DefaultMaxAttempts    = 8
	DefaultUserAgent      = "berth-go-client"
)

const (
	// defaultAttemptTimeout bounds one HTTP exchange beyond the time the
	// server may legitimately hold it (a long poll), so that a server that
	// accepted the connection and then went silent is given up on and the
	// next one tried.
	defaultAttemptTimeout = 30 * time.Second
	// maxAnswerBytes bounds a successful answer; maxErrorBytes an error one.
	maxAnswerBytes = 256 << 20
	maxErrorBytes  = 64 << 10
)

// Options configure a Client. The zero value of every field but Servers
// means its default.
type Options struct {
	// Servers are base URLs such as "http://127.0.0.1:7420", tried in turn:
	// on a connection error or a retryable answer the next attempt goes to
	// the next URL. A base URL may carry a path prefix
	// ("https://ci.example.com/berth").
	Servers []string
	// HTTPClient is used for every call if set. Its Timeout should be zero:
	// the client sets a deadline on each attempt itself, long enough for a
	// long poll, and an http.Client.Timeout would cut long polls short. If
	// nil, a client is built whose dialer has ConnectTimeout and TCP
	// keep-alives.
	HTTPClient *http.Client
	// ConnectTimeout bounds establishing a connection (and a TLS handshake)
	// when the client builds its own HTTPClient. Default 5s.
	ConnectTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential backoff
	// between attempts. Defaults 100ms and 5s; MaxBackoff also caps a
	// server's Retry-After.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxAttempts is how many times one call is tried (the first attempt
	// included) before its last error is returned. Default 8. Attempts also
	// stop when the call's context ends.
	MaxAttempts int
	// UserAgent is sent with every request. Default "berth-go-client".
	UserAgent string
	// Token, if set, is sent as "Authorization: Bearer TOKEN" with every
	// request: a berth that authenticates needs one (berth token create).
	Token string
}

// Client talks to a berth server. It is safe for concurrent use.
type Client struct {
	servers     []string // base URLs without a trailing slash
	hc          *http.Client
	minBackoff  time.Duration
	maxBackoff  time.Duration
	maxAttempts int
	userAgent   string
	token       string
	// attemptTimeout is added to the time the server may hold an attempt
	// to make that attempt's deadline. Tests shorten it.
	attemptTimeout time.Duration
	// abandonTimeout bounds the clean-up after an acquire gives up.
	abandonTimeout time.Duration
	// next is the index (modulo len(servers)) of the server the next call
	// starts with: the one that last answered well.
	next atomic.Uint64
}

// New returns a Client for opts. It checks every server URL and option and
// returns a *berth.Error naming the first that is wrong.
func New(opts Options) (*Client, error) {
	if len(opts.Servers) == 0 {
		return nil, berth.FieldErrorf("Servers", "is empty; want at least one URL such as \"http://127.0.0.1:7420\"")
	}
	c := &Client{
		hc:             opts.HTTPClient,
		minBackoff:     opts.MinBackoff,
		maxBackoff:     opts.MaxBackoff,
		maxAttempts:    opts.MaxAttempts,
		userAgent:      opts.UserAgent,
		token:          opts.Token,
		attemptTimeout: defaultAttemptTimeout,
		abandonTimeout: 5 * time.Second,
	}
	for i, s := range opts.Servers {
		base, err := checkServer(s)
		if err != nil {
			return nil, berth.FieldErrorf(fmt.Sprintf("Servers[%d]", i), "%v", err)
		}
		c.servers = append(c.servers, base)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ConnectTimeout", opts.ConnectTimeout}, {"MinBackoff", opts.MinBackoff}, {"MaxBackoff", opts.MaxBackoff}} {
		if d.v < 0 {
			return nil, berth.FieldErrorf(d.name, "must not be negative, got %s", d.v)
		}
	}
	if opts.MaxAttempts < 0 {
		return nil, berth.FieldErrorf("MaxAttempts", "must not be negative, got %d", opts.MaxAttempts)
	}
	if c.minBackoff == 0 {
		c.minBackoff = DefaultMinBackoff
	}
	if c.maxBackoff == 0 {
		c.maxBackoff = max(DefaultMaxBackoff, c.minBackoff)
	}
	if c.minBackoff > c.maxBackoff {
		if opts.MinBackoff != 0 {
			return nil, berth.FieldErrorf("MinBackoff", "%s is more than MaxBackoff %s", c.minBackoff, c.maxBackoff)
		}
		c.minBackoff = c.maxBackoff // only MaxBackoff was set, below the default minimum
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}
	if c.hc == nil {
		connect := opts.ConnectTimeout
		if connect == 0 {
			connect = DefaultConnectTimeout
		}
		c.hc = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   256, // many goroutines often share one client; do not churn connections
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   connect,
			ExpectContinueTimeout: time.Second,
		}}
	}
	return c, nil
}

// checkServer validates one base URL and returns it without a trailing
// slash.
func checkServer(s string) (string, error) {
	const example = `want a URL such as "http://127.0.0.1:7420"`
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a URL (%v); %s", s, err, example)
	}
	switch u.Scheme {
	case "http", "https":
	case "":
		return "", fmt.Errorf("%q has no scheme; %s", s, example)
	default:
		return "", fmt.Errorf("%q has scheme %q, not http or https; %s", s, u.Scheme, example)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", fmt.Errorf("%q has no host; %s", s, example)
	}
	if u.User != nil {
		return "", fmt.Errorf("%q carries credentials, which berth does not use", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q has a query or fragment; %s", s, example)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// CloseIdleConnections closes the idle keep-alive connections of the
// client's HTTP transport. Calls in flight are not affected.
func (c *Client) CloseIdleConnections() {
	c.hc.CloseIdleConnections()
}

// request is one call of the API, tried up to maxAttempts times.
type request struct {
	method string
	path   string // escaped, starting with "/"
	query  url.Values
	// prepare, if set, is called before every attempt and returns the
	// JSON body to send (nil for none) and how long the server may hold
	// the answer (a long poll).
	prepare func() (body any, hold time.Duration)
}

// response is a 2xx answer.
type response struct {
	status int
	body   []byte
}

func (r *request) String() string { return r.method + " " + r.path }

// permanentError marks a failure that no retry will fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// do runs r, retrying connection errors, 5xx and 429 answers with jittered
// exponential backoff and moving to the next server after each. It returns
// the first 2xx answer, or an error wrapped with the method and path: the
// server's *berth.Error for an error answer.
func (c *Client) do(ctx context.Context, r *request) (*response, error) {
	var lastErr error
	for attempt := 1; ; attempt++ {
		idx := c.next.Load()
		base := c.servers[idx%uint64(len(c.servers))]
		resp, retryAfter, err := c.attempt(ctx, base, r)
		if err == nil {
			return resp, nil
		}
		// A definite answer stands even if ctx ended meanwhile.
		var perm *permanentError
		if errors.As(err, &perm) {
			return nil, fmt.Errorf("%s: %w", r, perm.err)
		}
		if ctx.Err() != nil {
			// The caller gave up. Keep both why (the context) and, if
			// there was one, the failure that made us retry.
			if !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (last answer: %w)", ctx.Err(), err)
			} else if lastErr != nil {
				err = fmt.Errorf("%w (last error: %w)", err, lastErr)
			}
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		lastErr = err
		if attempt >= c.maxAttempts {
			return nil, fmt.Errorf("%s: giving up after %d attempts: %w", r, attempt, err)
		}
		if len(c.servers) > 1 {
			c.next.CompareAndSwap(idx, idx+1)
		}
		delay := c.backoff(attempt)
		if retryAfter >= 0 {
			delay = min(retryAfter, c.maxBackoff)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return nil, fmt.Errorf("%s: %w (no time left to retry; last error: %w)", r, context.DeadlineExceeded, err)
		}
		if err := sleep(ctx, delay); err != nil {
			return nil, fmt.Errorf("%s: %w (last error: %w)", r, err, lastErr)
		}
	}
}

// backoff returns the delay before retry number n (1 for the first retry):
// uniformly random up to min(MaxBackoff, MinBackoff·2^(n-1)) ("full
// jitter"), so that many clients do not retry in step.
func (c *Client) backoff(n int) time.Duration {
	d := c.minBackoff
	for i := 1; i < n && d < c.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.maxBackoff)
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attempt makes one HTTP exchange with base. It returns the answer if it is
// a 2xx; otherwise an error that is retryable unless it is a
// *permanentError, and the server's Retry-After (-1 if none).
func (c *Client) attempt(ctx context.Context, base string, r *request) (*response, time.Duration, error) {
	var (
		body io.Reader
		hold time.Duration
	)
	if r.prepare != nil {
		var v any
		v, hold = r.prepare()
		if v != nil {
			b, err := json.Marshal(v)
			if err != nil {
				return nil, -1, &permanentError{fmt.Errorf("encode request: %w", err)}
			}
			body = bytes.NewReader(b)
		}
	}
	actx, cancel := context.WithTimeout(ctx, hold+c.attemptTimeout)
	defer cancel()
	u := base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	req, err := http.NewRequestWithContext(actx, r.method, u, body)
	if err != nil {
		return nil, -1, &permanentError{err}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if isCertError(err) {
			return nil, -1, &permanentError{err}
		}
		return nil, -1, err
	}
	defer resp.Body.Close()
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	limit := int64(maxErrorBytes)
	if ok {
		limit = maxAnswerBytes
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, -1, fmt.Errorf("read the answer of %s: %w", u, err)
	}
	if ok {
		if int64(len(b)) > limit {
			return nil, -1, &permanentError{fmt.Errorf("the answer of %s is larger than %d bytes", u, limit)}
		}
		if len(b) == 0 && resp.StatusCode != http.StatusNoContent {
			// A server cut off mid-answer (stopping, crashing) can leave
			// an empty 2xx; every berth answer but a 204 has a body.
			return nil, -1, fmt.Errorf("empty %s answer from %s", resp.Status, u)
		}
		return &response{status: resp.StatusCode, body: b}, -1, nil
	}
	if int64(len(b)) > limit {
		b = b[:limit]
	}
	answerErr := errorFromAnswer(resp, b)
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		return nil, retryAfter(resp), answerErr
	}
	return nil, -1, &permanentError{answerErr}
}

// errorFromAnswer returns the server's *berth.Error, or for an answer not
// in berth's error shape (a proxy's page, say) one made from the status:
// EUnavailable for the statuses that mean "try later", EInternal otherwise.
func errorFromAnswer(resp *http.Response, body []byte) *berth.Error {
	var eb struct {
		Error *berth.Error `json:"error"`
	}
	if err := json.Unmarshal(body, &eb); err == nil && eb.Error != nil && eb.Error.Code != "" {
		return eb.Error
	}
	code := berth.EInternal
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		code = berth.EUnavailable
	}
	snippet := strings.TrimSpace(string(body))
	if len(snippet) > 200 {
		snippet = snippet[:200] + "…"
	}
	msg := fmt.Sprintf("unexpected answer %q from %s", resp.Status, resp.Request.URL.Host)
	if snippet != "" {
		msg += ": " + snippet
	}
	return &berth.Error{Code: code, Message: msg}
}

// retryAfter reads a Retry-After header on a 429 or 503, in seconds or as
// an HTTP date; -1 if there is none.
func retryAfter(resp *http.Response) time.Duration {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return -1
	}
	return parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return -1
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return -1
		}
		if n > int64(24*time.Hour/time.Second) {
			n = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return -1
}

func isCertError(err error) bool {
	var cve *tls.CertificateVerificationError
	return errors.As(err, &cve)
}

// call runs r and decodes a 2xx answer into out (if not nil).
func (c *Client) call(ctx context.Context, r *request, out any) error {
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	return decodeAnswer(r, resp, out)
}

func decodeAnswer(r *request, resp *response, out any) error {
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		return fmt.Errorf("%s: cannot decode the answer: %w", r, err)
	}
	return nil
}

// jsonBody returns a prepare func that sends v and lets the server answer
// at once.
func jsonBody(v any) func() (any, time.Duration) {
	return func() (any, time.Duration) { return v, 0 }
}

// seg escapes one path segment.
func seg(s string) string { return url.PathEscape(s) }
