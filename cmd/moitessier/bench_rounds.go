package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
)

// Spread is one figure over the rounds of a --rounds run: its median (of
// an even count, the mean of the middle two), its range, and the number of
// rounds that reported it (fewer than the workload's when a baseline it is
// a ratio to failed in a round).
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// RoundsSummary is what a --rounds run prints, after its last round, for
// one workload or baseline: the rounds it ran in (a floor that failed in a
// round has fewer) and, by its JSON name, each figure it reported in any
// of them, over the rounds that reported it (a figure 0 in every round is
// left out, but for idle-10k's queries_per_s).
type RoundsSummary struct {
	Workload  string            `json:"workload"`
	Store     string            `json:"store"`
	Transport string            `json:"transport,omitempty"`
	HubProcs  int               `json:"hub_procs,omitempty"`
	Rounds    int               `json:"rounds"`
	Summary   map[string]Spread `json:"summary"`
}

// unspread are the figures a workload sets rather than measures, which a
// summary leaves out.
var unspread = []string{"listeners", "messages", "deliveries", "publishers", "hub_procs", "round"}

// spreads summarizes results, the results of every round in turn, per
// workload, in the order the workloads first ran.
func spreads(results []BenchResult) ([]RoundsSummary, error) {
	var out []RoundsSummary
	values := map[string]map[string][]float64{}
	for _, r := range results {
		i := slices.IndexFunc(out, func(s RoundsSummary) bool { return s.Workload == r.Workload })
		if i < 0 {
			out = append(out, RoundsSummary{Workload: r.Workload, Store: r.Store, Transport: r.Transport, HubProcs: r.HubProcs})
			values[r.Workload] = map[string][]float64{}
			i = len(out) - 1
		}
		out[i].Rounds++
		figs, err := figures(r)
		if err != nil {
			return nil, fmt.Errorf("%s, round %d: %w", r.Workload, r.Round, err)
		}
		for name, v := range figs {
			values[r.Workload][name] = append(values[r.Workload][name], v)
		}
	}
	for i := range out {
		out[i].Summary = map[string]Spread{}
		for name, vs := range values[out[i].Workload] {
			// A figure that is 0 in every round is one the workload does
			// not report (the baselines' dispatches and latencies), unless
			// it is one whose 0 is news.
			if name != "queries_per_s" && !slices.ContainsFunc(vs, func(v float64) bool { return v != 0 }) {
				continue
			}
			out[i].Summary[name] = spreadOf(vs)
		}
	}
	return out, nil
}

// figures returns r's numeric figures by their JSON names, those left out
// of its JSON (zero) and unspread excepted.
func figures(r BenchResult) (map[string]float64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for name, v := range m {
		if f, ok := v.(float64); ok && !slices.Contains(unspread, name) {
			out[name] = f
		}
	}
	return out, nil
}

// spreadOf returns the median and range of vs, which is not empty.
func spreadOf(vs []float64) Spread {
	s := slices.Clone(vs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Median: med, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// spreadOrder is the order figures are printed in by printSpreads; the
// others follow in the order of their names.
var spreadOrder = []string{
	"msgs_per_s", "dispatches_per_s", "p50_ms", "p99_ms",
	"baseline_ratio", "floor_ratio", "http_floor_ratio", "fanout_floor_ratio", "scopes_floor_ratio",
	"cpu_us_per_delivery", "hub_cpu_us_per_delivery", "dispatch_p50_ms", "dispatch_p90_ms", "dispatch_p99_ms",
	"create_s", "create_concurrent_s",
}

// printSpreads prints sums, as JSON objects with --json, else as a line
// each: every figure's median and, in brackets, its range.
func (c *benchConfig) printSpreads(w io.Writer, sums []RoundsSummary) error {
	if c.asJSON {
		enc := json.NewEncoder(w)
		for _, s := range sums {
			if err := enc.Encode(s); err != nil {
				return err
			}
		}
		return nil
	}
	fmt.Fprintf(w, "median of %d rounds (min–max)\n", c.rounds)
	for _, s := range sums {
		names := make([]string, 0, len(s.Summary))
		for name := range s.Summary {
			names = append(names, name)
		}
		sort.Slice(names, func(i, j int) bool {
			a, b := slices.Index(spreadOrder, names[i]), slices.Index(spreadOrder, names[j])
			switch {
			case a >= 0 && b >= 0:
				return a < b
			case a >= 0 || b >= 0:
				return a >= 0
			}
			return names[i] < names[j]
		})
		parts := make([]string, len(names))
		for i, name := range names {
			sp := s.Summary[name]
			span := figure(sp.Min) + "–" + figure(sp.Max)
			if sp.N < s.Rounds {
				span += fmt.Sprintf(", %d rounds", sp.N)
			}
			parts[i] = fmt.Sprintf("%s %s (%s)", name, figure(sp.Median), span)
		}
		label := s.Workload
		if s.Transport != "" {
			label += " over " + s.Transport
		}
		if s.HubProcs > 0 {
			label += fmt.Sprintf(" (GOMAXPROCS=%d)", s.HubProcs)
		}
		fmt.Fprintf(w, "%-16s %-9s %d rounds: %s\n", label, s.Store, s.Rounds, strings.Join(parts, ", "))
	}
	return nil
}

// figure formats v with three significant digits, or as a whole number
// when that would print a large v with an exponent (from 999.5 up).
func figure(v float64) string {
	f := fmt.Sprintf("%.3g", v)
	if strings.ContainsRune(f, 'e') && math.Abs(v) >= 1 {
		return fmt.Sprintf("%.0f", v)
	}
	return f
}
