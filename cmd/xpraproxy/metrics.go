package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xpraproxy/xpraproxy/loop"
)

// proxyCollector reads the proxy's counters at scrape time: the loops
// keep plain integers (no metric objects on the relay path), and workers
// are asked over their control sockets.
type proxyCollector struct {
	ctl *control

	sessions, buffered, workers *prometheus.Desc
	handshakes, bytes, packets  *prometheus.Desc
	workerStarts, workerCrashes *prometheus.Desc
	conns, loggingIn, refused   *prometheus.Desc
	evicted                     *prometheus.Desc
}

func newProxyCollector(ctl *control) *proxyCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("xpraproxy_"+name, help, labels, nil)
	}
	return &proxyCollector{
		ctl:           ctl,
		sessions:      d("sessions", "Open client connections (handshaking and relaying)."),
		buffered:      d("buffered_bytes", "Bytes held in user-space buffers, as of the last sweep."),
		workers:       d("workers", "Privilege-separated worker processes running."),
		handshakes:    d("handshakes_total", "Client handshakes by outcome.", "result"),
		bytes:         d("relayed_bytes_total", "Bytes relayed, by direction.", "direction"),
		packets:       d("relayed_packets_total", "xpra packets relayed, by direction.", "direction"),
		workerStarts:  d("worker_starts_total", "Worker processes started."),
		workerCrashes: d("worker_crashes_total", "Worker processes that died unexpectedly."),
		conns:         d("connections", "Client connections open in the main process (--max-connections)."),
		loggingIn:     d("login_connections", "Client connections not yet logged in (--max-login-connections)."),
		refused:       d("refused_connections_total", "Connections refused by the connection caps."),
		evicted:       d("evicted_connections_total", "Pre-login connections that made way for new ones when --max-login-connections was reached."),
	}
}

func (p *proxyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{p.sessions, p.buffered, p.workers, p.handshakes, p.bytes, p.packets,
		p.workerStarts, p.workerCrashes, p.conns, p.loggingIn, p.refused, p.evicted} {
		ch <- d
	}
}

func (p *proxyCollector) Collect(ch chan<- prometheus.Metric) {
	c := p.ctl.srv.Counters()
	ch <- prometheus.MustNewConstMetric(p.conns, prometheus.GaugeValue, float64(c.Connections))
	ch <- prometheus.MustNewConstMetric(p.loggingIn, prometheus.GaugeValue, float64(c.LoggingIn))
	ch <- prometheus.MustNewConstMetric(p.refused, prometheus.CounterValue, float64(c.Refused))
	ch <- prometheus.MustNewConstMetric(p.evicted, prometheus.CounterValue, float64(c.Evicted))
	nworkers := 0
	if sup := p.ctl.sup; sup != nil {
		var wc loop.Counters
		wc, nworkers = sup.Counters()
		c.Sessions += wc.Sessions
		c.Buffered += wc.Buffered
		c.C2S, c.S2C = c.C2S.Plus(wc.C2S), c.S2C.Plus(wc.S2C)
		for k, v := range wc.Handshakes {
			c.Handshakes[k] += v
		}
		ch <- prometheus.MustNewConstMetric(p.workerStarts, prometheus.CounterValue, float64(sup.Started.Load()))
		ch <- prometheus.MustNewConstMetric(p.workerCrashes, prometheus.CounterValue, float64(sup.Crashed.Load()))
	}
	ch <- prometheus.MustNewConstMetric(p.sessions, prometheus.GaugeValue, float64(c.Sessions))
	ch <- prometheus.MustNewConstMetric(p.buffered, prometheus.GaugeValue, float64(c.Buffered))
	ch <- prometheus.MustNewConstMetric(p.workers, prometheus.GaugeValue, float64(nworkers))
	for k, v := range c.Handshakes {
		ch <- prometheus.MustNewConstMetric(p.handshakes, prometheus.CounterValue, float64(v), k)
	}
	ch <- prometheus.MustNewConstMetric(p.bytes, prometheus.CounterValue, float64(c.C2S.Bytes), "client_to_server")
	ch <- prometheus.MustNewConstMetric(p.bytes, prometheus.CounterValue, float64(c.S2C.Bytes), "server_to_client")
	ch <- prometheus.MustNewConstMetric(p.packets, prometheus.CounterValue, float64(c.C2S.Packets), "client_to_server")
	ch <- prometheus.MustNewConstMetric(p.packets, prometheus.CounterValue, float64(c.S2C.Packets), "server_to_client")
}

// serveMetrics starts the --metrics endpoint; the returned func stops it.
func serveMetrics(addr string, ctl *control, log *slog.Logger) (func(), error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newProxyCollector(ctl), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint failed", "err", err)
		}
	}()
	log.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		hs.Shutdown(ctx)
	}, nil
}
