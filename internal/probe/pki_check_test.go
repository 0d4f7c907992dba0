package probe

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
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testPKI is a CA and the certificates the TLS tests need, made once per
// test binary (they are immutable).
type testPKI struct {
	caPEM      []byte
	otherCAPEM []byte
	caPool     *x509.CertPool
	// Server certificates: for 127.0.0.1 by the CA; expired; for another
	// host; for 127.0.0.1 by a CA the client does not know.
	server, expired, wrongHost, unknownCA tls.Certificate
	// client is a client certificate (CN=probe) by the CA.
	client            tls.Certificate
	clientPEM, keyPEM []byte
}

var pki = sync.OnceValue(func() *testPKI {
	ca, caKey := newCA("berth test CA")
	other, otherKey := newCA("someone else's CA")
	now := time.Now()
	p := &testPKI{
		caPEM:      pemCert(ca),
		otherCAPEM: pemCert(other),
		caPool:     x509.NewCertPool(),
	}
	p.caPool.AddCert(ca)
	localhost := func(c *x509.Certificate) { c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)} }
	p.server, _, _ = issue(ca, caKey, localhost)
	p.expired, _, _ = issue(ca, caKey, localhost, func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = now.AddDate(-2, 0, 0), now.AddDate(-1, 0, 0)
	})
	p.wrongHost, _, _ = issue(ca, caKey, func(c *x509.Certificate) { c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 2)} })
	p.unknownCA, _, _ = issue(other, otherKey, localhost)
	p.client, p.clientPEM, p.keyPEM = issue(ca, caKey, func(c *x509.Certificate) {
		c.Subject.CommonName = "probe"
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	})
	return p
})

var serial = big.NewInt(0)
var serialMu sync.Mutex

func nextSerial() *big.Int {
	serialMu.Lock()
	defer serialMu.Unlock()
	serial.Add(serial, big.NewInt(1))
	return new(big.Int).Set(serial)
}

func newCA(name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))
	return must(x509.ParseCertificate(der)), key
}

// issue makes a leaf certificate signed by ca, returned for crypto/tls and
// as PEM.
func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, edits ...func(*x509.Certificate)) (tls.Certificate, []byte, []byte) {
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: "leaf"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, e := range edits {
		e(tmpl)
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey))
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: must(x509.MarshalECPrivateKey(key))})
	return must(tls.X509KeyPair(certPEM, keyPEM)), certPEM, keyPEM
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// writeFile writes data to a new file in t's temp dir and returns its path.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
