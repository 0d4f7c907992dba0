package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/berth-ci/berth"
)

// Pools lists the configured pools with their counts.
func (c *Client) Pools(ctx context.Context) ([]*berth.Pool, error) {
	var out struct {
		Pools []*berth.Pool `json:"pools"`
	}
	if err := c.call(ctx, &request{method: http.MethodGet, path: "/v1/pools"}, &out); err != nil {
		return nil, err
	}
	return out.Pools, nil
}

// Pool returns the pool of type typ; code berth.EUnknownType if there is
// none.
func (c *Client) Pool(ctx context.Context, typ string) (*berth.Pool, error) {
	r := &request{method: http.MethodGet, path: "/v1/pools/" + seg(typ)}
	var out struct {
		Pool *berth.Pool `json:"pool"`
	}
	if err := c.call(ctx, r, &out); err != nil {
		return nil, err
	}
	if out.Pool == nil {
		return nil, fmt.Errorf("%s: the answer has no pool", r)
	}
	return out.Pool, nil
}

// ResourceFilter selects resources. Zero fields do not filter.
type ResourceFilter struct {
	Type   string
	State  berth.State
	Health berth.HealthStatus
	// Limit caps how many are returned; 0 means all.
	Limit int
}

// Resources lists resources.
func (c *Client) Resources(ctx context.Context, f ResourceFilter) ([]*berth.Resource, error) {
	q := url.Values{}
	if f.Type != "" {
		q.Set("type", f.Type)
	}
	if f.State != "" {
		q.Set("state", string(f.State))
	}
	if f.Health != "" {
		q.Set("health", string(f.Health))
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out struct {
		Resources []*berth.Resource `json:"resources"`
	}
	if err := c.call(ctx, &request{method: http.MethodGet, path: "/v1/resources", query: q}, &out); err != nil {
		return nil, err
	}
	return out.Resources, nil
}

// Resource returns resource name.
func (c *Client) Resource(ctx context.Context, name string) (*berth.Resource, error) {
	r := &request{method: http.MethodGet, path: "/v1/resources/" + seg(name)}
	var out struct {
		Resource *berth.Resource `json:"resource"`
	}
	if err := c.call(ctx, r, &out); err != nil {
		return nil, err
	}
	if out.Resource == nil {
		return nil, fmt.Errorf("%s: the answer has no resource", r)
	}
	return out.Resource, nil
}

// EventFilter selects events. Zero fields do not filter.
type EventFilter struct {
	// Resource and Type keep the events of one resource or one pool type.
	Resource, Type string
	// Kind keeps events of one kind (berth.EventJanitor: the cleanings,
	// with the janitors' output); Actor those of one actor.
	Kind  berth.EventKind
	Actor string
	// Since keeps events at or after a time; After those with a greater ID
	// (the way to page, or to follow the feed).
	Since time.Time
	After int64
	// Limit caps how many are returned; the server's default is 100.
	Limit int
	// Wait makes a long poll: with nothing to return yet, the server
	// answers as soon as a matching event is written, or after Wait
	// (at most a minute) with none.
	Wait time.Duration
	// Desc returns the newest first.
	Desc bool
}

// Events lists events in ID order (newest first with Desc).
func (c *Client) Events(ctx context.Context, f EventFilter) ([]*berth.Event, error) {
	if f.Wait < 0 {
		return nil, fmt.Errorf("GET /v1/events: %w", berth.FieldErrorf("wait", "must not be negative, got %s", f.Wait))
	}
	q := url.Values{}
	if f.Resource != "" {
		q.Set("resource", f.Resource)
	}
	if f.Type != "" {
		q.Set("type", f.Type)
	}
	if f.Kind != "" {
		q.Set("kind", string(f.Kind))
	}
	if f.Actor != "" {
		q.Set("actor", f.Actor)
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if f.After != 0 {
		q.Set("after", strconv.FormatInt(f.After, 10))
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Wait > 0 {
		q.Set("wait", f.Wait.String())
	}
	if f.Desc {
		q.Set("order", "desc")
	}
	r := &request{method: http.MethodGet, path: "/v1/events", query: q,
		prepare: func() (any, time.Duration) { return nil, f.Wait }}
	var out struct {
		Events []*berth.Event `json:"events"`
	}
	if err := c.call(ctx, r, &out); err != nil {
		return nil, err
	}
	return out.Events, nil
}

// Version describes the server's build, as GET /version reports it.
type Version struct {
	Version       string `json:"version"`
	Commit        string `json:"commit"`
	BuildTime     string `json:"buildTime"`
	GoVersion     string `json:"goVersion"`
	SchemaVersion int    `json:"schemaVersion"`
}

// Version returns the server's build information, to verify a rollout.
func (c *Client) Version(ctx context.Context) (*Version, error) {
	var v Version
	if err := c.call(ctx, &request{method: http.MethodGet, path: "/version"}, &v); err != nil {
		return nil, err
	}
	return &v, nil
}
