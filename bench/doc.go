// Package bench is xpraproxy's load generator: simulated xpra servers and
// clients that speak the real protocol (frame/), driven by event loops
// (gnet) rather than a goroutine per connection, and the harness that runs
// a proxy under test (xpraproxy, xpra's own proxy, HAProxy, or none) between
// them and measures it.
//
// The simulated server answers hellos, echoes pings and streams draw
// packets with raw chunks, paced like xpra by the client's damage-sequence
// acknowledgements. The simulated client logs in with the hmac challenge
// (or skips it when nothing asks, as through HAProxy), then idles, pings,
// reads streams or reconnects, depending on the workload.
package bench
