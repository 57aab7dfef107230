package api

import (
	"cmp"
	"net/http"
	"time"
)

// ServerConfig bounds what one client can hold of the HTTP server: a client slower than these
// limits is cut off rather than kept. Two endpoints wait for events and extend their own
// deadlines: GET /v1/executions/{id}?wait=D (to D and 30 s more, D at most Config.MaxWait)
// and GET /v1/executions/{id}/watch (no read deadline; each write, heartbeats included, has
// Config.Heartbeat and 30 s); Config.MaxWatchers bounds how many run at once.
type ServerConfig struct {
	// Addr is the address to listen on, for ListenAndServe. Defaults to none (Serve on a
	// listener of your own).
	Addr string
	// ReadHeaderTimeout bounds reading the request line and headers. Defaults to 10 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading the whole request, body included (at most MaxBodyBytes, 1 MiB
	// by default). Defaults to 30 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end of the answer. It
	// must exceed the slowest call behind an endpoint: a PUT waits until this process's view
	// holds the new revision, and a page of events is one ordered-consumer read. Defaults to
	// 60 s.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection waits for its next request.
	// Defaults to 2 min.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers. Defaults to 64 KiB (net/http's own
	// default is 1 MiB; the API's requests carry a few short headers).
	MaxHeaderBytes int
}

// Defaults of ServerConfig.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
)

// NewServer returns the HTTP server of h with cfg's limits, defaults applied.
func NewServer(h http.Handler, cfg ServerConfig) *http.Server {
	return &http.Server{
		Addr:              cfg.Addr,
		Handler:           h,
		ReadHeaderTimeout: cmp.Or(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:       cmp.Or(cfg.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:      cmp.Or(cfg.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:       cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    cmp.Or(cfg.MaxHeaderBytes, DefaultMaxHeaderBytes),
	}
}
