package cli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
	"github.com/berth-ci/berth/internal/buildinfo"
	"github.com/berth-ci/berth/internal/store"
)

func (e *env) poolsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pools",
		Short: "List pools with their resources counted by state and by health",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			ps, err := c.Pools(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(ps)
			}
			t := newTable(e.stdout)
			t.row("TYPE", "TOTAL", "FREE", "LEASABLE", "BUSY", "DIRTY", "CLEANING", "QUARANTINED", "DRAINING", "WAITING",
				"PROBE", "CONNECTED", "DISCONNECTED", "UNKNOWN", "LEASE TTL", "JANITOR", "DYNAMIC")
			for _, p := range ps {
				draining := strconv.Itoa(p.DrainingResources)
				if p.Draining {
					draining = "pool"
				}
				dynamic := "-"
				if d := p.Dynamic; d != nil {
					dynamic = fmt.Sprintf("%d-%d", d.MinFree, d.MaxTotal)
				}
				t.row(p.Type, strconv.Itoa(p.Total),
					strconv.Itoa(p.States[berth.StateFree]), strconv.Itoa(p.Leasable), strconv.Itoa(p.States[berth.StateBusy]),
					strconv.Itoa(p.States[berth.StateDirty]), strconv.Itoa(p.States[berth.StateCleaning]),
					strconv.Itoa(p.States[berth.StateQuarantined]), draining, strconv.Itoa(p.Waiters),
					dash(p.Probe), strconv.Itoa(p.Health[berth.HealthConnected]), strconv.Itoa(p.Health[berth.HealthDisconnected]),
					strconv.Itoa(p.Health[berth.HealthUnknown]), p.LeaseTTL.String(), p.Janitor, dynamic)
			}
			return t.flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of pools")
	return cmd
}

func (e *env) resourcesCommand() *cobra.Command {
	var (
		typ, state, health string
		asJSON             bool
	)
	cmd := &cobra.Command{
		Use:   "resources [--type T] [--state S] [--health H]",
		Short: "List resources",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			rs, err := c.Resources(cmd.Context(), client.ResourceFilter{Type: typ, State: berth.State(state), Health: berth.HealthStatus(health)})
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(rs)
			}
			now := time.Now()
			t := newTable(e.stdout)
			t.row("NAME", "TYPE", "STATE", "OWNER", "HEALTH", "SINCE", "REASON")
			for _, r := range rs {
				health := string(r.Health.Status)
				if r.Health.Reason != "" {
					health += " (" + r.Health.Reason + ")"
				}
				reason := r.StateReason
				if r.Retiring {
					reason = strings.TrimSpace("retiring " + reason)
				}
				if r.Draining {
					reason = strings.TrimSpace("draining " + reason)
				}
				if r.State == berth.StateDirty && r.CleanAttempts > 0 {
					failed := "1 failed cleaning"
					if r.CleanAttempts > 1 {
						failed = fmt.Sprintf("%d failed cleanings", r.CleanAttempts)
					}
					reason = strings.TrimSpace(failed + " " + reason)
				}
				// The whole reason is in --json; a table row keeps its start.
				if len(reason) > maxReasonCell {
					reason = store.Head(reason, maxReasonCell)
				}
				t.row(r.Name, r.Type, string(r.State), dash(r.Owner), health, ago(now, r.StateChangedAt), dash(reason))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&typ, "type", "", "only resources of this type")
	cmd.Flags().StringVar(&state, "state", "", "only resources in this state (free, busy, dirty, cleaning, quarantined, …)")
	cmd.Flags().StringVar(&health, "health", "", "only resources of this health (Connected, Disconnected, Unknown)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of resources")
	cmd.AddCommand(e.resourcesAddCommand(), e.resourcesRetireCommand())
	return cmd
}

// maxReasonCell bounds a reason in the resources table.
const maxReasonCell = 160

func (e *env) eventsCommand() *cobra.Command {
	var (
		f      client.EventFilter
		since  string
		follow bool
		asJSON bool
		output bool
		kind   string
	)
	cmd := &cobra.Command{
		Use:   "events [--resource R] [--type T] [--kind K] [--actor A] [--since 1h|TIME] [--output] [--follow]",
		Short: "Show the audit trail of transitions",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.Kind = berth.EventKind(kind)
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				f.Since = t
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !follow && !cmd.Flags().Changed("limit") && f.Since.IsZero() {
				// Without a window, show the latest events, oldest first.
				f.Desc = true
				evs, err := c.Events(ctx, f)
				if err != nil {
					return err
				}
				for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
					evs[i], evs[j] = evs[j], evs[i]
				}
				return e.printEvents(evs, asJSON, true, output)
			}
			header := true
			for {
				evs, err := c.Events(ctx, f)
				if err != nil {
					if follow && ctx.Err() != nil {
						return nil
					}
					return err
				}
				if err := e.printEvents(evs, asJSON, header, output); err != nil {
					return err
				}
				header = false
				if len(evs) > 0 {
					f.After = evs[len(evs)-1].ID
				}
				if !follow {
					return nil
				}
				f.Wait = 30 * time.Second
				f.Since = time.Time{}
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.Resource, "resource", "", "only events of this resource")
	fl.StringVar(&f.Type, "type", "", "only events of this type")
	fl.StringVar(&kind, "kind", "", "only events of this kind (lease, state, health, janitor, provision, admin, config)")
	fl.StringVar(&f.Actor, "actor", "", "only events of this actor")
	fl.BoolVar(&output, "output", false, "also print what janitors and provisioners printed, under their events")
	fl.StringVar(&since, "since", "", "only events since a duration ago (1h) or an RFC 3339 time")
	fl.IntVar(&f.Limit, "limit", 50, "at most this many events per page")
	fl.BoolVarP(&follow, "follow", "f", false, "keep printing new events as they happen")
	fl.BoolVar(&asJSON, "json", false, "print one JSON object per event per line")
	return cmd
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, usageErrorf("--since must not be negative")
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, usageErrorf("--since %q: want a duration (1h) or an RFC 3339 time", s)
	}
	return t, nil
}

func (e *env) printEvents(evs []*berth.Event, asJSON, header, output bool) error {
	if asJSON {
		for _, ev := range evs {
			if err := e.printJSONLine(ev); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(e.stdout)
	if header {
		t.row("TIME", "RESOURCE", "KIND", "TRANSITION", "REASON", "ACTOR", "FROM", "MESSAGE")
	}
	for _, ev := range evs {
		tr := "-"
		if ev.From != "" || ev.To != "" {
			tr = dash(ev.From) + " → " + dash(ev.To)
		}
		t.row(ev.Time.Local().Format("2006-01-02 15:04:05.000"), dash(ev.Resource), string(ev.Kind), tr, dash(ev.Reason), dash(ev.Actor), dash(ev.Remote), dash(ev.Message))
		if output && ev.Output != "" {
			// Below its event, out of the table's columns.
			if err := t.flush(); err != nil {
				return err
			}
			for _, line := range strings.Split(ev.Output, "\n") {
				fmt.Fprintln(e.stdout, "    | "+line)
			}
		}
	}
	return t.flush()
}

// printJSONLine writes v as one line of compact JSON.
func (e *env) printJSONLine(v any) error {
	return json.NewEncoder(e.stdout).Encode(v)
}

func (e *env) versionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print berth's version, commit and Go version",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, args []string) error {
			i := buildinfo.Get()
			if asJSON {
				return e.printJSON(i)
			}
			fmt.Fprintf(e.stdout, "berth %s\ncommit: %s\ngo: %s\n", i.Version, i.Commit, i.GoVersion)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
