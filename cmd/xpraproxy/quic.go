package main

import (
	"log/slog"

	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/quicfront"
)

// splitQUIC takes the --bind-quic listeners (udp) out of those the event
// loops serve: quic-go owns their sockets (quicfront).
func splitQUIC(ls []loop.Listener) (stream, quic []loop.Listener) {
	for _, l := range ls {
		if l.Network == "udp" {
			quic = append(quic, l)
		} else {
			stream = append(stream, l)
		}
	}
	return stream, quic
}

// quicFronts are the running QUIC listeners.
type quicFronts []*quicfront.Server

// openQUIC binds every QUIC listener's UDP socket now (an error before
// anything serves) and serves them once srv serves: their sessions run on
// its loops (ServeStream), as root spliced to a worker like a TLS one.
func openQUIC(srv *loop.Server, ls []loop.Listener, o *proxyOptions, log *slog.Logger) (quicFronts, error) {
	var fronts quicFronts
	_, logins := o.connectionCaps()
	perSource := o.maxPerSource
	if perSource <= 0 {
		perSource = logins // 0: no per-address cap, as for tcp
	}
	for _, l := range ls {
		f, err := quicfront.Listen(quicfront.Options{
			Address: l.Address, TLS: l.TLS, Config: l.Config, HTML: l.HTML, Streams: srv,
			MaxPerSource: perSource, MaxPending: logins,
			LoginTimeout: l.Config.LoginTimeout, Log: log,
		})
		if err != nil {
			fronts.Close()
			return nil, err
		}
		fronts = append(fronts, f)
	}
	for _, f := range fronts {
		go func() {
			<-srv.Ready()
			if err := f.Serve(); err != nil {
				log.Error("quic listener failed", "listener", "quic://"+f.Addr().String(), "err", err)
			}
		}()
	}
	return fronts, nil
}

// Close stops every QUIC listener and its connections.
func (fs quicFronts) Close() {
	for _, f := range fs {
		f.Close()
	}
}
