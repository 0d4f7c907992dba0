package migrate

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoadOrdersByNumber(t *testing.T) {
	fsys := fstest.MapFS{
		"m/010_later.up.sql":  {Data: []byte("B")},
		"m/002_second.up.sql": {Data: []byte("A")},
		"m/README":            {Data: []byte("not a migration")},
	}
	ms, err := Load(fsys, "m")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Version != 2 || ms[0].Name != "second" || ms[0].SQL != "A" || ms[1].Version != 10 || Latest(ms) != 10 {
		t.Fatalf("Load: %+v", ms)
	}
}

func TestLoadRefusesBadSets(t *testing.T) {
	for _, c := range []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{"unnumbered", fstest.MapFS{"m/init.up.sql": {}}, "not named NNN_name.up.sql"},
		{"zero", fstest.MapFS{"m/000_x.up.sql": {}}, "not named NNN_name.up.sql"},
		{"twice", fstest.MapFS{"m/001_a.up.sql": {}, "m/1_b.up.sql": {}}, "two migrations numbered 001"},
		{"none", fstest.MapFS{}, "no migrations"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Load(c.fsys, "m"); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load: %v; want an error saying %q", err, c.want)
			}
		})
	}
}
