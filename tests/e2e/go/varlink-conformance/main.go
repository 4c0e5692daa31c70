// varlink-conformance: drives heare-authd with the reference Go implementation of Varlink
// (github.com/varlink/go/varlink, as Debian packages it) and reports what it saw as one
// JSON document on stdout. It judges nothing: test_go_varlink.py holds the expectations.
//
//	varlink-conformance COMMAND < plan.json
//
// The plan names the sockets ("unix:/path") and, per command, the keys to use. A failure
// to connect or to encode the report exits 1 with a line on stderr; errors the daemon
// answers with are part of the report.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/varlink/go/varlink"
	"github.com/varlink/go/varlink/idl"
)

type verifyCall struct {
	Key   string  `json:"key"`
	Scope *string `json:"scope,omitempty"`
}

type plan struct {
	VerifySocket string       `json:"verify_socket"`
	AdminSocket  string       `json:"admin_socket"`
	Verifies     []verifyCall `json:"verifies"`
	Secret       string       `json:"secret"`
}

// The reply of io.heare.Auth.Verify as a client would declare it.
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

type key struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Verifications int64  `json:"verifications"`
}

type listReply struct {
	Keys []key `json:"keys"`
}

type info struct {
	Vendor     string   `json:"vendor"`
	Product    string   `json:"product"`
	Version    string   `json:"version"`
	URL        string   `json:"url"`
	Interfaces []string `json:"interfaces"`
}

// One deadline for the whole run, so that nothing waits forever on a daemon that does not
// answer.
const runTimeout = 60 * time.Second

var base context.Context

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "varlink-conformance: "+format+"\n", args...)
	os.Exit(1)
}

func ctx() context.Context {
	return base
}

func connect(address string) *varlink.Connection {
	c, err := varlink.NewConnection(ctx(), address)
	if err != nil {
		fail("connect %s: %v", address, err)
	}
	return c
}

// describe reports an error by the type the library gave it, with that type's fields.
func describe(err error) map[string]interface{} {
	if err == nil {
		return nil
	}
	switch e := err.(type) {
	case *varlink.MethodNotFound:
		return map[string]interface{}{"type": "MethodNotFound", "method": e.Method}
	case *varlink.InvalidParameter:
		return map[string]interface{}{"type": "InvalidParameter", "parameter": e.Parameter}
	case *varlink.InterfaceNotFound:
		return map[string]interface{}{"type": "InterfaceNotFound", "interface": e.Interface}
	case *varlink.MethodNotImplemented:
		return map[string]interface{}{"type": "MethodNotImplemented", "method": e.Method}
	case *varlink.Error:
		out := map[string]interface{}{"type": "Error", "name": e.Name}
		if raw, ok := e.Parameters.(*json.RawMessage); ok && raw != nil {
			out["parameters"] = raw
		}
		return out
	}
	return map[string]interface{}{"type": fmt.Sprintf("%T", err), "text": err.Error()}
}

func result(reply interface{}, err error) map[string]interface{} {
	if err != nil {
		return map[string]interface{}{"error": describe(err)}
	}
	return map[string]interface{}{"reply": reply}
}

// getInfo asks both sockets; every call without parameters sends "parameters": null.
func cmdInfo(p *plan) interface{} {
	out := map[string]interface{}{}
	for name, address := range map[string]string{"verify": p.VerifySocket, "admin": p.AdminSocket} {
		c := connect(address)
		var i info
		err := c.GetInfo(ctx(), &i.Vendor, &i.Product, &i.Version, &i.URL, &i.Interfaces)
		out[name] = result(i, err)
		var health map[string]interface{}
		err = c.Call(ctx(), "io.heare.Auth.GetHealth", nil, &health)
		out[name+"_health"] = result(health, err)
		c.Close()
	}
	return out
}

// The parser predates interface names with capitals (io.heare.Auth): only the interface
// line is lowercased, so that everything else is parsed as the daemon wrote it.
func lowercaseInterfaceLine(description string) string {
	lines := strings.Split(description, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "interface ") {
			lines[i] = strings.ToLower(l)
			break
		}
	}
	return strings.Join(lines, "\n")
}

func fieldNames(t *idl.Type) []string {
	names := []string{}
	if t == nil {
		return names
	}
	for _, f := range t.Fields {
		names = append(names, f.Name)
	}
	return names
}

