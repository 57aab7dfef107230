package services

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ErrorKind says how a call failed. The empty kind is success.
type ErrorKind string

const (
	// KindNetwork: the request did not get a response (refused, reset, DNS, TLS, ...).
	KindNetwork ErrorKind = "network"
	// KindTimeout: the call's timeout ran out, before or while the response was read.
	KindTimeout ErrorKind = "timeout"
	// KindHTTP: the service answered with a status of 300 or more (redirects are not
	// followed).
	KindHTTP ErrorKind = "http"
	// KindDecode: a 2xx response declared JSON but its body is not JSON.
	KindDecode ErrorKind = "decode"
	// KindUnknownService: the request names a service that is not registered.
	KindUnknownService ErrorKind = "unknown_service"
	// KindTooLarge: the request or the response body is over its limit.
	KindTooLarge ErrorKind = "too_large"
	// KindInvalidRequest: the request itself is wrong (path, method, body not encodable).
	KindInvalidRequest ErrorKind = "invalid_request"
	// KindCanceled: the caller's context was cancelled (shutdown). Nothing is known of the
	// call's outcome; the work should be handed back, not recorded as a failure.
	KindCanceled ErrorKind = "canceled"
)

// Headers memmie sends on every call.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderExecutionID    = "X-Memmie-Execution-Id"
	HeaderStepID         = "X-Memmie-Step-Id"
	HeaderAttempt        = "X-Memmie-Attempt"
)

// Defaults of Config.
const (
	DefaultMaxRequestBytes  = 1 << 20
	DefaultMaxResponseBytes = 1 << 20
	DefaultTimeout          = 30 * time.Second
	DefaultUserAgent        = "memmie"
)

// errorSnippetBytes bounds how much of an error response's body goes into Result.Error.
const errorSnippetBytes = 256

// Config configures a Caller.
type Config struct {
	// Registry holds the services that may be called. Required.
	Registry *Registry
	// MaxRequestBytes bounds the encoded request body. Defaults to DefaultMaxRequestBytes
	// (1 MiB).
	MaxRequestBytes int
	// MaxResponseBytes bounds the response body. Defaults to DefaultMaxResponseBytes (1 MiB):
	// the body ends up in an event, and a NATS message is 1 MiB by default.
	MaxResponseBytes int
	// DefaultTimeout bounds a call when neither the request nor the service sets a timeout.
	// Defaults to DefaultTimeout (30 s).
	DefaultTimeout time.Duration
	// Now is the clock Retry-After dates are measured against. Defaults to time.Now.
	Now func() time.Time
	// UserAgent is sent on every call. Defaults to DefaultUserAgent.
	UserAgent string
	// TracerProvider, when set, records a client span per call (otelhttp) and sends its W3C
	// traceparent to the service. Defaults to none: no span, no traceparent.
	TracerProvider trace.TracerProvider
}

// Caller calls registered services over HTTP. It is safe for concurrent use; one Caller
// shares one connection pool.
type Caller struct {
	cfg       Config
	transport *http.Transport
	client    *http.Client
}

