//go:build tools

// Package xpraproxy pins dependencies that the architecture has chosen but
// no package imports yet: gnet (the reactor in loop/, pinned explicitly at
// v2.10.0 because the module proxy refuses @latest for it) and
// bytebufferpool (scratch buffers in relay/). The build tag keeps this file
// out of every build; it only stops `go mod tidy` from dropping the pins.
package xpraproxy

import (
	_ "github.com/panjf2000/gnet/v2"
	_ "github.com/valyala/bytebufferpool"
)
