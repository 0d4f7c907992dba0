package server

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
)

// Authentication modes of berth serve (--auth).
const (
	// AuthAuto authenticates unless berth listens on a loopback address
	// only: on one machine, whoever can reach berth could reach its store.
	AuthAuto = "auto"
	// AuthTokens asks every request but the public ones for a token (or
	// a client certificate).
	AuthTokens = "tokens"
	// AuthNone serves everyone: allowed on a loopback address, elsewhere
	// only with --insecure.
	AuthNone = "none"
)

// loopback says whether addr (host:port) listens on a loopback address
// only. An empty host, 0.0.0.0 or :: listens everywhere; a host name
// other than localhost may resolve to anything, so it does not count.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authMode decides whether berth authenticates, refusing to serve a
// non-loopback address without authentication unless told --insecure.
func authMode(opts Options) (authenticate bool, err error) {
	mode := opts.Auth
	if mode == "" {
		mode = AuthAuto
	}
	local := loopback(opts.Listen)
	switch mode {
	case AuthAuto:
		return !local || opts.TLSClientCA != "", nil
	case AuthTokens:
		return true, nil
	case AuthNone:
		if opts.TLSClientCA != "" {
			return false, startupf("--auth none and --tls-client-ca exclude each other: client certificates are authentication")
		}
		if !local && !opts.Insecure {
			return false, startupf("refusing to serve %s without authentication: anyone who reaches it could release anyone's resource; use --auth tokens (berth token create makes tokens), listen on a loopback address, or pass --insecure", opts.Listen)
		}
		return false, nil
	}
	return false, startupf("--auth must be auto, tokens or none, not %q", mode)
}

// tlsConfig is the TLS configuration --tls-cert, --tls-key and
// --tls-client-ca ask for; nil without them.
func tlsConfig(opts Options) (*tls.Config, error) {
	switch {
	case opts.TLSCert == "" && opts.TLSKey == "":
		if opts.TLSClientCA != "" {
			return nil, startupf("--tls-client-ca needs --tls-cert and --tls-key: client certificates come with TLS")
		}
		return nil, nil
	case opts.TLSCert == "" || opts.TLSKey == "":
		return nil, startupf("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(opts.TLSCert, opts.TLSKey)
	if err != nil {
		return nil, startupf("TLS: %s", strings.TrimPrefix(err.Error(), "tls: "))
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if opts.TLSClientCA != "" {
		pem, err := os.ReadFile(opts.TLSClientCA)
		if err != nil {
			return nil, startupf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, startupf("--tls-client-ca: %s holds no PEM certificate", opts.TLSClientCA)
		}
		// A certificate is one way in; a token is the other, so clients
		// without one are not turned away at the handshake.
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// scheme is the URL scheme berth serves.
func scheme(cfg *tls.Config) string {
	if cfg != nil {
		return "https"
	}
	return "http"
}