// NewCaller applies the defaults and checks cfg.
func NewCaller(cfg Config) (*Caller, error) {
	if cfg.Registry == nil {
		return nil, errors.New("new caller: Registry is required")
	}
	if cfg.MaxRequestBytes < 0 || cfg.MaxResponseBytes < 0 || cfg.DefaultTimeout < 0 {
		return nil, errors.New("new caller: MaxRequestBytes, MaxResponseBytes and DefaultTimeout must not be negative")
	}
	cfg.MaxRequestBytes = cmp.Or(cfg.MaxRequestBytes, DefaultMaxRequestBytes)
	cfg.MaxResponseBytes = cmp.Or(cfg.MaxResponseBytes, DefaultMaxResponseBytes)
	cfg.DefaultTimeout = cmp.Or(cfg.DefaultTimeout, DefaultTimeout)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.UserAgent = cmp.Or(cfg.UserAgent, DefaultUserAgent)
	transport := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    32,
		MaxConnsPerHost:        128,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	var rt http.RoundTripper = transport
	if cfg.TracerProvider != nil {
		rt = otelhttp.NewTransport(transport, otelhttp.WithTracerProvider(cfg.TracerProvider),
			otelhttp.WithPropagators(propagation.TraceContext{}))
	}
	return &Caller{
		cfg:       cfg,
		transport: transport,
		client: &http.Client{
			Transport: rt,
			// A workflow reaches only registered services: a redirect is returned as the
			// response, never followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Close releases idle connections.
func (c *Caller) Close() { c.transport.CloseIdleConnections() }

// Request is one call.
type Request struct {
	// Service is the registered name.
	Service string
	// Method is GET, POST, PUT, PATCH or DELETE. Defaults to POST.
	Method string
	// Path is joined onto the service's base_url: an absolute path, already escaped, that
	// may carry a query string. No scheme, host, fragment, "." or ".." segments.
	Path string
	// Body is encoded as JSON. GET and DELETE send no body; nil sends none.
	Body any
	// Timeout bounds the call, together with the service's timeout: the shorter wins.
	// 0 leaves the service's, or Config.DefaultTimeout when the service has none.
	Timeout time.Duration
	// IdempotencyKey is sent as Idempotency-Key when set.
	IdempotencyKey string
	// ExecutionID, StepID and Attempt are sent as X-Memmie-Execution-Id, X-Memmie-Step-Id
	// and X-Memmie-Attempt when set.
	ExecutionID string
	StepID      string
	Attempt     int
}

// Result is what a call came to. The caller only reports; whether to retry is the core's
// decision (Retryable is a documented default).
type Result struct {
	// StatusCode is the response's status, 0 when there was no response.
	StatusCode int
	// Body is the response body: decoded JSON when the response is JSON (declared, or
	// undeclared but valid), else the body as a string; nil when empty.
	Body any
	// ErrorKind is "" on success.
	ErrorKind ErrorKind
	// Error describes the failure for people: method, service, path, and for HTTP errors the
	// status and the start of the body.
	Error string
	// RetryAfter is the response's Retry-After (seconds, or an HTTP date measured from
	// Config.Now), for 429 and 503 only; 0 otherwise.
	RetryAfter time.Duration
	// Duration is how long the call took.
	Duration time.Duration
}

// OK reports whether the call succeeded.
func (r Result) OK() bool { return r.ErrorKind == "" }

// Retryable is a default view of whether trying again may help: network errors, timeouts,
// and HTTP 408, 425, 429, 500, 502, 503 and 504. Everything else (4xx, decode, too large,
// invalid or unknown) would fail the same way again.
func (r Result) Retryable() bool {
	switch r.ErrorKind {
	case KindNetwork, KindTimeout:
		return true
	case KindHTTP:
		switch r.StatusCode {
		case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable,
			http.StatusGatewayTimeout:
			return true
		}
	}
	return false
}

// Call calls the service. It never returns an error: every failure is in the Result.
func (c *Caller) Call(ctx context.Context, req Request) Result {
	start := time.Now()
	res := c.call(ctx, req)
	res.Duration = time.Since(start)
	return res
}

func (c *Caller) call(parent context.Context, req Request) Result {
	method := strings.ToUpper(req.Method)
	method = cmp.Or(method, http.MethodPost)
	what := fmt.Sprintf("%s %s %s", method, req.Service, req.Path)
	fail := func(kind ErrorKind, format string, args ...any) Result {
		return Result{ErrorKind: kind, Error: what + ": " + fmt.Sprintf(format, args...)}
	}

	svc, ok := c.cfg.Registry.Lookup(req.Service)
	if !ok {
		return fail(KindUnknownService, "service %q is not registered (registered: %s)",
			req.Service, strings.Join(c.cfg.Registry.Names(), ", "))
	}
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return fail(KindInvalidRequest, "method %q is not one of GET, POST, PUT, PATCH, DELETE", req.Method)
	}
	target, err := JoinPath(svc.BaseURL, req.Path)
	if err != nil {
		return fail(KindInvalidRequest, "%v", err)
	}

	var body []byte
	if req.Body != nil && method != http.MethodGet && method != http.MethodDelete {
		body, err = json.Marshal(req.Body)
		if err != nil {
			return fail(KindInvalidRequest, "encode body: %v", err)
		}
		if len(body) > c.cfg.MaxRequestBytes {
			return fail(KindTooLarge, "request body is %d bytes, over the limit of %d", len(body), c.cfg.MaxRequestBytes)
		}
	}

	timeout := c.cfg.DefaultTimeout
	switch {
	case req.Timeout > 0 && svc.Timeout > 0:
		timeout = min(req.Timeout, svc.Timeout)
	case req.Timeout > 0:
		timeout = req.Timeout
	case svc.Timeout > 0:
		timeout = svc.Timeout
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()

	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	httpReq, err := http.NewRequestWithContext(ctx, method, target.String(), reader)
	if err != nil {
		return fail(KindInvalidRequest, "%v", err)
	}
	for k, v := range svc.Headers {
		httpReq.Header.Set(k, v)
	}
	httpReq.Header.Set("Accept", "application/json")
	httpReq.Header.Set("User-Agent", c.cfg.UserAgent)
	if body != nil {
		httpReq.Header.Set("Content-Type", "application/json")
	}
	if req.IdempotencyKey != "" {
		httpReq.Header.Set(HeaderIdempotencyKey, req.IdempotencyKey)
	}
	if req.ExecutionID != "" {
		httpReq.Header.Set(HeaderExecutionID, req.ExecutionID)
	}
	if req.StepID != "" {
		httpReq.Header.Set(HeaderStepID, req.StepID)
	}
	if req.Attempt > 0 {
		httpReq.Header.Set(HeaderAttempt, strconv.Itoa(req.Attempt))
	}

	resp, err := c.client.Do(httpReq)
	if err != nil {
		kind := classify(parent, err)
		return fail(kind, "%s", describe(kind, timeout, err))
	}
	defer resp.Body.Close()

	res := Result{StatusCode: resp.StatusCode}
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(c.cfg.MaxResponseBytes)+1))
	if err != nil {
		kind := classify(parent, err)
		r := fail(kind, "read response: %s", describe(kind, timeout, err))
		r.StatusCode = resp.StatusCode
		return r
	}
	if len(data) > c.cfg.MaxResponseBytes {
		r := fail(KindTooLarge, "HTTP %d: response body is over the limit of %d bytes", resp.StatusCode, c.cfg.MaxResponseBytes)
		r.StatusCode = resp.StatusCode
		return r
	}

	declaredJSON, decoded, decodeErr := decodeBody(resp.Header.Get("Content-Type"), data)
	res.Body = decoded
	if resp.StatusCode >= 300 {
		res.ErrorKind = KindHTTP
		res.Error = fmt.Sprintf("%s: HTTP %d %s", what, resp.StatusCode, http.StatusText(resp.StatusCode))
		if s := snippet(data); s != "" {
			res.Error += ": " + s
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			res.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.cfg.Now())
		}
		return res
	}
	if declaredJSON && decodeErr != nil {
		res.ErrorKind = KindDecode
		res.Error = fmt.Sprintf("%s: HTTP %d: body declared as JSON is not JSON: %v", what, resp.StatusCode, decodeErr)
		res.Body = nil
	}
	return res
}

