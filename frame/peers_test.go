package frame

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// These tests run Debian's real xpra 3.1.3 (installed by the README's test
// command). They fail, rather than skip, when it is missing: the golden
// fixtures are only trustworthy while xpra's own code still writes them.

func requirePeer(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: install the xpra peers (README's test command does): %v", path, err)
	}
}

// TestFixturesRegenerate reruns gen_fixtures.py with xpra's Python modules
// and checks it writes exactly the committed fixtures.
func TestFixturesRegenerate(t *testing.T) {
	requirePeer(t, "/usr/lib/python3/dist-packages/xpra/net/protocol.py")
	dir := t.TempDir()
	cmd := exec.Command("/usr/bin/python3", "testdata/gen_fixtures.py", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen_fixtures.py: %v\n%s", err, out)
	}
	n := 0
	err := filepath.WalkDir(filepath.Join("testdata", "golden"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join("testdata", "golden"), path)
		committed, _ := os.ReadFile(path)
		fresh, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Errorf("%s: not regenerated: %v", rel, err)
			return nil
		}
		if !bytes.Equal(committed, fresh) {
			t.Errorf("%s: xpra now writes different bytes", rel)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 150 {
		t.Fatalf("only %d fixtures compared", n)
	}
}

// TestLiveCapture records a fresh session between a real xpra server and
// client (capture.sh) and parses every packet of it.
func TestLiveCapture(t *testing.T) {
	requirePeer(t, "/usr/bin/xpra")
	requirePeer(t, "/usr/bin/Xvfb")
	if testing.Short() {
		t.Skip("starts a real xpra server; not in -short mode")
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", "frame/testdata/capture.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CAPTURE_OUT="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("capture.sh: %v\n%s", err, out)
	}
	for _, name := range []string{"c2s.bin", "s2c.bin"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var r Reader
		r.MaxPacketSize = AbsMaxPacketSize
		packets, frames, chunks := 0, 0, 0
		for len(data) > 0 {
			p, n, err := r.Next(data)
			if err != nil {
				t.Fatalf("%s: frame %d: %v", name, frames, err)
			}
			frames++
			if p == nil {
				chunks++
			} else {
				packets++
			}
			data = data[n:]
		}
		t.Logf("%s: %d packets, %d raw chunks", name, packets, chunks)
		if packets < 5 || (name == "s2c.bin" && chunks == 0) {
			t.Errorf("%s: %d packets and %d chunks is not a session", name, packets, chunks)
		}
	}
}
