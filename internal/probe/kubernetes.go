package probe

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berth-ci/berth"
)

// kubeChecker probes a cluster's API server with GET /readyz and the
// credentials of a kubeconfig, read at every probe (from the file or the
// resource's user data) so that a rotated kubeconfig is used at once.
type kubeChecker struct {
	file        *field // nil when the kubeconfig is in user data
	userDataKey string
	context     string
	env         Env
	configs     *kubeconfigCache
}

func compileKubernetes(s KubernetesSpec, env Env) (*kubeChecker, error) {
	var c compiler
	if (s.KubeconfigFile == "") == (s.KubeconfigUserData == "") {
		c.errorf("probe.kubernetes.kubeconfigFile", "set exactly one of kubeconfigFile and kubeconfigUserData")
	}
	file := c.field("probe.kubernetes.kubeconfigFile", s.KubeconfigFile, false, nil)
	if err := c.err(); err != nil {
		return nil, err
	}
	return &kubeChecker{
		file:        file,
		userDataKey: s.KubeconfigUserData,
		context:     s.Context,
		env:         env,
		configs:     newKubeconfigCache(),
	}, nil
}

func (c *kubeChecker) Check(ctx context.Context, t *Target) Result {
	var (
		cfg *rest.Config
		err error
	)
	if c.file != nil {
		cfg, err = c.kubeconfigFromFile(t)
	} else {
		cfg, err = kubeconfigFromUserData(c.userDataKey, c.context, t, c.configs)
	}
	if err != nil {
		return probeError(err)
	}
	client, u, err := c.client(cfg)
	if err != nil {
		return probeError(fmt.Errorf("kubeconfig of %s: %w", t.Name, err))
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return probeError(fmt.Errorf("kubeconfig of %s: %w", t.Name, err))
	}
	req.Header.Set("Accept", "text/plain")
	return get(ctx, client, req, func(code int) bool { return code == http.StatusOK })
}

func (c *kubeChecker) kubeconfigFromFile(t *Target) (*rest.Config, error) {
	path, err := c.file.render(t)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, berth.FieldErrorf(c.file.name, "%v", err)
	}
	cfg, err := c.configs.load(data, path, c.context)
	if err != nil {
		return nil, berth.FieldErrorf(c.file.name, "%s: %v", path, err)
	}
	return cfg, nil
}

// kubeconfigFromUserData loads the kubeconfig held in t's user data under
// key. cache may be nil.
func kubeconfigFromUserData(key, kubeContext string, t *Target, cache *kubeconfigCache) (*rest.Config, error) {
	const name = "probe.kubernetes.kubeconfigUserData"
	data, ok := t.UserData[key]
	if !ok {
		return nil, berth.FieldErrorf(name, "resource %s has no user data key %q", t.Name, key)
	}
	if strings.TrimSpace(data) == "" {
		return nil, berth.FieldErrorf(name, "resource %s: user data %q is empty", t.Name, key)
	}
	cfg, err := cache.load([]byte(data), "", kubeContext)
	if err != nil {
		return nil, berth.FieldErrorf(name, "resource %s: kubeconfig in user data %q: %v", t.Name, key, err)
	}
	return cfg, nil
}

// client builds the HTTP client of one probe from cfg with client-go's own
// TLS and authentication code (CA data or file, client certificates, a
// bearer token or token file, exec credential plugins), on a transport of
// ours: client-go's transports are cached process-wide and keep
// connections alive, and a probe must open a new connection through
// env.Dial every time.
func (c *kubeChecker) client(cfg *rest.Config) (*http.Client, string, error) {
	tlsConf, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, "", err
	}
	tr := newTransport(c.env, tlsConf)
	tr.Proxy = cfg.Proxy // the kubeconfig's proxy-url, if any
	rt, err := rest.HTTPWrappersForConfig(cfg, tr)
	if err != nil {
		return nil, "", err
	}
	u, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, "", err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/readyz"
	client := &http.Client{
		Transport: rt,
		// An API server does not redirect /readyz; a redirect means
		// something else answers at that address.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return client, u.String(), nil
}

// kubeconfigCacheSize bounds the parsed kubeconfigs a checker keeps: one
// per cluster of a pool is the common case.
const kubeconfigCacheSize = 1024

// kubeconfigCache keeps parsed kubeconfigs by their content, so that a
// probe every few seconds does not decode the same YAML every time. It is
// keyed by a hash of the content, the file's path (relative paths inside
// resolve against it) and the context, so a changed kubeconfig is a new
// entry and never a stale one. Files the kubeconfig names (CA, client
// certificate, token) are read by client-go at every probe, outside the
// cache. The *rest.Config values are shared and must not be modified.
type kubeconfigCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*rest.Config
}

func newKubeconfigCache() *kubeconfigCache {
	return &kubeconfigCache{m: make(map[[sha256.Size]byte]*rest.Config)}
}

// load returns the client config of data for kubeContext ("" for the
// current context). path is the file data was read from, "" for user
// data. A nil cache parses every time.
func (c *kubeconfigCache) load(data []byte, path, kubeContext string) (*rest.Config, error) {
	if c == nil {
		return parseKubeconfig(data, path, kubeContext)
	}
	h := sha256.New()
	for _, s := range []string{path, kubeContext} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	h.Write(data)
	var key [sha256.Size]byte
	h.Sum(key[:0])

	c.mu.Lock()
	cfg, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return cfg, nil
	}
	cfg, err := parseKubeconfig(data, path, kubeContext)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= kubeconfigCacheSize {
		for k := range c.m { // evict any one: rotated kubeconfigs leave old entries
			delete(c.m, k)
			break
		}
	}
	c.m[key] = cfg
	return cfg, nil
}

func parseKubeconfig(data []byte, path, kubeContext string) (*rest.Config, error) {
	raw, err := clientcmd.Load(data)
	if err != nil {
		return nil, err
	}
	if path != "" {
		// What clientcmd.LoadFromFile does, on the bytes already read.
		for _, a := range raw.AuthInfos {
			a.LocationOfOrigin = path
		}
		for _, cl := range raw.Clusters {
			cl.LocationOfOrigin = path
		}
		if err := clientcmd.ResolveLocalPaths(raw); err != nil {
			return nil, err
		}
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: kubeContext}
	return clientcmd.NewNonInteractiveClientConfig(*raw, "", overrides, nil).ClientConfig()
}