func cmdIDL(p *plan) interface{} {
	c := connect(p.AdminSocket)
	defer c.Close()
	var interfaces []string
	if err := c.GetInfo(ctx(), nil, nil, nil, nil, &interfaces); err != nil {
		fail("GetInfo: %v", err)
	}
	out := map[string]interface{}{}
	for _, name := range interfaces {
		entry := map[string]interface{}{}
		out[name] = entry
		description, err := c.GetInterfaceDescription(ctx(), name)
		if err != nil {
			entry["error"] = describe(err)
			continue
		}
		parsed, err := idl.New(lowercaseInterfaceLine(description))
		if err != nil {
			entry["parse_error"] = err.Error()
			continue
		}
		methods := map[string]interface{}{}
		for _, m := range parsed.Methods {
			methods[m.Name] = map[string]interface{}{"in": fieldNames(m.In), "out": fieldNames(m.Out)}
		}
		errs := []string{}
		for _, e := range parsed.Errors {
			errs = append(errs, e.Name)
		}
		aliases := []string{}
		for _, a := range parsed.Aliases {
			aliases = append(aliases, a.Name)
		}
		entry["name"] = parsed.Name
		entry["methods"] = methods
		entry["errors"] = errs
		entry["aliases"] = aliases
	}
	// One the daemon does not serve.
	_, err := c.GetInterfaceDescription(ctx(), "org.example.Nope")
	out["org.example.Nope"] = map[string]interface{}{"error": describe(err)}
	return out
}

func cmdVerify(p *plan) interface{} {
	c := connect(p.VerifySocket)
	defer c.Close()
	out := []interface{}{}
	for _, v := range p.Verifies {
		var r verifyReply
		err := c.Call(ctx(), "io.heare.Auth.Verify", v, &r)
		out = append(out, result(r, err))
	}
	return out
}

func cmdErrors(p *plan) interface{} {
	out := map[string]interface{}{}
	c := connect(p.VerifySocket)
	defer c.Close()
	var ignored map[string]interface{}
	out["unknown_method"] = result(nil, c.Call(ctx(), "io.heare.Auth.NoSuchMethod", nil, &ignored))
	out["unknown_interface"] = result(nil, c.Call(ctx(), "org.example.Nope.Method", nil, &ignored))
	out["verify_without_key"] = result(nil, c.Call(ctx(), "io.heare.Auth.Verify", nil, &ignored))
	out["verify_unknown_parameter"] = result(nil, c.Call(ctx(), "io.heare.Auth.Verify",
		map[string]interface{}{"key": p.Secret, "bogus": 1}, &ignored))
	out["verify_key_not_a_string"] = result(nil, c.Call(ctx(), "io.heare.Auth.Verify",
		map[string]interface{}{"key": 5}, &ignored))
	out["admin_on_verify_socket"] = result(nil, c.Call(ctx(), "io.heare.AuthAdmin.ListKeys", nil,
		&ignored))
	// After all those errors the connection still answers.
	var r verifyReply
	err := c.Call(ctx(), "io.heare.Auth.Verify", verifyCall{Key: p.Secret}, &r)
	out["verify_after_errors"] = result(r, err)

	a := connect(p.AdminSocket)
	defer a.Close()
	out["create_without_name"] = result(nil, a.Call(ctx(), "io.heare.AuthAdmin.CreateKey", nil,
		&ignored))
	out["get_unknown_key"] = result(nil, a.Call(ctx(), "io.heare.AuthAdmin.GetKey",
		map[string]string{"id": "key_0000000000000000000"}, &ignored))
	return out
}

// receiveAll reads the replies of a call sent with More until one comes without continues.
func receiveAll(receive func(context.Context, interface{}) (uint64, error)) ([]interface{}, error) {
	replies := []interface{}{}
	for i := 0; i < 1000; i++ {
		var r listReply
		flags, err := receive(ctx(), &r)
		if err != nil {
			return replies, err
		}
		continues := flags&varlink.Continues != 0
		replies = append(replies, map[string]interface{}{"keys": r.Keys, "continues": continues})
		if !continues {
			return replies, nil
		}
	}
	return replies, fmt.Errorf("more than 1000 replies")
}

func cmdMore(p *plan) interface{} {
	out := map[string]interface{}{}
	c := connect(p.AdminSocket)
	defer c.Close()
	// Send with no parameters leaves them out; Call sends null.
	receive, err := c.Send(ctx(), "io.heare.AuthAdmin.ListKeys", nil, varlink.More)
	if err != nil {
		fail("send ListKeys: %v", err)
	}
	replies, err := receiveAll(receive)
	out["more"] = map[string]interface{}{"replies": replies, "error": describe(err)}

	var plain listReply
	err = c.Call(ctx(), "io.heare.AuthAdmin.ListKeys", nil, &plain)
	out["plain"] = result(plain, err)

	// "more" on a method with one answer: one reply, without continues.
	receive, err = c.Send(ctx(), "io.heare.Auth.Verify", verifyCall{Key: p.Secret}, varlink.More)
	if err != nil {
		fail("send Verify: %v", err)
	}
	var r verifyReply
	flags, err := receive(ctx(), &r)
	out["verify_more"] = map[string]interface{}{"reply": r, "continues": flags&varlink.Continues != 0,
		"error": describe(err)}

	var refresh map[string]interface{}
	err = c.Call(ctx(), "io.heare.AuthAdmin.Refresh", nil, &refresh)
	out["refresh"] = result(refresh, err)
	return out
}

