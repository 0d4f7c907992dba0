package e2e

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// TestMigrateDryRunThenApply: berth migrate --dry-run says what it would
// apply and touches nothing; berth migrate applies it; a schema newer than
// the binary is refused with one line.
func TestMigrateDryRunThenApply(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out, errOut, code := runCLI(t, "", nil, "migrate", "--data", dir, "--dry-run")
	if code != 0 || !strings.Contains(out, "schema version 0") || !strings.Contains(out, "would apply 001_init") {
		t.Fatalf("migrate --dry-run: exit %d: %s%s", code, out, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("migrate --dry-run created %s (%v)", dir, err)
	}
	out, errOut, code = runCLI(t, "", nil, "migrate", "--data", dir)
	if code != 0 || !strings.Contains(out, "applied 001_init") || strings.Contains(out, "would") {
		t.Fatalf("migrate: exit %d: %s%s", code, out, errOut)
	}
	out, _, code = runCLI(t, "", nil, "migrate", "--data", dir, "--dry-run")
	if code != 0 || !strings.Contains(out, "up to date") {
		t.Fatalf("migrate --dry-run after migrate: exit %d: %s", code, out)
	}

	db, err := sql.Open("sqlite", filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO berth_migrations (version, name, applied_at) VALUES (999, 'future', 0)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, args := range [][]string{{"migrate", "--data", dir, "--dry-run"}, {"migrate", "--data", dir}} {
		_, errOut, code := runCLI(t, "", nil, args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], "version 999 is newer than this berth knows") {
			t.Fatalf("berth %v on a newer schema: exit %d: %q; want exit 2 and one line", args, code, errOut)
		}
	}
}
