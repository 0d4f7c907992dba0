package probe

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeAPIServer is a kube-apiserver as far as /readyz goes: TLS with the
// test CA's certificate, a bearer token or a client certificate of the CA
// as credentials, and "ok" or a failed etcd check as the answer.
type fakeAPIServer struct {
	*httptest.Server
	etcdDown atomic.Bool
}

func newFakeAPIServer(t *testing.T, cert tls.Certificate) *fakeAPIServer {
	t.Helper()
	s := &fakeAPIServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pki().caPool,
	}
	s.Config.ErrorLog = discardLog()
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *fakeAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	authenticated := r.Header.Get("Authorization") == "Bearer sekret" ||
		r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && r.TLS.PeerCertificates[0].Subject.CommonName == "probe"
	switch {
	case r.URL.Path != "/readyz":
		http.NotFound(w, r)
	case !authenticated:
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`, http.StatusUnauthorized)
	case s.etcdDown.Load():
		http.Error(w, "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n[+]informer-sync ok\nreadyz check failed", http.StatusInternalServerError)
	default:
		fmt.Fprint(w, "ok")
	}
}

// kubeconfig is a kubeconfig for server with a context per way of
// authenticating: "token", "cert" (inline), "files" (client certificate
// and token in files beside the kubeconfig, named relative to it) and
// "nobody" (no credentials), the current one.
func kubeconfig(server string) string {
	p := pki()
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: token
  user:
    token: sekret
- name: cert
  user:
    client-certificate-data: %s
    client-key-data: %s
- name: files
  user:
    client-certificate: client.crt
    client-key: client.key
- name: nobody
  user: {}
contexts:
- name: token
  context: {cluster: test, user: token}
- name: cert
  context: {cluster: test, user: cert}
- name: files
  context: {cluster: test, user: files}
- name: nobody
  context: {cluster: test, user: nobody}
current-context: nobody
`, server, b64(p.caPEM), b64(p.clientPEM), b64(p.keyPEM))
}

// kubeconfigDir writes the kubeconfig and its client certificate files
// into a new directory and returns the kubeconfig's path.
func kubeconfigDir(t *testing.T, server string) string {
	t.Helper()
	dir := t.TempDir()
	p := pki()
	for name, data := range map[string][]byte{
		"kubeconfig": []byte(kubeconfig(server)),
		"client.crt": p.clientPEM,
		"client.key": p.keyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "kubeconfig")
}

func kubeCheck(t *testing.T, s KubernetesSpec, env Env, target *Target) Result {
	t.Helper()
	return compileOK(t, Spec{Kubernetes: &s}, env).Check(context.Background(), target)
}

func TestKubernetesReadyz(t *testing.T) {
	t.Parallel()
	srv := newFakeAPIServer(t, pki().server)
	path := kubeconfigDir(t, srv.URL)
	cluster := &Target{Name: "cluster-a", UserData: map[string]string{"kubeconfig": kubeconfig(srv.URL), "dir": filepath.Dir(path)}}
	readyz := "GET " + srv.URL + "/readyz: "
	for _, c := range []struct {
		name   string
		spec   KubernetesSpec
		ok     bool
		reason Reason
		msg    string
	}{
		{"token", KubernetesSpec{KubeconfigFile: path, Context: "token"}, true, "", readyz + "200 OK"},
		{"client certificate", KubernetesSpec{KubeconfigFile: path, Context: "cert"}, true, "", readyz + "200 OK"},
		{"files relative to the kubeconfig", KubernetesSpec{KubeconfigFile: "{{.UserData.dir}}/kubeconfig", Context: "files"}, true, "", readyz + "200 OK"},
		{"current context, no credentials", KubernetesSpec{KubeconfigFile: path}, false, ReasonUnauthorized, readyz + `401 Unauthorized: {"kind":"Status"`},
		{"user data", KubernetesSpec{KubeconfigUserData: "kubeconfig", Context: "token"}, true, "", readyz + "200 OK"},
		{"user data, current context", KubernetesSpec{KubeconfigUserData: "kubeconfig"}, false, ReasonUnauthorized, readyz + "401 Unauthorized"},
		{"no such context", KubernetesSpec{KubeconfigUserData: "kubeconfig", Context: "prod"}, false, ReasonProbeError,
			`probe.kubernetes.kubeconfigUserData: resource cluster-a: kubeconfig in user data "kubeconfig": `},
		{"no such user data", KubernetesSpec{KubeconfigUserData: "kube"}, false, ReasonProbeError,
			`probe.kubernetes.kubeconfigUserData: resource cluster-a has no user data key "kube"`},
		{"no such file", KubernetesSpec{KubeconfigFile: path + ".gone"}, false, ReasonProbeError,
			"probe.kubernetes.kubeconfigFile: open " + path + ".gone: no such file or directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			wantResult(t, kubeCheck(t, c.spec, Env{}, cluster), c.ok, c.reason, c.msg)
		})
	}
}