// JoinPath joins a request path onto a base URL, keeping the base's path prefix. The path
// must be absolute and already escaped; it may carry a query string. It may not carry a
// scheme, host, fragment, backslash, or "." or ".." segments, also when escaped.
func JoinPath(base *url.URL, path string) (*url.URL, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("path %q: must start with /", path)
	}
	if strings.HasPrefix(path, "//") {
		return nil, fmt.Errorf("path %q: must not name a host", path)
	}
	if strings.ContainsAny(path, "#\\") {
		return nil, fmt.Errorf("path %q: must not hold '#' or '\\'", path)
	}
	u, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", path, err)
	}
	if u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return nil, fmt.Errorf("path %q: must be a path, not a URL", path)
	}
	if strings.Contains(u.Path, "\\") {
		return nil, fmt.Errorf("path %q: must not hold a backslash", path)
	}
	for seg := range strings.SplitSeq(u.Path, "/") {
		if seg == "." || seg == ".." {
			return nil, fmt.Errorf("path %q: must not have . or .. segments", path)
		}
	}
	raw := strings.TrimSuffix(base.EscapedPath(), "/") + u.EscapedPath()
	decoded, err := url.PathUnescape(raw)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", path, err)
	}
	out := *base
	out.Path, out.RawPath = decoded, raw
	out.RawQuery = u.RawQuery
	return &out, nil
}

// classify tells a timeout from a cancellation from a network failure.
func classify(parent context.Context, err error) ErrorKind {
	if errors.Is(parent.Err(), context.Canceled) {
		return KindCanceled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return KindTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return KindTimeout
	}
	return KindNetwork
}

func describe(kind ErrorKind, timeout time.Duration, err error) string {
	switch kind {
	case KindTimeout:
		return fmt.Sprintf("no complete response within %s", timeout)
	case KindCanceled:
		return "cancelled"
	}
	// url.Error repeats method and URL, which the message already has.
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// decodeBody decodes a JSON body, else returns it as a string. declared reports whether the
// response said it is JSON; err is the decode error of a declared JSON body.
func decodeBody(contentType string, data []byte) (declared bool, body any, err error) {
	if len(data) == 0 {
		return false, nil, nil
	}
	if contentType != "" {
		mt, _, perr := mime.ParseMediaType(contentType)
		declared = perr == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
		if !declared {
			return false, string(data), nil
		}
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return declared, string(data), err
	}
	return declared, v, nil
}

// snippet is the start of a body, for error messages.
func snippet(data []byte) string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(data), "\uFFFD"))
	if len(s) <= errorSnippetBytes {
		return s
	}
	cut := errorSnippetBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// parseRetryAfter reads Retry-After: a number of seconds or an HTTP date. Anything else, and
// a date in the past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(365*24*3600))) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return max(t.Sub(now), 0)
}
