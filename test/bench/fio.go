package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// target is an NBD export to measure.
type target struct {
	name string
	uri  string
}

// job is one fio workload.
type job struct {
	name    string
	rw      string
	bs      string
	iodepth int
	timed   bool
}

var fillJob = job{name: "fill", rw: "write", bs: "1m", iodepth: 8}

var jobs = []job{
	{name: "4 KiB random read QD1", rw: "randread", bs: "4k", iodepth: 1, timed: true},
	{name: "4 KiB random read QD32", rw: "randread", bs: "4k", iodepth: 32, timed: true},
	{name: "4 KiB random write QD1", rw: "randwrite", bs: "4k", iodepth: 1, timed: true},
	{name: "4 KiB random write QD32", rw: "randwrite", bs: "4k", iodepth: 32, timed: true},
	{name: "1 MiB sequential read", rw: "read", bs: "1m", iodepth: 8, timed: true},
	{name: "1 MiB sequential write", rw: "write", bs: "1m", iodepth: 8, timed: true},
}

// result is what one fio run measured.
type result struct {
	job    job
	target target
	iops   float64
	mibps  float64
	p99    time.Duration
}

// fio runs one job. It first writes back every dirty page on the machine,
// so that no job pays for the previous one's writes: three replicas on one
// disk write three times the data, and a backlog left by an earlier job
// would be charged to whichever job runs next.
func fio(cfg config, t target, j job) (result, error) {
	syscall.Sync()
	args := []string{
		"--name=" + j.rw, "--ioengine=nbd", "--uri=" + t.uri,
		"--rw=" + j.rw, "--bs=" + j.bs, "--iodepth=" + strconv.Itoa(j.iodepth),
		"--size=" + strconv.FormatInt(cfg.size, 10), "--output-format=json",
		"--randrepeat=0", "--norandommap",
	}
	if j.timed {
		args = append(args, "--time_based",
			"--runtime="+strconv.Itoa(int(cfg.runtime.Seconds())),
			"--ramp_time="+strconv.Itoa(int(cfg.ramp.Seconds())))
	}
	out, err := exec.Command("fio", args...).Output()
	if err != nil {
		return result{}, fmt.Errorf("fio %s on %s: %w: %s", j.name, t.name, err, stderrOf(err))
	}
	return parseFio(out, j, t)
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

type fioOutput struct {
	Jobs []struct {
		Read  fioStats `json:"read"`
		Write fioStats `json:"write"`
	} `json:"jobs"`
}

type fioStats struct {
	IOPS    float64 `json:"iops"`
	BWBytes float64 `json:"bw_bytes"`
	Clat    struct {
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

func parseFio(out []byte, j job, t target) (result, error) {
	var o fioOutput
	// fio may print notes before the JSON document.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &o); err != nil || len(o.Jobs) == 0 {
		return result{}, fmt.Errorf("fio %s on %s: unreadable output: %v", j.name, t.name, err)
	}
	s := o.Jobs[0].Read
	if j.rw == "write" || j.rw == "randwrite" {
		s = o.Jobs[0].Write
	}
	return result{
		job: j, target: t, iops: s.IOPS, mibps: s.BWBytes / (1 << 20),
		p99: time.Duration(s.Clat.Percentile["99.000000"]),
	}, nil
}
