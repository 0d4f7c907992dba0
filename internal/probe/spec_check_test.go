package probe

import (
	"errors"
	"strings"
	"testing"

	"github.com/berth-ci/berth"
)

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	caFile := writeFile(t, "ca.pem", pki().caPEM)
	notPEM := writeFile(t, "ca.txt", []byte("not a certificate"))
	for _, c := range []struct {
		name string
		spec Spec
		want []string // one per problem: "field: message part"
	}{
		{"no kind", Spec{}, []string{"probe: no probe kind set"}},
		{"two kinds", Spec{TCP: &TCPSpec{Address: "a:1"}, Exec: &ExecSpec{Command: []string{"true"}}},
			[]string{"probe: only one probe kind may be set, got tcp and exec"}},
		{"tcp empty", Spec{TCP: &TCPSpec{}}, []string{"probe.tcp.address: must be set"}},
		{"tcp no port", Spec{TCP: &TCPSpec{Address: "10.0.0.1"}}, []string{`probe.tcp.address: address 10.0.0.1: missing port in address`}},
		{"tcp bad template", Spec{TCP: &TCPSpec{Address: "{{.UserData.host}:22"}},
			[]string{`probe.tcp.address: invalid template "{{.UserData.host}:22": line 1: bad character U+007D '}'`}},
		{"tcp unknown field", Spec{TCP: &TCPSpec{Address: "{{.Nmae}}:22"}},
			[]string{"probe.tcp.address: template \"{{.Nmae}}:22\": unknown field .Nmae"}},
		{"tcp unknown field via $", Spec{TCP: &TCPSpec{Address: "{{with .UserData}}{{$.Host}}{{end}}:22"}},
			[]string{"unknown field .Host"}},
		{"http empty", Spec{HTTP: &HTTPSpec{}}, []string{"probe.http.url: must be set"}},
		{"http not a URL", Spec{HTTP: &HTTPSpec{URL: "10.0.0.1/healthz"}}, []string{`probe.http.url: "10.0.0.1/healthz" is not an http or https URL`}},
		{"http no host", Spec{HTTP: &HTTPSpec{URL: "http:///healthz"}}, []string{`probe.http.url: "http:///healthz" has no host`}},
		{"http everything wrong", Spec{HTTP: &HTTPSpec{
			URL:                "https://{{.UserData.host}}/",
			ExpectStatus:       []int{200, 99, 600},
			CAFile:             notPEM,
			BearerToken:        "t",
			BearerTokenFile:    "/t",
			InsecureSkipVerify: true,
		}}, []string{
			"probe.http.expectStatus: 99 is not an HTTP status (100-599)",
			"probe.http.expectStatus: 600 is not an HTTP status",
			"probe.http.bearerToken: set bearerToken or bearerTokenFile, not both",
			"probe.http.insecureSkipVerify: cannot be combined with caFile",
			"probe.http.caFile: " + notPEM + " holds no PEM certificate",
		}},
		{"http CA file missing", Spec{HTTP: &HTTPSpec{URL: "https://x/", CAFile: caFile + ".gone"}},
			[]string{"probe.http.caFile: open " + caFile + ".gone: no such file or directory"}},
		{"http bad token template", Spec{HTTP: &HTTPSpec{URL: "https://x/", BearerToken: "{{.UserData.token"}},
			[]string{`probe.http.bearerToken: invalid template`}},
		{"kubernetes neither", Spec{Kubernetes: &KubernetesSpec{}},
			[]string{"probe.kubernetes.kubeconfigFile: set exactly one of kubeconfigFile and kubeconfigUserData"}},
		{"kubernetes both", Spec{Kubernetes: &KubernetesSpec{KubeconfigFile: "/k", KubeconfigUserData: "k"}},
			[]string{"probe.kubernetes.kubeconfigFile: set exactly one of kubeconfigFile and kubeconfigUserData"}},
		{"exec empty", Spec{Exec: &ExecSpec{}}, []string{"probe.exec.command: must name a program"}},
		{"exec empty program", Spec{Exec: &ExecSpec{Command: []string{"", "x"}}}, []string{"probe.exec.command[0]: must be set"}},
		{"exec bad argument", Spec{Exec: &ExecSpec{Command: []string{"ssh", "{{.Labels.zone}", "{{.Foo}}"}}}, []string{
			"probe.exec.command[1]: invalid template",
			"probe.exec.command[2]: template \"{{.Foo}}\": unknown field .Foo",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			checker, err := Compile(c.spec, Env{})
			if err == nil {
				t.Fatalf("Compile gave %T, no error", checker)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(c.want) {
				t.Fatalf("%d problems reported, want %d:\n%v", len(lines), len(c.want), err)
			}
			for i, want := range c.want {
				if !strings.Contains(lines[i], want) {
					t.Errorf("problem %d: %q does not contain %q", i, lines[i], want)
				}
			}
			// Each problem is a *berth.Error the config loader can
			// re-root under the pool ("pools[2].probe.http.caFile").
			var be *berth.Error
			if !errors.As(err, &be) || be.Code != berth.EInvalid || !strings.HasPrefix(be.Field, "probe") {
				t.Fatalf("error %v is not an EInvalid *berth.Error with a probe field: %#v", err, be)
			}
		})
	}
}

