// Package web is berth's dashboard: server-rendered pages from embedded
// templates and assets, read through the lease engine. Nothing is loaded
// from outside the binary.
package web

import (
	"context"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
)

//go:embed templates/*.html
var templates embed.FS

//go:embed static
var static embed.FS

// Server renders the dashboard's pages.
type Server struct {
	engine *lease.Engine
	tmpl   *template.Template
}

// New returns the dashboard of eng.
func New(eng *lease.Engine) *Server {
	t := template.Must(template.New("").Funcs(template.FuncMap{
		"percent": func(part, whole int) int {
			if whole == 0 {
				return 0
			}
			return part * 100 / whole
		},
		"count": func(m map[berth.State]int, s string) int { return m[berth.State(s)] },
		"health": func(m map[berth.HealthStatus]int, s string) int {
			return m[berth.HealthStatus(s)]
		},
	}).ParseFS(templates, "templates/*.html"))
	return &Server{engine: eng, tmpl: t}
}

// Static serves the embedded assets (under /static/).
func (s *Server) Static() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	return http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
}

// overview is what the overview page shows.
type overview struct {
	Pools []*berth.Pool
	// Signed is who is looking; empty without authentication.
	Signed string
}

// Overview writes the pools overview: each pool's resources by state and
// health, waiters, and how much of it is leased.
func (s *Server) Overview(ctx context.Context, w http.ResponseWriter, who berth.Principal) error {
	pools, err := s.engine.Pools(ctx)
	if err != nil {
		return err
	}
	sort.Slice(pools, func(i, j int) bool { return pools[i].Type < pools[j].Type })
	return s.render(w, http.StatusOK, "overview.html", overview{Pools: pools, Signed: who.Name})
}

// SignIn writes the page a browser without credentials gets: nothing of
// the store, and a 200, which Boskos' health checks of GET / expect.
func (s *Server) SignIn(w http.ResponseWriter) error {
	return s.render(w, http.StatusOK, "signin.html", nil)
}

func (s *Server) render(w http.ResponseWriter, status int, name string, data any) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// The pages load nothing from elsewhere, and nothing may frame them.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
	w.WriteHeader(status)
	return s.tmpl.ExecuteTemplate(w, name, data)
}

// maxRows bounds the resource table: a filter narrows it.
const maxRows = 1000

// resourceTable is what the resource table shows.
type resourceTable struct {
	Filter    url.Values
	Resources []*berth.Resource
	More      bool
	Signed    string
}

// Resources writes the resource table, narrowed by the query's type,
// state and health (in the store) and owner and text (a substring of the
// name, owner, reason or a label).
func (s *Server) Resources(ctx context.Context, w http.ResponseWriter, q url.Values, who berth.Principal) error {
	rs, err := s.engine.Resources(ctx, &lease.ResourceListParams{Type: q.Get("type"), State: berth.State(q.Get("state")),
		Health: berth.HealthStatus(q.Get("health"))})
	if err != nil {
		return err
	}
	owner, text := q.Get("owner"), strings.ToLower(q.Get("q"))
	out := rs[:0]
	for _, r := range rs {
		if owner != "" && r.Owner != owner || text != "" && !matches(r, text) {
			continue
		}
		out = append(out, r)
	}
	t := resourceTable{Filter: q, Resources: out, Signed: who.Name}
	if len(out) > maxRows {
		t.Resources, t.More = out[:maxRows], true
	}
	return s.render(w, http.StatusOK, "resources.html", t)
}

func matches(r *berth.Resource, text string) bool {
	for _, f := range []string{r.Name, r.Owner, r.StateReason, r.Health.Reason, r.Health.Message} {
		if strings.Contains(strings.ToLower(f), text) {
			return true
		}
	}
	for k, v := range r.Labels {
		if strings.Contains(strings.ToLower(k+"="+v), text) {
			return true
		}
	}
	return false
}
