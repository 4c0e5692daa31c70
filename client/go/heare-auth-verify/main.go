// heare-auth-verify: verifies API keys with heare-authd from Go, through the reference
// Varlink package (github.com/varlink/go/varlink). It reads one key a line from standard
// input, verifies each on one connection and prints "CODE KEY_ID (NAME)" a line. Exit
// status 0 if every key was valid, 1 if one was not, 2 if the daemon could not be asked.
//
//	heare-auth-verify [-socket PATH] [-scope SCOPE] [-timeout 1s] [-repeat N] < keys
//
// The socket defaults to $HEARE_AUTH_VERIFY_SOCKET, else /run/heare-auth/verify.sock.
// -repeat N verifies each key N times and prints the p50 and p99 latency of a call in
// microseconds on standard error (bench/clients uses it).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/varlink/go/varlink"
)

// What io.heare.Auth.Verify takes; nil pointers are left out.
type verifyRequest struct {
	Key       string  `json:"key"`
	Scope     *string `json:"scope,omitempty"`
	UserAgent *string `json:"user_agent,omitempty"`
}

// What it answers; the key's fields are null for NOT_FOUND and MALFORMED.
type verifyReply struct {
	Valid        bool                   `json:"valid"`
	Code         string                 `json:"code"`
	KeyID        *string                `json:"key_id"`
	Name         *string                `json:"name"`
	Metadata     map[string]interface{} `json:"metadata"`
	Scopes       []string               `json:"scopes"`
	ExpiresAt    *string                `json:"expires_at"`
	RetryAfterMs *int64                 `json:"retry_after_ms"`
}

func orDash(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

func main() {
	socket := flag.String("socket", "", "verify socket (default $HEARE_AUTH_VERIFY_SOCKET, else /run/heare-auth/verify.sock)")
	scope := flag.String("scope", "", "scope the key must grant")
	timeout := flag.Duration("timeout", time.Second, "deadline of each call")
	repeat := flag.Int("repeat", 1, "verify each key this many times")
	flag.Parse()

	path := *socket
	if path == "" {
		path = os.Getenv("HEARE_AUTH_VERIFY_SOCKET")
	}
	if path == "" {
		path = "/run/heare-auth/verify.sock"
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	conn, err := varlink.NewConnection(ctx, "unix:"+path)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "heare-auth-verify: %s: %v\n", path, err)
		os.Exit(2)
	}
	defer conn.Close()

	ua := "heare-auth-verify (Go)"
	req := verifyRequest{UserAgent: &ua}
	if *scope != "" {
		req.Scope = scope
	}

	status := 0
	var took []time.Duration
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		req.Key = in.Text()
		var r verifyReply
		for i := 0; i < *repeat; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), *timeout)
			t0 := time.Now()
			err = conn.Call(ctx, "io.heare.Auth.Verify", req, &r)
			took = append(took, time.Since(t0))
			cancel()
			if err != nil {
				// A *varlink.Error (or InvalidParameter, ...) is an answer refused;
				// anything else is the connection.
				fmt.Fprintf(os.Stderr, "heare-auth-verify: %s: %v\n", path, err)
				os.Exit(2)
			}
		}
		fmt.Printf("%s %s (%s)\n", r.Code, orDash(r.KeyID), orDash(r.Name))
		if !r.Valid {
			status = 1
		}
	}
	if *repeat > 1 && len(took) > 0 {
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		at := func(q float64) float64 {
			return float64(took[int(q*float64(len(took)-1))].Nanoseconds()) / 1000
		}
		fmt.Fprintf(os.Stderr, "calls=%d p50_us=%.1f p99_us=%.1f\n", len(took), at(0.50), at(0.99))
	}
	os.Exit(status)
}