func TestKubernetesNotReady(t *testing.T) {
	t.Parallel()
	srv := newFakeAPIServer(t, pki().server)
	srv.etcdDown.Store(true)
	res := kubeCheck(t, KubernetesSpec{KubeconfigFile: kubeconfigDir(t, srv.URL), Context: "token"}, Env{}, &Target{Name: "cluster-a"})
	wantResult(t, res, false, ReasonHTTPStatus, "GET "+srv.URL+"/readyz: 500 Internal Server Error: [-]etcd failed: reason withheld")
}

// TestKubernetesFreshConnections: every probe dials anew through Env.Dial,
// and sees a kubeconfig changed since the last one.
func TestKubernetesFreshConnections(t *testing.T) {
	t.Parallel()
	srv := newFakeAPIServer(t, pki().server)
	var dials atomic.Int32
	env := Env{Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}}
	path := kubeconfigDir(t, srv.URL)
	c := compileOK(t, Spec{Kubernetes: &KubernetesSpec{KubeconfigFile: path}}, env)
	cluster := &Target{Name: "cluster-a"}
	wantResult(t, c.Check(context.Background(), cluster), false, ReasonUnauthorized)
	wantResult(t, c.Check(context.Background(), cluster), false, ReasonUnauthorized)
	edited := strings.Replace(kubeconfig(srv.URL), "current-context: nobody", "current-context: token", 1)
	if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	wantResult(t, c.Check(context.Background(), cluster), true, "")
	if n := dials.Load(); n != 3 {
		t.Fatalf("%d dials for 3 probes; want one each", n)
	}
}

func TestKubernetesTLS(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		cert tls.Certificate
		msg  string
	}{
		{"unknown CA", pki().unknownCA, "x509: certificate signed by unknown authority"},
		{"expired", pki().expired, "x509: certificate has expired or is not yet valid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := newFakeAPIServer(t, c.cert)
			res := kubeCheck(t, KubernetesSpec{KubeconfigFile: kubeconfigDir(t, srv.URL), Context: "token"}, Env{}, &Target{Name: "cluster-a"})
			wantResult(t, res, false, ReasonTLSError, "GET "+srv.URL+"/readyz: "+c.msg)
		})
	}
}

func TestKubernetesRefused(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	res := kubeCheck(t, KubernetesSpec{KubeconfigFile: kubeconfigDir(t, "https://"+addr), Context: "token"}, Env{}, &Target{Name: "cluster-a"})
	wantResult(t, res, false, ReasonConnectionRefused, "GET https://"+addr+"/readyz: dial tcp "+addr+": connect: connection refused")
}

// TestKubernetesNoAnswer: an API server that takes the connection and
// never answers the handshake; the probe's timeout ends it.
func TestKubernetesNoAnswer(t *testing.T) {
	t.Parallel()
	addr, gotHello := silentServer(t, "")
	c := compileOK(t, Spec{Kubernetes: &KubernetesSpec{KubeconfigFile: kubeconfigDir(t, "https://"+addr), Context: "cert"}}, Env{})
	res := c.Check(timeoutWhen(t, gotHello), &Target{Name: "cluster-a"})
	wantResult(t, res, false, ReasonTimeout, "GET https://"+addr+"/readyz: no answer within the probe timeout (TLS handshake with "+addr+")")
}

func TestKubernetesBadKubeconfig(t *testing.T) {
	t.Parallel()
	c := compileOK(t, Spec{Kubernetes: &KubernetesSpec{KubeconfigUserData: "kubeconfig"}}, Env{})
	for _, c2 := range []struct{ content, msg string }{
		{"", `user data "kubeconfig" is empty`},
		{"clusters: [", `kubeconfig in user data "kubeconfig": `},
		{"apiVersion: v1\nkind: Config\n", `kubeconfig in user data "kubeconfig": invalid configuration`},
	} {
		res := c.Check(context.Background(), &Target{Name: "cluster-a", UserData: map[string]string{"kubeconfig": c2.content}})
		wantResult(t, res, false, ReasonProbeError, "probe.kubernetes.kubeconfigUserData: resource cluster-a", c2.msg)
	}
}
