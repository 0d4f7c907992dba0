// Package auth knows who is calling: bearer tokens (stored as their
// SHA-256 only) with roles, and TLS client certificates. It turns a
// request's credentials into a berth.Principal; what each role may do is
// the API's to say (api.roles).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// TokenPrefix starts every token berth makes, so that one pasted into a
// log or a repository is recognisable (and secret scanners can match it).
const TokenPrefix = "berth_"

// NewToken returns a new token and the hash the store keeps of it: 32
// bytes from the system's random source, so that a fast hash is as
// strong as a slow one (there is no password to guess).
func NewToken() (token, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("make a token: %w", err)
	}
	token = TokenPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	return token, Hash(token), nil
}

// Hash is the hex SHA-256 of a token, as the store keeps it.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ValidName says whether name may name a token: it is recorded as the
// actor of every event its holder causes.
// Names that start with "berth-" are berth's own actors (berth-janitor,
// berth-provisioner), which no token may pose as.
func ValidName(name string) bool {
	return name != "" && len(name) <= 63 && berth.ValidName(name) && !strings.HasPrefix(strings.ToLower(name), "berth-")
}

// Options configure an Authenticator.
type Options struct {
	// Store holds the tokens.
	Store store.Store
	Clock clockwork.Clock
	// CacheTTL is how long a token's lookup is remembered: a revoked
	// token stops working within it, on every replica. Default
	// DefaultCacheTTL.
	CacheTTL time.Duration
}

// DefaultCacheTTL bounds how long a revoked token may still be accepted.
const DefaultCacheTTL = 2 * time.Second

// maxCached bounds the cache: beyond it, it starts over.
const maxCached = 10000

// Authenticator finds the principal of a request.
type Authenticator struct {
	store store.Store
	clock clockwork.Clock
	ttl   time.Duration

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	tok *berth.Token // nil: no such token
	at  time.Time
}

// New returns an Authenticator.
func New(opts Options) *Authenticator {
	a := &Authenticator{store: opts.Store, clock: opts.Clock, ttl: opts.CacheTTL, cache: map[string]cached{}}
	if a.clock == nil {
		a.clock = clockwork.NewRealClock()
	}
	if a.ttl <= 0 {
		a.ttl = DefaultCacheTTL
	}
	return a
}

// ErrNoCredentials: the request carries neither a token nor a client
// certificate.
var ErrNoCredentials = errors.New("no credentials")

// Authenticate returns the principal of r: the subject of a verified
// client certificate, or the token of its Authorization header (Bearer,
// or Basic with the token as the password, as Boskos clients send it).
// Errors are EUnauthenticated *berth.Errors, or store failures.
func (a *Authenticator) Authenticate(ctx context.Context, r *http.Request) (berth.Principal, error) {
	p := berth.Principal{Remote: r.RemoteAddr}
	if tok, ok := bearer(r); ok {
		t, err := a.lookup(ctx, tok)
		if err != nil {
			return p, err
		}
		p.Name, p.Role = t.Name, t.Role
		return p, nil
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		name, role, err := CertificatePrincipal(r.TLS.VerifiedChains[0][0])
		if err != nil {
			return p, err
		}
		p.Name, p.Role = name, role
		return p, nil
	}
	return p, &berth.Error{Code: berth.EUnauthenticated,
		Message: "this berth needs credentials: send Authorization: Bearer TOKEN (berth token create makes one; the CLI reads $BERTH_TOKEN)"}
}

// bearer returns the token of r's Authorization header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	// The scheme's name is case-insensitive (RFC 9110).
	if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(tok), true
	}
	if _, pass, ok := r.BasicAuth(); ok {
		return pass, true
	}
	// Something else: answered as a token that does not exist.
	return h, true
}

func (a *Authenticator) lookup(ctx context.Context, token string) (*berth.Token, error) {
	unknown := &berth.Error{Code: berth.EUnauthenticated, Message: "unknown or revoked token"}
	if len(token) > 256 {
		return nil, unknown
	}
	h := Hash(token)
	now := a.clock.Now()
	a.mu.Lock()
	c, ok := a.cache[h]
	a.mu.Unlock()
	if !ok || now.Sub(c.at) >= a.ttl {
		t, err := a.store.TokenByHash(ctx, h)
		switch {
		case errors.Is(err, store.ErrNotFound):
			t = nil
		case err != nil:
			return nil, err
		}
		c = cached{tok: t, at: now}
		a.mu.Lock()
		if len(a.cache) >= maxCached {
			a.cache = map[string]cached{}
		}
		a.cache[h] = c
		a.mu.Unlock()
	}
	if c.tok == nil || !ValidName(c.tok.Name) {
		// A name no token may have now (one made before berth- was
		// reserved) lets nobody in as berth's own.
		return nil, unknown
	}
	return c.tok, nil
}

// CertificatePrincipal is who a verified client certificate names: its
// subject's common name, with the role its organization (O) names, as
// Kubernetes reads users and groups from client certificates.
func CertificatePrincipal(c *x509.Certificate) (string, berth.Role, error) {
	name := c.Subject.CommonName
	if !ValidName(name) {
		return "", "", &berth.Error{Code: berth.EUnauthenticated, Message: fmt.Sprintf("client certificate's common name %q cannot name a principal", store.Head(name, 64))}
	}
	for _, o := range c.Subject.Organization {
		if r := berth.Role(o); berth.ValidRole(r) {
			return "cert:" + name, r, nil
		}
	}
	return "", "", &berth.Error{Code: berth.EUnauthenticated,
		Message: fmt.Sprintf("client certificate of %s names no role: its subject's organization (O) must be one of viewer, client, janitor, admin", name)}
}
