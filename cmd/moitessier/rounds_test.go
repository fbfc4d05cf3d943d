package main

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestBenchRounds runs two workloads three rounds on memory: each round's
// results come in turn, numbered, and after the last a summary of each
// workload whose medians and ranges are those of its rounds' figures.
func TestBenchRounds(t *testing.T) {
	out, errOut, err := runCmd(ctxT(t), t, "", "bench", "--store", "memory", "--messages", "40", "--rounds", "3", "--json", "fanout-1", "fanout-100")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 8 {
		t.Fatalf("want three rounds of two results and two summaries:\n%s", out)
	}
	rates := map[string][]float64{}
	for i, line := range lines[:6] {
		var r BenchResult
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Round != i/2+1 || r.Workload != []string{"fanout-1", "fanout-100"}[i%2] || r.MsgsPerS <= 0 {
			t.Fatalf("result %d: %v %s", i, err, line)
		}
		rates[r.Workload] = append(rates[r.Workload], r.MsgsPerS)
	}
	for i, line := range lines[6:] {
		var s RoundsSummary
		if err := json.Unmarshal([]byte(line), &s); err != nil || s.Workload != []string{"fanout-1", "fanout-100"}[i] || s.Store != "memory" || s.Rounds != 3 {
			t.Fatalf("summary %d: %v %s", i, err, line)
		}
		rs := slices.Sorted(slices.Values(rates[s.Workload]))
		if got := s.Summary["msgs_per_s"]; got != (Spread{Median: rs[1], Min: rs[0], Max: rs[2]}) {
			t.Fatalf("msgs_per_s over %v: %+v", rs, got)
		}
		for _, name := range unspread {
			if _, ok := s.Summary[name]; ok {
				t.Fatalf("summary of %s, a set figure: %s", name, line)
			}
		}
		if _, ok := s.Summary["p99_ms"]; !ok {
			t.Fatalf("no p99_ms: %s", line)
		}
	}

	out, errOut, err = runCmd(ctxT(t), t, "", "bench", "--store", "memory", "--messages", "20", "--rounds", "2", "fanout-1")
	if err != nil || strings.Count(out, "round ") != 2 || !strings.Contains(out, "round 2 of 2") || !strings.Contains(out, "median of 2 rounds (min–max)") ||
		!strings.Contains(out, "fanout-1         memory    2 rounds: msgs_per_s ") {
		t.Fatalf("table: %v\n%s\n%s", err, out, errOut)
	}
	if _, errOut, err := runCmd(ctxT(t), t, "", "bench", "--rounds", "0", "fanout-1"); !errors.Is(err, errUsage) || !strings.Contains(errOut, "--rounds must be at least 1") {
		t.Fatalf("--rounds 0: %v %s", err, errOut)
	}
}

// TestBenchRoundsBaselines runs fanout-1 two rounds on Postgres, when a
// server is reachable: each round measures its own baselines before the
// workload, whose ratios are to that round's, not the first's.
func TestBenchRoundsBaselines(t *testing.T) {
	dsn := postgresDSN(t)
	out, errOut, err := runCmd(ctxT(t), t, "", "bench", "--store", dsn, "--baseline-time", "500ms", "--messages", "30", "--rounds", "2", "--json", "fanout-1")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 9 {
		t.Fatalf("want two rounds of two baselines and a result, and three summaries:\n%s", out)
	}
	var ratios []float64
	for round := 1; round <= 2; round++ {
		var base, floor, r BenchResult
		for i, p := range []*BenchResult{&base, &floor, &r} {
			line := lines[(round-1)*3+i]
			if err := json.Unmarshal([]byte(line), p); err != nil || p.Round != round || p.Workload != []string{"pg-insert-notify", "pg-append-floor", "fanout-1"}[i] {
				t.Fatalf("round %d, line %d: %v %s", round, i, err, line)
			}
		}
		if r.BaselinePerS != base.MsgsPerS || r.BaselineRatio != r.DispatchesPerS/base.MsgsPerS || r.FloorPerS != floor.MsgsPerS {
			t.Fatalf("round %d: fanout-1 is not measured against its round's baselines: %+v, %v, %v", round, r, base.MsgsPerS, floor.MsgsPerS)
		}
		ratios = append(ratios, r.BaselineRatio)
	}
	var base RoundsSummary
	if err := json.Unmarshal([]byte(lines[6]), &base); err != nil || base.Workload != "pg-insert-notify" || base.Rounds != 2 || base.Summary["msgs_per_s"].Min <= 0 {
		t.Fatalf("baseline's summary: %v %s", err, lines[6])
	}
	if _, ok := base.Summary["p99_ms"]; ok {
		t.Fatalf("a baseline's summary has the latency it does not measure: %s", lines[6])
	}
	var s RoundsSummary
	if err := json.Unmarshal([]byte(lines[8]), &s); err != nil || s.Workload != "fanout-1" || s.Rounds != 2 ||
		s.Summary["baseline_ratio"] != (Spread{Median: (ratios[0] + ratios[1]) / 2, Min: min(ratios[0], ratios[1]), Max: max(ratios[0], ratios[1])}) {
		t.Fatalf("summary over ratios %v: %v %s", ratios, err, lines[8])
	}
}
