package ui

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/registry"
)

//go:embed templates/*.html static/*
var files embed.FS

// Prefix is where the UI is mounted.
const Prefix = "/ui/"

// CookieName is the cookie that carries the API token once a browser gave it with ?token=.
const CookieName = "memmie_ui_token"

// Config configures the UI. It takes what api.Config takes, so that the pages call the same
// functions as the API's handlers.
type Config struct {
	// Registry serves the definitions page. Required.
	Registry *registry.Registry
	// Engine serves executions, their histories, cancel and retry. Defaults to none: those
	// pages say so.
	Engine api.Engine
	// Views serves the lists (executions, queue, dead letters) and blobs. Defaults to none
	// (no database): those pages say so.
	Views api.Views
	// Redriver redrives dead letters. Defaults to none: the redrive buttons answer an error.
	Redriver api.Redriver
	// Token, when set, is the API's token: a browser gives it once as ?token= on any page,
	// and gets it back as an HttpOnly cookie; a request with neither the cookie nor
	// Authorization: Bearer <token> is answered 401. Defaults to none.
	Token string
	// MaxRunning is the dispatcher's --max-running, shown on the queue page. Defaults to 0
	// (not shown).
	MaxRunning int
	// PageSize is the rows of a list page. Defaults to DefaultPageSize.
	PageSize int
	// LivePoll is how often a live page's server checks whether what it shows moved. Defaults
	// to 1 s.
	LivePoll time.Duration
	// MaxLive bounds the live streams open at once (one per open live page, each a read of
	// Postgres or of the stream every LivePoll): past it a page's stream is answered 503 and
	// the page stays as rendered (the browser tries its stream again later). Defaults to
	// DefaultMaxLive.
	MaxLive int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DefaultPageSize is Config.PageSize's default.
const DefaultPageSize = 50

// DefaultMaxLive is Config.MaxLive's default.
const DefaultMaxLive = 100

// UI is the web UI's handler, for the paths under Prefix.
type UI struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	pages   map[string]*template.Template
	streams chan struct{} // a token per live stream open
}

// New returns the UI's handler.
func New(cfg Config) (*UI, error) {
	if cfg.Registry == nil {
		return nil, errors.New("ui: Config.Registry is required")
	}
	cfg.PageSize = cmp.Or(cfg.PageSize, DefaultPageSize)
	cfg.LivePoll = cmp.Or(cfg.LivePoll, time.Second)
	cfg.MaxLive = cmp.Or(cfg.MaxLive, DefaultMaxLive)
	if cfg.MaxLive < 0 {
		return nil, fmt.Errorf("ui: MaxLive %d is negative", cfg.MaxLive)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	u := &UI{cfg: cfg, log: cfg.Logger.With("component", "ui"), mux: http.NewServeMux(), pages: map[string]*template.Template{},
		streams: make(chan struct{}, cfg.MaxLive)}
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("ui: parse the layout: %w", err)
	}
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("ui: list the templates: %w", err)
	}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(files, n)
		if err != nil {
			return nil, fmt.Errorf("ui: parse %s: %w", n, err)
		}
		u.pages[name] = t
	}
	u.routes()
	return u, nil
}

func (u *UI) routes() {
	static, _ := fs.Sub(files, "static")
	u.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	u.mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/executions", http.StatusSeeOther)
	})
	u.mux.HandleFunc("GET /ui/executions", u.executions)
	u.mux.HandleFunc("GET /ui/executions/live", u.executionsLive)
	u.mux.HandleFunc("GET /ui/executions/{id}", u.execution)
	u.mux.HandleFunc("GET /ui/executions/{id}/live", u.executionLive)
	u.mux.HandleFunc("POST /ui/executions/{id}/cancel", u.cancel)
	u.mux.HandleFunc("POST /ui/executions/{id}/retry", u.retry)
	u.mux.HandleFunc("GET /ui/blobs", u.blobForm)
	u.mux.HandleFunc("GET /ui/blobs/{id}", u.blob)
	u.mux.HandleFunc("GET /ui/deadletters", u.deadLetters)
	u.mux.HandleFunc("GET /ui/deadletters/{id}", u.deadLetter)
	u.mux.HandleFunc("POST /ui/deadletters/redrive", u.redrive)
	u.mux.HandleFunc("GET /ui/queue", u.queue)
	u.mux.HandleFunc("GET /ui/definitions", u.definitions)
}

// ServeHTTP serves one request under Prefix.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Token != "" {
		if t := r.URL.Query().Get("token"); t != "" && u.matches(t) {
			// Given once on a link: kept in a cookie that scripts cannot read, and taken out
			// of the address so that it is not in the history or a Referer.
			http.SetCookie(w, &http.Cookie{Name: CookieName, Value: t, Path: Prefix, HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			q := r.URL.Query()
			q.Del("token")
			to := *r.URL
			to.RawQuery = q.Encode()
			http.Redirect(w, r, to.RequestURI(), http.StatusSeeOther)
			return
		}
		if !u.authorized(r) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, "this memmie needs its API token: open /ui/?token=<token> once (memmie commands: --api-token or MEMMIE_API_TOKEN)")
			return
		}
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	u.mux.ServeHTTP(w, r)
}

func (u *UI) authorized(r *http.Request) bool {
	if c, err := r.Cookie(CookieName); err == nil && u.matches(c.Value) {
		return true
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && u.matches(strings.TrimSpace(token))
}

// matches compares hashes, so that the time taken tells nothing of the token.
func (u *UI) matches(token string) bool {
	got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(u.cfg.Token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// render writes page (a template of templates/) with data; fragment renders only its
// "fragment" block (what a live page refreshes).
func (u *UI) render(w http.ResponseWriter, r *http.Request, page string, data map[string]any) {
	u.renderStatus(w, r, http.StatusOK, page, data)
}

func (u *UI) renderStatus(w http.ResponseWriter, r *http.Request, status int, page string, data map[string]any) {
	t, ok := u.pages[page]
	if !ok {
		http.Error(w, "no page "+page, http.StatusInternalServerError)
		return
	}
	data["Page"] = page
	data["Query"] = r.URL.Query()
	name := "layout.html"
	if r.URL.Query().Get("fragment") == "1" {
		name = "fragment"
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, name, data); err != nil {
		u.log.Error("render page", "page", page, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// fail renders the error page.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, status int, err error) {
	if status >= 500 {
		u.log.Error("ui request failed", "path", r.URL.Path, "err", err)
	}
	u.renderStatus(w, r, status, "error", map[string]any{"Title": http.StatusText(status), "Error": err.Error()})
}

// back redirects to the page the form was on, with a message.
func back(w http.ResponseWriter, r *http.Request, to, key, msg string) {
	http.Redirect(w, r, to+"?"+url.Values{key: {msg}}.Encode(), http.StatusSeeOther)
}
