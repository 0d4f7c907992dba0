package probe

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"

	"github.com/berth-ci/berth"
)

// Spec is a pool's probe as the config describes it. Exactly one kind is
// set. String fields marked "template" are Go text/template texts rendered
// with the probed resource's Target ({{.Name}}, {{.Type}},
// {{.UserData.key}}, {{.Labels.key}}); a key the resource lacks is an
// error, never an empty string.
type Spec struct {
	TCP        *TCPSpec
	HTTP       *HTTPSpec
	Kubernetes *KubernetesSpec
	Exec       *ExecSpec
}

// TCPSpec probes by opening a TCP connection and closing it at once.
type TCPSpec struct {
	// Address is host:port (template), e.g. "{{.UserData.host}}:22".
	Address string
}

// HTTPSpec probes with a GET on a fresh connection.
type HTTPSpec struct {
	// URL is an http or https URL (template).
	URL string
	// ExpectStatus lists the statuses that mean reachable; empty means any
	// 2xx.
	ExpectStatus []int
	// CAFile is a PEM bundle of the CAs to trust instead of the system
	// roots. It is read at Compile.
	CAFile string
	// BearerToken (template) or BearerTokenFile (template; the file is read
	// at every probe, so a rotated token is picked up) is sent as
	// "Authorization: Bearer …". At most one of them.
	BearerToken     string
	BearerTokenFile string
	// InsecureSkipVerify accepts any server certificate. Not with CAFile.
	InsecureSkipVerify bool
}

// KubernetesSpec probes a cluster's API server with GET /readyz, with the
// credentials of a kubeconfig.
type KubernetesSpec struct {
	// KubeconfigFile is the path of the kubeconfig (template). Relative
	// paths inside the kubeconfig are taken from its directory, as kubectl
	// does.
	KubeconfigFile string
	// KubeconfigUserData names the user-data key whose value is the
	// kubeconfig YAML itself. Exactly one of KubeconfigFile and
	// KubeconfigUserData.
	KubeconfigUserData string
	// Context overrides the kubeconfig's current-context.
	Context string
}

// ExecSpec probes by running a command; exit status 0 means reachable.
type ExecSpec struct {
	// Command is the program and its arguments, each a template. It runs
	// with berth's environment plus BERTH_RESOURCE_NAME,
	// BERTH_RESOURCE_TYPE, BERTH_USERDATA (the user data as a JSON object)
	// and BERTH_USERDATA_<KEY> for each key (upper-cased, every character
	// other than a letter or digit replaced by "_").
	Command []string
}

// Kind is the name of the spec's probe kind in the config: "tcp", "http",
// "kubernetes" or "exec"; "" when none is set.
func (s Spec) Kind() string {
	if k := s.kinds(); len(k) > 0 {
		return k[0]
	}
	return ""
}

func (s Spec) kinds() []string {
	var k []string
	if s.TCP != nil {
		k = append(k, "tcp")
	}
	if s.HTTP != nil {
		k = append(k, "http")
	}
	if s.Kubernetes != nil {
		k = append(k, "kubernetes")
	}
	if s.Exec != nil {
		k = append(k, "exec")
	}
	return k
}

// Compile checks s and returns the Checker it describes. Every problem is
// reported, each as a *berth.Error (code EInvalid) whose Field is the
// config path under the pool, e.g. "probe.http.caFile"; several are joined
// with errors.Join, one per line. Templates are parsed here; whether they
// render for a given resource is ValidateTarget's business.
func Compile(s Spec, env Env) (Checker, error) {
	switch k := s.kinds(); len(k) {
	case 0:
		return nil, berth.FieldErrorf("probe", "no probe kind set: give one of tcp, http, kubernetes, exec")
	case 1:
	default:
		return nil, berth.FieldErrorf("probe", "only one probe kind may be set, got %s", strings.Join(k, " and "))
	}
	switch {
	case s.TCP != nil:
		return compileTCP(*s.TCP, env)
	case s.HTTP != nil:
		return compileHTTP(*s.HTTP, env)
	case s.Kubernetes != nil:
		return compileKubernetes(*s.Kubernetes, env)
	default:
		return compileExec(*s.Exec)
	}
}

// ValidateTarget is a dry run of s for one resource: it renders every
// template of the spec with t, and for a kubeconfig taken from user data
// checks that the key is there and the kubeconfig loads. The config loader
// calls it for each resource of a probed pool, so that "resource X has no
// user data key Y" is a load-time error, not a probe result. It reads no
// files and opens no connections. Errors are *berth.Error naming the field,
// joined with errors.Join.
func (s Spec) ValidateTarget(t *Target) error {
	var errs []error
	for _, fs := range s.templates() {
		if fs.err != nil {
			errs = append(errs, fs.err)
			continue
		}
		if _, err := fs.f.render(t); err != nil {
			errs = append(errs, err)
		}
	}
	if k := s.Kubernetes; k != nil && k.KubeconfigUserData != "" {
		if _, err := kubeconfigFromUserData(k.KubeconfigUserData, k.Context, t, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type parsedField struct {
	f   *field
	err error
}

// templates parses every templated field of s.
func (s Spec) templates() []parsedField {
	var out []parsedField
	add := func(name, text string, check func(string) error) {
		if text == "" {
			return
		}
		f, err := parseField(name, text, check)
		out = append(out, parsedField{f, err})
	}
	if s.TCP != nil {
		add("probe.tcp.address", s.TCP.Address, checkHostPort)
	}
	if s.HTTP != nil {
		add("probe.http.url", s.HTTP.URL, checkProbeURL)
		add("probe.http.bearerToken", s.HTTP.BearerToken, nil)
		add("probe.http.bearerTokenFile", s.HTTP.BearerTokenFile, nil)
	}
	if s.Kubernetes != nil {
		add("probe.kubernetes.kubeconfigFile", s.Kubernetes.KubeconfigFile, nil)
	}
	if s.Exec != nil {
		for i, a := range s.Exec.Command {
			add(commandField(i), a, nil)
		}
	}
	return out
}

// compiler gathers a spec's field errors so that Compile reports all of
// them at once.
type compiler struct {
	errs []error
}

func (c *compiler) errorf(field, format string, args ...any) {
	c.errs = append(c.errs, berth.FieldErrorf(field, format, args...))
}

// field parses a template; required says an empty text is an error;
// check, if not nil, vets the rendered value.
func (c *compiler) field(name, text string, required bool, check func(string) error) *field {
	if text == "" {
		if required {
			c.errorf(name, "must be set")
		}
		return nil
	}
	f, err := parseField(name, text, check)
	if err != nil {
		c.errs = append(c.errs, err)
		return nil
	}
	return f
}

func (c *compiler) err() error { return errors.Join(c.errs...) }

// Hash identifies what the spec probes and where: the store keeps it per
// pool, so that a change of spec makes the pool's resources Unknown until
// probed again, and results made with another spec are dropped.
func (s Spec) Hash() string {
	b, err := json.Marshal(s)
	if err != nil {
		return "" // a spec of strings, ints and bools always marshals
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
