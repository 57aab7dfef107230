package api

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/tracing"
)

// Engine is what the API needs of the engine; *engine.Engine is one.
type Engine interface {
	Start(ctx context.Context, req engine.StartRequest) (executionID string, created bool, err error)
	Execution(ctx context.Context, id string) (*execution.State, error)
	ExecutionSeq(ctx context.Context, id string) (uint64, error)
	HistoryPage(ctx context.Context, id string, after uint64, limit int) (engine.HistoryPage, error)
	Cancel(ctx context.Context, id, reason string) error
	Retry(ctx context.Context, id string) error
	Ready(ctx context.Context) error
}

// DefaultMaxBodyBytes bounds request bodies: a definition file's limit.
const DefaultMaxBodyBytes = definitions.MaxFileSize

// Config configures the API.
type Config struct {
	// Registry serves and registers definitions. Required.
	Registry *registry.Registry
	// Engine serves executions. Without one, the execution endpoints answer 503 and /readyz
	// checks only the registry.
	Engine Engine
	// Views serves the lists of the projections (GET /v1/executions, GET /v1/queue,
	// GET /v1/deadletter) and the blobs (GET /v1/blobs/{id}, its deltas). Defaults to none
	// (no database configured): those endpoints answer 503.
	Views Views
	// Redriver sends dead letters back (POST /v1/deadletter/{id}/redrive), e.g. a
	// *deadletter.Writer on the engine's JetStream. Defaults to none: a redrive answers 503.
	Redriver Redriver
	// Postgres, when set, is a readiness check of the database (e.g. pgxpool.Pool.Ping):
	// /readyz fails with dependency "postgres" when it does, and a list that fails while it
	// does answers 503 with that dependency. Defaults to none: /readyz does not check a
	// database.
	Postgres func(ctx context.Context) error
	// MaxBodyBytes bounds every request body. Defaults to DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// ReadyTimeout bounds the checks of /readyz. Defaults to 2 s.
	ReadyTimeout time.Duration
	// Metrics serves GET /metrics (see package metrics). Defaults to none: /metrics answers
	// 404.
	Metrics http.Handler
	// Token, when set, is the bearer token every request but those of /healthz, /readyz and
	// /metrics must carry (Authorization: Bearer <token>); one without it is answered 401.
	// Defaults to none: no request needs a token.
	Token string
	// JetStream is the engine's JetStream context. With it, the API keeps the states it
	// folds (see CacheSize) and follows executions (GET /v1/executions/{id}?wait=, GET
	// /v1/executions/{id}/watch). Defaults to none: those two answer 501, and every answer
	// of an execution from the stream folds its whole history.
	JetStream jetstream.JetStream
	// CacheSize bounds the execution states kept, folded from their histories: a read of
	// one whose last sequence has not moved loads nothing, one whose sequence moved loads the
	// messages after it. Defaults to DefaultCacheSize.
	CacheSize int
	// MaxWatchers bounds the requests that follow executions at once (each holds an ordered
	// consumer on the executions stream); one more is answered 503. Defaults to
	// DefaultMaxWatchers.
	MaxWatchers int
	// MaxWait bounds ?wait= of GET /v1/executions/{id}; a longer one waits this long.
	// Defaults to DefaultMaxWait.
	MaxWait time.Duration
	// Heartbeat is how often GET /v1/executions/{id}/watch sends a comment when nothing
	// happens, so that a client gone is noticed and proxies keep the stream. Defaults to
	// DefaultHeartbeat.
	Heartbeat time.Duration
	// TracerProvider, when set, records a span for each start (POST /v1/executions), the
	// child of the request's traceparent when it has one, and the engine puts that span's
	// trace context on the queued event, so that the execution's spans, its HTTP calls and
	// its deltas join the caller's trace. Pass the engine's (engine.Config.TracerProvider).
	// Defaults to none: no span, and a request's traceparent is not read.
	TracerProvider trace.TracerProvider
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultCacheSize   = 1000
	DefaultMaxWatchers = 1000
	DefaultMaxWait     = time.Minute
	DefaultHeartbeat   = 15 * time.Second
)

// API is the HTTP handler of memmie's API.
type API struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
	// tracer is off without Config.TracerProvider.
	tracer tracing.Tracer
	// states and watchers are nil without Config.JetStream.
	states   *states
	watchers watchers
}