func TestCompileValid(t *testing.T) {
	t.Parallel()
	caFile := writeFile(t, "ca.pem", pki().caPEM)
	for _, s := range []Spec{
		{TCP: &TCPSpec{Address: "{{.UserData.host}}:{{.Labels.port}}"}},
		{TCP: &TCPSpec{Address: "db.example:5432"}},
		{HTTP: &HTTPSpec{URL: "https://{{.Name}}.example/healthz", ExpectStatus: []int{200, 204}, CAFile: caFile, BearerTokenFile: "/run/{{.Type}}/token"}},
		{HTTP: &HTTPSpec{URL: "http://10.0.0.1:8080/", InsecureSkipVerify: true, BearerToken: "{{.UserData.token}}"}},
		{Kubernetes: &KubernetesSpec{KubeconfigFile: "/etc/kube/{{.Name}}.yaml", Context: "admin"}},
		{Kubernetes: &KubernetesSpec{KubeconfigUserData: "kubeconfig"}},
		{Exec: &ExecSpec{Command: []string{"./check.sh", "{{.UserData.host}}", "", "{{if .Labels.zone}}{{.Labels.zone}}{{else}}none{{end}}"}}},
	} {
		if _, err := Compile(s, Env{}); err != nil {
			t.Errorf("Compile(%s): %v", s.Kind(), err)
		}
	}
}

func TestValidateTarget(t *testing.T) {
	t.Parallel()
	spec := Spec{Exec: &ExecSpec{Command: []string{"ssh", "{{.UserData.user}}@{{.UserData.host}}", "-p", "{{.Labels.port}}", "{{.Name}}"}}}
	ok := &Target{Name: "vm-1", UserData: map[string]string{"user": "ci", "host": "10.0.0.1"}, Labels: map[string]string{"port": "22"}}
	if err := spec.ValidateTarget(ok); err != nil {
		t.Fatalf("ValidateTarget: %v", err)
	}
	err := spec.ValidateTarget(&Target{Name: "vm-2", UserData: map[string]string{"host": "10.0.0.2"}})
	want := "probe.exec.command[1]: resource vm-2 has no user data key \"user\"\n" +
		"probe.exec.command[3]: resource vm-2 has no label \"port\""
	if err == nil || err.Error() != want {
		t.Fatalf("ValidateTarget: %v\nwant:\n%s", err, want)
	}

	http := Spec{HTTP: &HTTPSpec{URL: "{{.UserData.url}}"}}
	err = http.ValidateTarget(&Target{Name: "svc-1", UserData: map[string]string{"url": "10.0.0.1/healthz"}})
	if want := `probe.http.url: resource svc-1: "10.0.0.1/healthz" is not an http or https URL`; err == nil || err.Error() != want {
		t.Fatalf("ValidateTarget: %v; want %s", err, want)
	}

	kube := Spec{Kubernetes: &KubernetesSpec{KubeconfigUserData: "kubeconfig", Context: "token"}}
	if err := kube.ValidateTarget(&Target{Name: "c1", UserData: map[string]string{"kubeconfig": kubeconfig("https://127.0.0.1:6443")}}); err != nil {
		t.Fatalf("ValidateTarget: %v", err)
	}
	for _, c := range []struct {
		userData map[string]string
		want     string
	}{
		{nil, `probe.kubernetes.kubeconfigUserData: resource c1 has no user data key "kubeconfig"`},
		{map[string]string{"kubeconfig": "{"}, `probe.kubernetes.kubeconfigUserData: resource c1: kubeconfig in user data "kubeconfig": `},
		{map[string]string{"kubeconfig": strings.ReplaceAll(kubeconfig("https://127.0.0.1:6443"), "name: token", "name: tok")},
			`context "token" does not exist`},
	} {
		err := kube.ValidateTarget(&Target{Name: "c1", UserData: c.userData})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ValidateTarget(%v): %v; want %q", c.userData, err, c.want)
		}
	}
}

