package loop

import (
	"errors"
	"os"
	"sync"
	"time"
)

// fileCache holds the HTML5 client's files in memory, shared by every
// connection: a response points into it and no connection keeps a copy.
// A file is read again when its size or time changes. Its size is bounded
// by maxCachedFile and maxCacheTotal.
type fileCache struct {
	mu    sync.Mutex
	files map[string]cachedFile
	total int
}

type cachedFile struct {
	data []byte
	mod  time.Time
}

const (
	maxCachedFile = 16 << 20
	maxCacheTotal = 64 << 20
)

var errFileTooLarge = errors.New("loop: file too large to serve")

// get returns the contents of path; the slice must not be modified.
func (fc *fileCache) get(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("loop: not a regular file")
	}
	if fi.Size() > maxCachedFile {
		return nil, errFileTooLarge
	}
	fc.mu.Lock()
	if f, ok := fc.files[path]; ok && f.mod.Equal(fi.ModTime()) && int64(len(f.data)) == fi.Size() {
		fc.mu.Unlock()
		return f.data, nil
	}
	fc.mu.Unlock()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.files == nil {
		fc.files = map[string]cachedFile{}
	}
	if old, ok := fc.files[path]; ok {
		fc.total -= len(old.data)
		delete(fc.files, path)
	}
	if fc.total+len(data) <= maxCacheTotal {
		fc.files[path] = cachedFile{data: data, mod: fi.ModTime()}
		fc.total += len(data)
	}
	return data, nil
}
