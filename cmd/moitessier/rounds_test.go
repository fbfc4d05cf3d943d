package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
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
		if got := s.Summary["msgs_per_s"]; got != (Spread{Median: rs[1], Min: rs[0], Max: rs[2], N: 3}) {
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
		s.Summary["baseline_ratio"] != (Spread{Median: (ratios[0] + ratios[1]) / 2, Min: min(ratios[0], ratios[1]), Max: max(ratios[0], ratios[1]), N: 2}) {
		t.Fatalf("summary over ratios %v: %v %s", ratios, err, lines[8])
	}
}

// TestRoundsOwnBaselines runs two rounds with a stand-in for the
// workloads: pg-append-floor fails in the second, whose fanout-1 then has
// no floor ratio rather than one to the first round's floor, and the
// summary says floor_ratio came from one round of two.
func TestRoundsOwnBaselines(t *testing.T) {
	round := 0
	c := &benchConfig{rounds: 2, asJSON: true, stderr: io.Discard, storeName: "postgres"}
	c.runner = func(ctx context.Context, name string) (BenchResult, error) {
		switch name {
		case "pg-insert-notify":
			round++
			return BenchResult{Workload: name, MsgsPerS: float64(1000 * round)}, nil
		case "pg-append-floor":
			if round == 2 {
				return BenchResult{}, errors.New("no floor this round")
			}
			return BenchResult{Workload: name, MsgsPerS: 800}, nil
		}
		res := BenchResult{Workload: name, DispatchesPerS: 400}
		c.ratios(&res)
		return res, nil
	}
	var out strings.Builder
	names := []string{"pg-insert-notify", "pg-append-floor", "fanout-1"}
	var all []BenchResult
	for r := 1; r <= 2; r++ {
		res, err := c.runRound(context.Background(), names, r, &out)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, res...)
	}
	if len(all) != 5 {
		t.Fatalf("%d results, want 5 (the failed floor left out): %+v", len(all), all)
	}
	first, second := all[2], all[4]
	if first.FloorRatio != 0.5 || first.BaselineRatio != 0.4 || second.FloorRatio != 0 || second.FloorPerS != 0 || second.BaselineRatio != 0.2 || second.Round != 2 {
		t.Fatalf("round 1: %+v\nround 2: %+v", first, second)
	}
	sums, err := spreads(all)
	if err != nil {
		t.Fatal(err)
	}
	fan := sums[2]
	if fan.Workload != "fanout-1" || fan.Rounds != 2 || fan.Summary["floor_ratio"] != (Spread{Median: 0.5, Min: 0.5, Max: 0.5, N: 1}) ||
		fan.Summary["baseline_ratio"] != (Spread{Median: 0.30000000000000004, Min: 0.2, Max: 0.4, N: 2}) {
		t.Fatalf("summary %+v", fan)
	}
	var text strings.Builder
	c.asJSON = false
	if err := c.printSpreads(&text, sums); err != nil || !strings.Contains(text.String(), "floor_ratio 0.5 (0.5–0.5, 1 rounds)") {
		t.Fatalf("%v\n%s", err, text.String())
	}
}

func TestSpreadOf(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want Spread
	}{
		{[]float64{3}, Spread{3, 3, 3, 1}},
		{[]float64{4, 1}, Spread{2.5, 1, 4, 2}},
		{[]float64{5, 1, 3}, Spread{3, 1, 5, 3}},
		{[]float64{8, 2, 6, 4}, Spread{5, 2, 8, 4}},
	} {
		if got := spreadOf(c.in); got != c.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
	for v, want := range map[float64]string{999.7: "1000", 999.4: "999", 1234.5: "1234", 0.4567: "0.457", 0: "0", 12_345_678: "12345678", -2500: "-2500"} {
		if got := figure(v); got != want {
			t.Errorf("figure(%v) = %q, want %q", v, got, want)
		}
	}
}
