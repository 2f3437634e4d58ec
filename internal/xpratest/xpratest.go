// Package xpratest is the shared harness for tests that talk xpra to a
// proxy:
//
//   - Server: a minimal xpra server of either generation (it answers in
//     the encoding the client writes) over tcp, ssl, ws or wss, with an
//     optional password challenge, that records what it received;
//   - Client: a minimal client (hello, challenge, pings), and the HTML5
//     client's login (browser.go);
//   - Conn and Host: a fake relay.Conn and relay.Host that drive one
//     relay.Session without a reactor (session.go);
//   - FreePort and NeedRoot (env.go).
//
// It stands in for the real peers where a test needs thousands of
// connections or exact control of the bytes; the interop tests in
// cmd/xpraproxy use the real xpra of both generations.
package xpratest
