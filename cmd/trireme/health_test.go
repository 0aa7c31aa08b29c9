package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
)

func TestHealthAnswersWhileTheProcessRuns(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	serveHealth(ctx, lis)
	url := "http://" + lis.Addr().String()
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("GET /healthz: %d %q", resp.StatusCode, body)
	}
	if resp, err := http.Get(url + "/other"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /other: %v, %v; want 404", resp, err)
	}
	cancel()
	// Once ctx ends the server stops answering.
	for i := 0; ; i++ {
		if _, err := http.Get(url + "/healthz"); err != nil {
			break
		}
		if i == 100 {
			t.Fatal("health server still answers after its context ended")
		}
	}
}