func cmdOneway(p *plan) interface{} {
	out := map[string]interface{}{}
	c := connect(p.VerifySocket)
	defer c.Close()
	// A oneway Verify, and a oneway call that would be an error: neither may answer, so
	// the next reply on the connection is the next call's.
	if _, err := c.Send(ctx(), "io.heare.Auth.Verify", verifyCall{Key: p.Secret}, varlink.Oneway); err != nil {
		fail("send oneway Verify: %v", err)
	}
	if _, err := c.Send(ctx(), "io.heare.Auth.NoSuchMethod", nil, varlink.Oneway); err != nil {
		fail("send oneway NoSuchMethod: %v", err)
	}
	var i info
	err := c.GetInfo(ctx(), &i.Vendor, &i.Product, &i.Version, &i.URL, &i.Interfaces)
	out["get_info_after"] = result(i, err)
	var r verifyReply
	err = c.Call(ctx(), "io.heare.Auth.Verify", verifyCall{Key: p.Secret}, &r)
	out["verify_after"] = result(r, err)

	// Nothing else arrives: a read for a reply to the oneway calls times out.
	receive, err := c.Send(ctx(), "io.heare.Auth.GetHealth", nil, varlink.Oneway)
	if err != nil {
		fail("send oneway GetHealth: %v", err)
	}
	short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var stray json.RawMessage
	_, err = receive(short, &stray)
	// The socket's deadline or the context's, whichever the library noticed first.
	timedOut := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
	out["stray"] = map[string]interface{}{"timed_out": timedOut, "error": fmt.Sprint(err),
		"reply": stray}
	return out
}

func cmdUpgrade(p *plan) interface{} {
	out := map[string]interface{}{}
	c := connect(p.VerifySocket)
	defer c.Close()
	upgrade, err := c.Upgrade(ctx(), "io.heare.Auth.GetHealth", nil)
	if err != nil {
		fail("send upgrade: %v", err)
	}
	var reply map[string]interface{}
	_, _, err = upgrade(ctx(), &reply)
	out["upgrade"] = result(reply, err)
	// Refused, so the connection is still Varlink.
	var i info
	err = c.GetInfo(ctx(), &i.Vendor, &i.Product, &i.Version, &i.URL, &i.Interfaces)
	out["get_info_after"] = result(i, err)
	return out
}

// As a uid that is not an admin: the admin socket answers io.heare.Auth, and refuses
// io.heare.AuthAdmin.
func cmdNotAdmin(p *plan) interface{} {
	out := map[string]interface{}{}
	c := connect(p.AdminSocket)
	defer c.Close()
	var ignored map[string]interface{}
	out["list_keys"] = result(nil, c.Call(ctx(), "io.heare.AuthAdmin.ListKeys", nil, &ignored))
	out["create_key"] = result(nil, c.Call(ctx(), "io.heare.AuthAdmin.CreateKey",
		map[string]string{"name": "from-a-stranger"}, &ignored))
	receive, err := c.Send(ctx(), "io.heare.AuthAdmin.ListKeys", nil, varlink.More)
	if err != nil {
		fail("send ListKeys: %v", err)
	}
	replies, err := receiveAll(receive)
	out["list_keys_more"] = map[string]interface{}{"replies": replies, "error": describe(err)}
	var health map[string]interface{}
	err = c.Call(ctx(), "io.heare.Auth.GetHealth", nil, &health)
	out["health"] = result(health, err)
	return out
}

func main() {
	commands := map[string]func(*plan) interface{}{
		"info": cmdInfo, "idl": cmdIDL, "verify": cmdVerify, "errors": cmdErrors,
		"more": cmdMore, "oneway": cmdOneway, "upgrade": cmdUpgrade, "not-admin": cmdNotAdmin,
	}
	if len(os.Args) != 2 || commands[os.Args[1]] == nil {
		fail("usage: varlink-conformance info|idl|verify|errors|more|oneway|upgrade|not-admin < plan.json")
	}
	var cancel context.CancelFunc
	base, cancel = context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	var p plan
	if err := json.NewDecoder(os.Stdin).Decode(&p); err != nil {
		fail("plan: %v", err)
	}
	report := commands[os.Args[1]](&p)
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(report); err != nil {
		fail("report: %v", err)
	}
}
