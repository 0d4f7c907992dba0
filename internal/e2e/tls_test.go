package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pki is a throw-away CA with a server certificate for 127.0.0.1 and
// client certificates, written as PEM files into a test's directory.
type pki struct {
	t      *testing.T
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	CAFile string
	serial int64
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "berth test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, dir: t.TempDir(), ca: ca, caKey: key, serial: 1}
	p.CAFile = p.write("ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue makes a certificate for subject (a server's if ip is set, else a
// client's) and returns its certificate and key files.
func (p *pki) issue(name string, subject pkix.Name, ip net.IP) (certFile, keyFile string) {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if ip != nil {
		tmpl.IPAddresses, tmpl.ExtKeyUsage = []net.IP{ip}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(name+".pem", "CERTIFICATE", der), p.write(name+"-key.pem", "PRIVATE KEY", kder)
}

// client is an HTTPS client that trusts the CA and, given files, presents
// that client certificate.
func (p *pki) client(certFile, keyFile string) *http.Client {
	p.t.Helper()
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(p.CAFile)
	if err != nil {
		p.t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			p.t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

// TestTLSAndClientCertificates serves HTTPS, with client certificates of
// its CA as credentials beside tokens: the certificate's CN names the
// principal and its O the role, as Kubernetes reads them.
func TestTLSAndClientCertificates(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t)
	cert, key := p.issue("server", pkix.Name{CommonName: "berth"}, net.ParseIP("127.0.0.1"))
	botCert, botKey := p.issue("bot", pkix.Name{CommonName: "ci-bot", Organization: []string{"client"}}, nil)
	noRoleCert, noRoleKey := p.issue("norole", pkix.Name{CommonName: "stranger", Organization: []string{"acme"}}, nil)
	token := makeToken(t, dir, "dash", "viewer")
	srv := startServer(t, "--config", writeConfig(t, dir, poolYAML("vm", 1, "10m")), "--data", dir,
		"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", p.CAFile)
	url := strings.Replace(srv.URL, "http://", "https://", 1)

	// The client certificate of ci-bot leases.
	bot := p.client(botCert, botKey)
	resp, err := bot.Post(url+"/v1/leases", "application/json", strings.NewReader(`{"type": "vm", "owner": "job-7"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("acquire with ci-bot's certificate: %s", resp.Status)
	}
	// A certificate that names no role, or none at all, gets nothing.
	for name, c := range map[string]*http.Client{"no role": p.client(noRoleCert, noRoleKey), "no certificate": p.client("", "")} {
		resp, err := c.Get(url + "/v1/pools")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("%s: %s, want 401", name, resp.Status)
		}
	}
	// Tokens work over TLS too; the CLI trusts the CA through
	// SSL_CERT_FILE, as any Go program on Linux does.
	out, errOut, code := runCLI(t, url, []string{"SSL_CERT_FILE=" + p.CAFile, "BERTH_TOKEN=" + token}, "events", "--resource", "vm-1", "--json")
	if code != 0 || !strings.Contains(out, `"actor":"cert:ci-bot"`) || !strings.Contains(out, `"remote":"127.0.0.1:`) {
		t.Fatalf("events over HTTPS: exit %d: %s%s", code, out, errOut)
	}
	// Plain HTTP to the TLS port is no way in.
	if resp, err := http.Get(srv.URL + "/v1/pools"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatalf("plain HTTP to the TLS port: %s", resp.Status)
		}
	}
}

// TestServeRefusesBadTLSWithOneLine: each TLS mistake stops berth serve
// at once with one line naming it, and exit 2.
func TestServeRefusesBadTLSWithOneLine(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t)
	cert, key := p.issue("server", pkix.Name{CommonName: "berth"}, net.ParseIP("127.0.0.1"))
	_, otherKey := p.issue("other", pkix.Name{CommonName: "other"}, net.ParseIP("127.0.0.1"))
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, poolYAML("vm", 1, "10m"))
	base := []string{"serve", "--config", cfg, "--data", dir, "--listen", "127.0.0.1:0"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", cert}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", filepath.Join(dir, "missing.pem"), "--tls-key", key}, "missing.pem"},
		{[]string{"--tls-cert", cert, "--tls-key", otherKey}, "private key does not match public key"},
		{[]string{"--tls-cert", notPEM, "--tls-key", key}, "TLS:"},
		{[]string{"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", notPEM}, "holds no PEM certificate"},
		{[]string{"--tls-client-ca", p.CAFile}, "--tls-client-ca needs --tls-cert"},
		{[]string{"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", p.CAFile, "--auth", "none"}, "exclude each other"},
	} {
		args := append(append([]string{}, base...), c.args...)
		_, errOut, code := runCLI(t, "", nil, args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "berth: ") || !strings.Contains(errOut, c.want) {
			t.Errorf("berth %v: exit %d: %q; want one line mentioning %q", c.args, code, errOut, c.want)
		}
	}
}
