// Command summarize reads `go test -bench` output (several runs, any
// order) from stdin and prints, per benchmark and parallelism, the median
// ns/op of each side, the median context switches and CPU time per
// operation, the number of runs, and how dialpool's speed compares (competitor ns/op ÷
// dialpool ns/op: above 1.00 means dialpool is faster), as a Markdown table.
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var (
	head   = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)
	metric = regexp.MustCompile(`([\d.]+) (\S+)`)
)

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func main() {
	type key struct{ group, side, unit string }
	samples := map[key][]float64{}
	var groups []string
	seen := map[string]bool{}
	sides := map[string][]string{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		m := head.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		name := m[1] // e.g. PostgresSelect1/p=4/dialpool
		i := strings.LastIndex(name, "/")
		if i < 0 {
			continue
		}
		group, side := name[:i], name[i+1:]
		if !seen[group] {
			seen[group] = true
			groups = append(groups, group)
		}
		if len(samples[key{group, side, "ns/op"}]) == 0 {
			sides[group] = append(sides[group], side)
		}
		for _, mm := range metric.FindAllStringSubmatch(m[2], -1) {
			v, err := strconv.ParseFloat(mm[1], 64)
			if err == nil {
				samples[key{group, side, mm[2]}] = append(samples[key{group, side, mm[2]}], v)
			}
		}
	}
	fmt.Println("| benchmark | side | runs | median µs/op | context switches/op | client CPU µs/op | dialpool's speed relative to it |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|")
	for _, g := range groups {
		dp := samples[key{g, "dialpool", "ns/op"}]
		for _, s := range sides[g] {
			v := samples[key{g, s, "ns/op"}]
			rel := ""
			if len(dp) > 0 && s != "dialpool" {
				rel = fmt.Sprintf("%.2f×", median(v)/median(dp))
			}
			cs, cpu := "–", "–"
			if c := samples[key{g, s, "cs/op"}]; len(c) > 0 {
				cs = fmt.Sprintf("%.2f", median(c))
			}
			if c := samples[key{g, s, "cpu-µs/op"}]; len(c) > 0 {
				cpu = fmt.Sprintf("%.1f", median(c))
			}
			fmt.Printf("| %s | %s | %d | %.1f | %s | %s | %s |\n", g, s, len(v), median(v)/1000, cs, cpu, rel)
		}
	}
}
