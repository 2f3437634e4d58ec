package relay

import (
	"testing"
	"time"
)

func TestThrottle(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	th := NewThrottle(nil)
	th.now = func() time.Time { return now }
	for i := 0; i < 5; i++ {
		if ok, _ := th.Allow("1.2.3.4", "alice"); !ok {
			t.Fatalf("attempt %d refused within the burst", i)
		}
		th.Failed("1.2.3.4", "alice")
	}
	if ok, _ := th.Allow("1.2.3.4", "alice"); !ok {
		t.Fatal("refused at the burst")
	}
	th.Failed("1.2.3.4", "alice") // 6th: a 1 s lockout
	if ok, wait := th.Allow("1.2.3.4", "bob"); ok || wait != time.Second {
		t.Fatalf("6th failure: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := th.Allow("5.6.7.8", "alice"); !ok {
		t.Fatal("another address refused")
	}
	now = now.Add(1100 * time.Millisecond)
	th.Failed("1.2.3.4", "alice") // 7th: 2 s
	if _, wait := th.Allow("1.2.3.4", "alice"); wait != 2*time.Second {
		t.Fatalf("doubling: %v", wait)
	}
	// A username attacked from many addresses: those that failed are
	// refused, a clean address is not.
	for i := 0; i < 30; i++ {
		src := "10.0.0." + string(rune('a'+i))
		th.Failed(src, "carol")
	}
	if ok, _ := th.Allow("10.0.0.a", "carol"); ok {
		t.Error("a failing address of an attacked username was let through")
	}
	if ok, _ := th.Allow("192.168.1.1", "carol"); !ok {
		t.Error("a clean address was refused for an attacked username")
	}
	// Success forgets the address; the window forgets everything.
	th.Succeeded("5.6.7.8")
	now = now.Add(time.Hour)
	if ok, _ := th.Allow("1.2.3.4", "alice"); !ok {
		t.Error("lockout outlived its time")
	}
	// Bounded memory.
	small := NewThrottle(nil)
	small.MaxEntries = 100
	for i := 0; i < 10_000; i++ {
		small.Failed(string(rune(i))+"src", string(rune(i))+"user")
	}
	if n := len(small.sources) + len(small.users); n > 100 {
		t.Errorf("%d entries kept, limit 100", n)
	}
	var nilThrottle *Throttle
	if ok, _ := nilThrottle.Allow("x", "y"); !ok {
		t.Error("a nil throttle refuses")
	}
}

func TestConnectLimiter(t *testing.T) {
	l := &ConnectLimiter{PerTarget: 2}
	if !l.Acquire("a") || !l.Acquire("a") || l.Acquire("a") || !l.Acquire("b") {
		t.Fatal("per-target limit")
	}
	l.Release("a")
	if !l.Acquire("a") {
		t.Fatal("released slot not reusable")
	}
	var none *ConnectLimiter
	if !none.Acquire("a") {
		t.Fatal("nil limiter refuses")
	}
}