// New returns the API's handler.
func New(cfg Config) (*API, error) {
	if cfg.Registry == nil {
		return nil, errors.New("api: Config.Registry is required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.CacheSize = cmp.Or(cfg.CacheSize, DefaultCacheSize)
	cfg.MaxWatchers = cmp.Or(cfg.MaxWatchers, DefaultMaxWatchers)
	cfg.MaxWait = cmp.Or(cfg.MaxWait, DefaultMaxWait)
	cfg.Heartbeat = cmp.Or(cfg.Heartbeat, DefaultHeartbeat)
	switch {
	case cfg.CacheSize < 0:
		return nil, fmt.Errorf("api: Config.CacheSize %d is negative", cfg.CacheSize)
	case cfg.MaxWatchers < 0:
		return nil, fmt.Errorf("api: Config.MaxWatchers %d is negative", cfg.MaxWatchers)
	case cfg.MaxWait < 0:
		return nil, fmt.Errorf("api: Config.MaxWait %s is negative", cfg.MaxWait)
	case cfg.Heartbeat < 0:
		return nil, fmt.Errorf("api: Config.Heartbeat %s is negative", cfg.Heartbeat)
	}
	a := &API{cfg: cfg, log: cfg.Logger.With("component", "api"), mux: http.NewServeMux(), tracer: tracing.New(cfg.TracerProvider)}
	if cfg.JetStream != nil {
		a.states = newStates(cfg.JetStream, cfg.CacheSize)
		a.watchers = make(watchers, cfg.MaxWatchers)
	}
	a.routes()
	return a, nil
}

// ServeHTTP serves one request.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Token != "" && !public(r) && !a.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="memmie"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "this memmie needs a token: send Authorization: Bearer <token> (memmie commands: --api-token or MEMMIE_API_TOKEN)")
		return
	}
	a.mux.ServeHTTP(w, r)
}

// public reports whether r needs no token: probes and scrapes, which carry none.
func public(r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz", "/readyz", "/metrics":
		return true
	}
	return false
}

// authorized reports whether r carries the token. The hashes make the comparison take the
// same time whatever the lengths, so the answer's timing tells nothing of the token.
func (a *API) authorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got, want := sha256.Sum256([]byte(strings.TrimSpace(token))), sha256.Sum256([]byte(a.cfg.Token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

func (a *API) routes() {
	for _, kind := range []definitions.Kind{definitions.KindSchema, definitions.KindWorkflow, definitions.KindProvider} {
		plural := "/v1/" + string(kind) + "s"
		a.mux.HandleFunc("GET "+plural, a.listDefinitions(kind))
		a.mux.HandleFunc("GET "+plural+"/{id}", a.getDefinition(kind))
		a.mux.HandleFunc("PUT "+plural+"/{id}", a.putDefinition(kind))
		a.mux.HandleFunc("DELETE "+plural+"/{id}", a.deleteDefinition(kind))
	}
	a.mux.HandleFunc("POST /v1/executions", a.startExecution)
	a.mux.HandleFunc("GET /v1/executions", a.listExecutions)
	a.mux.HandleFunc("GET /v1/executions/{id}", a.getExecution)
	a.mux.HandleFunc("GET /v1/executions/{id}/events", a.executionEvents)
	a.mux.HandleFunc("GET /v1/executions/{id}/watch", a.watchExecution)
	a.mux.HandleFunc("POST /v1/executions/{id}/cancel", a.cancelExecution)
	a.mux.HandleFunc("POST /v1/executions/{id}/retry", a.retryExecution)
	a.mux.HandleFunc("GET /v1/queue", a.listQueue)
	a.mux.HandleFunc("GET /v1/blobs/{id}", a.getBlob)
	a.mux.HandleFunc("GET /v1/blobs/{id}/deltas", a.blobDeltas)
	a.mux.HandleFunc("GET /v1/blobs/{id}/diff", a.blobDiff)
	a.mux.HandleFunc("GET /v1/deadletter", a.listDeadLetters)
	a.mux.HandleFunc("GET /v1/deadletter/{id}", a.getDeadLetter)
	a.mux.HandleFunc("POST /v1/deadletter/{id}/redrive", a.redriveDeadLetter)
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	if a.cfg.Metrics != nil {
		a.mux.Handle("GET /metrics", a.cfg.Metrics)
	}
	a.mux.HandleFunc("/", a.fallback)
}

// fallback answers what no route matched: 405 when the path has routes for other methods,
// 404 otherwise, both in the API's error format (the mux's own answers are plain text).
func (a *API) fallback(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := a.mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path))
		return
	}
	writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
}