// TestTemplateRender covers the corners of templates a config may use.
func TestTemplateRender(t *testing.T) {
	t.Parallel()
	target := &Target{Name: "r1", Type: "vm", UserData: map[string]string{"a-b": "x", "host": "h"}, Labels: map[string]string{"zone": "z"}}
	for _, c := range []struct{ text, want, err string }{
		{"plain", "plain", ""},
		{"{{.Name}}/{{.Type}}/{{.UserData.host}}/{{.Labels.zone}}", "r1/vm/h/z", ""},
		{`{{index .UserData "a-b"}}`, "x", ""},
		{"{{with .UserData}}{{.host}}{{end}}", "h", ""},
		{"{{.UserData.missing}}", "", `probe.x: resource r1 has no user data key "missing"`},
		{"{{$.Labels.missing}}", "", `probe.x: resource r1 has no label "missing"`},
		{"{{.Name.Foo}}", "", "probe.x: resource r1: <.Name.Foo>: can't evaluate field Foo in type string"},
		{"{{with .UserData}}{{.missing}}{{end}}", "", `probe.x: resource r1: <.missing>: map has no entry for key "missing"`},
	} {
		f, err := parseField("probe.x", c.text, nil)
		if err != nil {
			t.Fatalf("parse %q: %v", c.text, err)
		}
		got, err := f.render(target)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("render %q: %v; want error %q", c.text, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("render %q: %q, %v; want %q", c.text, got, err, c.want)
		}
	}
}

// The plain renderer, which spares text/template's execution for
// templates of text and plain references, writes what text/template
// would.
func TestTemplatePlainMatchesTemplate(t *testing.T) {
	t.Parallel()
	target := &Target{Name: "r1", Type: "vm", UserData: map[string]string{"host": "h<&>", "port": "22"}, Labels: map[string]string{"zone": "z"}}
	for _, c := range []struct {
		text  string
		plain bool
	}{
		{"{{.UserData.host}}:{{.UserData.port}}", true},
		{"https://{{.Name}}.{{.Type}}.example/{{.Labels.zone}}?x={{ .UserData.host }}", true},
		{"{{.Name}}{{.Name}}", true},
		{"{{.Name | printf \"%s-x\"}}", false},
		{`{{index .UserData "host"}}`, false},
		{"{{if .Name}}a{{end}}", false},
	} {
		f, err := parseField("probe.x", c.text, nil)
		if err != nil {
			t.Fatal(err)
		}
		if (f.parts != nil) != c.plain {
			t.Errorf("%q: plain = %v, want %v", c.text, f.parts != nil, c.plain)
		}
		got, err := f.render(target)
		if err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		if err := f.tmpl.Execute(&want, target); err != nil {
			t.Fatal(err)
		}
		if got != want.String() {
			t.Errorf("%q: rendered %q, text/template writes %q", c.text, got, want.String())
		}
	}
}
