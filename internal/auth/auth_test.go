package auth_test

import (
	"strings"
	"testing"

	"github.com/berth-ci/berth/internal/auth"
)

func TestTokenNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"ci-main": true, "ops": true, "a.b_c": true,
		"": false, "berth-janitor": false, "BERTH-JANITOR": false, "Berth-x": false,
		"has space": false, "cert:x": false, strings.Repeat("x", 64): false,
	} {
		if got := auth.ValidName(name); got != ok {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, ok)
		}
	}
}

func TestNewTokenIsRandomAndHashed(t *testing.T) {
	a, ha, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, hb, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if a == b || ha == hb || !strings.HasPrefix(a, auth.TokenPrefix) || len(a) < 50 || auth.Hash(a) != ha || strings.Contains(ha, a) {
		t.Fatalf("tokens %q %q, hashes %q %q", a, b, ha, hb)
	}
}