func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz reports ready when the engine (if any) is ready (NATS connected, streams present,
// handlers running), the registry follows its stream and the database (if configured)
// answers a ping. A failure names the first dependency down, in "dependency" and at the start
// of the message: nats, streams, handlers, definitions or postgres. The engine is asked first, so that NATS down is told as such rather than
// as the registry's failure to read its stream.
func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.ReadyTimeout)
	defer cancel()
	notReady := func(dep string, err error) {
		writeErrorBody(w, http.StatusServiceUnavailable, errorBody{Error: errorDetail{Code: "unavailable",
			Message: dep + ": " + err.Error(), Dependency: dep}})
	}
	if a.cfg.Engine != nil {
		if err := a.cfg.Engine.Ready(ctx); err != nil {
			var nr *engine.NotReadyError
			if errors.As(err, &nr) {
				notReady(nr.Dependency, nr.Err)
			} else {
				notReady("engine", err)
			}
			return
		}
	}
	if err := a.cfg.Registry.Ready(ctx); err != nil {
		notReady("definitions", err)
		return
	}
	if a.cfg.Postgres != nil {
		if err := a.cfg.Postgres(ctx); err != nil {
			notReady("postgres", err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// errorBody is the API's error format.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code     string               `json:"code"`
	Message  string               `json:"message"`
	Problems definitions.Problems `json:"problems,omitempty"`
	// Dependency names what is down, in an answer of /readyz.
	Dependency string `json:"dependency,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "internal error: the answer could not be encoded")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeErrorBody(w, status, errorBody{Error: errorDetail{Code: code, Message: message}})
}

func writeErrorBody(w http.ResponseWriter, status int, body errorBody) {
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// fail maps an error of the registry or the engine to its status and code. Unexpected errors
// are logged and answered 500.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		probs  definitions.Problems
		tooBig *http.MaxBytesError
		input  *engine.InputError
	)
	switch {
	case errors.As(err, &input):
		writeErrorBody(w, http.StatusUnprocessableEntity, errorBody{Error: errorDetail{Code: "invalid_input",
			Message: input.Error(), Problems: inputProblems(input)}})
	case errors.Is(err, engine.ErrIdempotencyConflict):
		writeError(w, http.StatusConflict, "idempotency_conflict", err.Error())
	case errors.As(err, &probs):
		msg := fmt.Sprintf("%d problems", len(probs))
		if len(probs) == 1 {
			msg = probs[0].String()
		}
		writeErrorBody(w, http.StatusUnprocessableEntity, errorBody{Error: errorDetail{Code: "invalid_definition", Message: msg, Problems: probs}})
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the body is larger than %d bytes", tooBig.Limit))
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, engine.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, engine.ErrWorkflowNotFound):
		writeError(w, http.StatusNotFound, "workflow_not_found", err.Error())
	case errors.Is(err, registry.ErrInUse):
		writeError(w, http.StatusConflict, "in_use", err.Error())
	case errors.Is(err, engine.ErrWorkflowInactive):
		writeError(w, http.StatusConflict, "workflow_inactive", err.Error())
	case errors.Is(err, engine.ErrState):
		writeError(w, http.StatusConflict, "invalid_state", err.Error())
	case errors.Is(err, engine.ErrInvalid), errors.Is(err, errBadRequest):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, errTooManyWatchers):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	case errors.Is(err, errNoFollow):
		writeError(w, http.StatusNotImplemented, "not_following", err.Error())
	case errors.Is(err, errNoEngine), errors.Is(err, errNoDatabase), errors.Is(err, errNoRedriver), errors.Is(err, engine.ErrNoDefinitions):
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		writeError(w, 499, "cancelled", err.Error())
	case errors.Is(err, errUnsupportedMedia):
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", err.Error())
	default:
		// The error may name streams, subjects or servers: it goes to the log, and the
		// client gets the id to find it there.
		id := uuid.NewString()
		w.Header().Set("X-Request-Id", id)
		a.log.Error("request failed", "request_id", id, "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", fmt.Sprintf("internal error (request id %s)", id))
	}
}

// inputProblems lists an input's violations as problems whose field is the JSON pointer into
// the input ("/blob_id"; "/" is the input itself).
func inputProblems(e *engine.InputError) definitions.Problems {
	probs := make(definitions.Problems, len(e.Problems))
	for i, p := range e.Problems {
		ptr, msg, ok := strings.Cut(p, ": ")
		if !ok {
			ptr, msg = "", p
		}
		probs[i] = definitions.Problem{Field: ptr, Message: msg}
	}
	return probs
}

var (
	errBadRequest       = errors.New("bad request")
	errNoEngine         = errors.New("this memmie serves no executions")
	errNoFollow         = errors.New("this memmie does not follow executions (no api.Config.JetStream): GET /v1/executions/{id} without ?wait")
	errUnsupportedMedia = errors.New("unsupported media type")
)

// jsonTypes are the media types of a JSON body; yamlTypes those of a YAML one (the first is
// the registered one, the others are in common use).
var (
	jsonTypes = []string{"application/json"}
	yamlTypes = []string{"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
)

// checkContentType returns an error that fail answers 415 unless the request's Content-Type is
// one of types, with no parameter but charset=utf-8.
func checkContentType(r *http.Request, types ...string) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return fmt.Errorf("%w: no Content-Type: send %s", errUnsupportedMedia, strings.Join(types, " or "))
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !slices.Contains(types, mt) {
		return fmt.Errorf("%w: Content-Type %q: send %s", errUnsupportedMedia, ct, strings.Join(types, " or "))
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return fmt.Errorf("%w: Content-Type %q: only charset=utf-8 is accepted", errUnsupportedMedia, ct)
		}
	}
	return nil
}

// badRequest returns an error that fail answers 400.
func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}
