package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-ci/berth/internal/config"
)

// seeds adds every config in testdata (and the demo's) to f's corpus.
func seeds(f *testing.F, glob string) {
	f.Helper()
	paths, _ := filepath.Glob(filepath.Join("testdata", glob))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// checkParsed is what any input must give: a config that validates, or
// a ValidationError whose every line names a place and says something.
func checkParsed(t *testing.T, c *config.Config, err error) {
	t.Helper()
	var ve *config.ValidationError
	switch {
	case err == nil:
		if ps := c.Validate(); len(ps) > 0 {
			t.Fatalf("parsed, yet does not validate: %v", ps)
		}
	case errors.As(err, &ve):
		for _, l := range ve.Lines() {
			if strings.TrimSpace(l) == "" || strings.Contains(l, "\n") {
				t.Fatalf("a problem line that says nothing or spans lines: %q", l)
			}
		}
	default:
		t.Fatalf("an error that is not a ValidationError: %T %v", err, err)
	}
}

// FuzzParse: no YAML makes the config parser panic, hang or report a
// problem other than as field-naming lines.
func FuzzParse(f *testing.F) {
	seeds(f, "*.yaml")
	f.Add([]byte("pools:\n  - type: vm\n    resources: [a, b]\n"))
	f.Add([]byte("pools: [{type: c, probe: {tcp: {address: \"{{.UserData.addr}}\"}}, resources: [{name: r, userData: {addr: x}}]}]"))
	f.Add([]byte("&a [*a, *a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := config.Parse(b)
		checkParsed(t, c, err)
	})
}

// FuzzParseBoskos: the same of the Boskos resources file parser.
func FuzzParseBoskos(f *testing.F) {
	seeds(f, "boskos*.yaml")
	f.Add([]byte("resources:\n- type: p\n  state: free\n  names: [a, b]\n"))
	f.Add([]byte("resources:\n- type: d\n  min-count: 1\n  max-count: 2\n  lifespan: 1h\n  needs: {p: 1}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := config.ParseBoskos(b)
		checkParsed(t, c, err)
	})
}
