// Package migrate reads a store's embedded schema migrations: files named
// NNN_name.up.sql, applied in order of NNN, each exactly once. Each store
// applies them in its own dialect and records them in berth_migrations.
package migrate

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migration is one schema step.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Load returns the migrations in dir of fsys, oldest first.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	files, err := fs.Glob(fsys, path.Join(dir, "*.up.sql"))
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, f := range files {
		base := path.Base(f)
		num, name, ok := strings.Cut(strings.TrimSuffix(base, ".up.sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %s is not named NNN_name.up.sql", base)
		}
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations in %s", dir)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("two migrations numbered %03d", ms[i].Version)
		}
	}
	return ms, nil
}

// Latest is the newest version in ms, or 0.
func Latest(ms []Migration) int {
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// SchemaTooNewError says the database was written by a newer berth.
type SchemaTooNewError struct {
	Have, Know int
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("database schema version %d is newer than this berth knows (%d): run a berth release at least as new as the one that wrote it", e.Have, e.Know)
}

// Pending returns the migrations of ms that a database at version have
// still needs, oldest first; a SchemaTooNewError if have is newer than
// every one of ms.
func Pending(ms []Migration, have int) ([]Migration, error) {
	if know := Latest(ms); have > know {
		return nil, &SchemaTooNewError{Have: have, Know: know}
	}
	var out []Migration
	for _, m := range ms {
		if m.Version > have {
			out = append(out, m)
		}
	}
	return out, nil
}
