package services_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/services"
)

// received is what a test server saw of one request.
type received struct {
	Method     string
	RequestURI string
	Header     http.Header
	Body       string
}

// recorder is an httptest server that records requests and answers with handle.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []received
}

func newRecorder(t *testing.T, handle http.HandlerFunc) *recorder {
	t.Helper()
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, received{req.Method, req.RequestURI, req.Header.Clone(), string(body)})
		r.mu.Unlock()
		handle(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.reqs...)
}

func jsonHandler(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// newCaller registers each server under its name, with base_url = server URL + prefix.
func newCaller(t *testing.T, cfg services.Config, svcs ...services.Service) *services.Caller {
	t.Helper()
	reg, err := services.NewRegistry(svcs...)
	require.NoError(t, err)
	cfg.Registry = reg
	c, err := services.NewCaller(cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func service(t *testing.T, name, baseURL string) services.Service {
	t.Helper()
	u, err := services.ParseBaseURL(baseURL)
	require.NoError(t, err)
	return services.Service{Name: name, BaseURL: u}
}

func TestCallSendsRequest(t *testing.T) {
	srv := newRecorder(t, jsonHandler(200, `{"ok":true}`))
	svc := service(t, "studio", srv.URL+"/api/v1/")
	svc.Headers = map[string]string{"Authorization": "Bearer s3cret", "Accept": "text/plain"}
	c := newCaller(t, services.Config{}, svc)

	body := map[string]any{"blob_id": "b1", "n": 2}
	tests := []struct {
		name       string
		req        services.Request
		wantMethod string
		wantURI    string
		wantBody   string
	}{
		{"post with body", services.Request{Method: "POST", Path: "/blobs/validate", Body: body}, "POST", "/api/v1/blobs/validate", `{"blob_id":"b1","n":2}`},
		{"method defaults to POST", services.Request{Path: "/x", Body: []int{1}}, "POST", "/api/v1/x", `[1]`},
		{"lower-case method", services.Request{Method: "put", Path: "/x", Body: "s"}, "PUT", "/api/v1/x", `"s"`},
		{"patch", services.Request{Method: "PATCH", Path: "/x", Body: json.RawMessage(`{"a": 1}`)}, "PATCH", "/api/v1/x", `{"a":1}`},
		{"get sends no body", services.Request{Method: "GET", Path: "/blobs/b1", Body: body}, "GET", "/api/v1/blobs/b1", ""},
		{"delete sends no body", services.Request{Method: "DELETE", Path: "/blobs/b1", Body: body}, "DELETE", "/api/v1/blobs/b1", ""},
		{"escaped segment and query", services.Request{Method: "GET", Path: "/blobs/a%2Fb%20c?fields=x&y=%26"}, "GET", "/api/v1/blobs/a%2Fb%20c?fields=x&y=%26", ""},
		{"post without body", services.Request{Method: "POST", Path: "/ping"}, "POST", "/api/v1/ping", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(srv.requests())
			req := tt.req
			req.Service = "studio"
			req.IdempotencyKey = "exec-1:validate:1"
			req.ExecutionID = "exec-1"
			req.StepID = "validate"
			req.Attempt = 3
			res := c.Call(context.Background(), req)
			require.True(t, res.OK(), res.Error)
			assert.Equal(t, 200, res.StatusCode)
			assert.Equal(t, map[string]any{"ok": true}, res.Body)
			assert.Positive(t, res.Duration)

			reqs := srv.requests()
			require.Len(t, reqs, before+1)
			got := reqs[before]
			assert.Equal(t, tt.wantMethod, got.Method)
			assert.Equal(t, tt.wantURI, got.RequestURI)
			assert.Equal(t, tt.wantBody, got.Body)
			if tt.wantBody != "" {
				assert.Equal(t, "application/json", got.Header.Get("Content-Type"))
			} else {
				assert.Empty(t, got.Header.Get("Content-Type"))
			}
			assert.Equal(t, "application/json", got.Header.Get("Accept"), "memmie's Accept wins over the configured one")
			assert.Equal(t, "Bearer s3cret", got.Header.Get("Authorization"))
			assert.Equal(t, "exec-1:validate:1", got.Header.Get("Idempotency-Key"))
			assert.Equal(t, "exec-1", got.Header.Get("X-Memmie-Execution-Id"))
			assert.Equal(t, "validate", got.Header.Get("X-Memmie-Step-Id"))
			assert.Equal(t, "3", got.Header.Get("X-Memmie-Attempt"))
			assert.Equal(t, "memmie", got.Header.Get("User-Agent"))
		})
	}
}

func TestCallOmitsUnsetHeaders(t *testing.T) {
	srv := newRecorder(t, jsonHandler(200, `{}`))
	c := newCaller(t, services.Config{}, service(t, "s", srv.URL))
	res := c.Call(context.Background(), services.Request{Service: "s", Path: "/"})
	require.True(t, res.OK(), res.Error)
	h := srv.requests()[0].Header
	for _, k := range []string{"Idempotency-Key", "X-Memmie-Execution-Id", "X-Memmie-Step-Id", "X-Memmie-Attempt", "Authorization"} {
		assert.Empty(t, h.Values(k), k)
	}
	assert.Equal(t, "/", srv.requests()[0].RequestURI)
}

func TestCallDecodesResponse(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		status      int
		body        string
		wantBody    any
		wantKind    services.ErrorKind
	}{
		{"json object", "application/json", 200, `{"a":[1,"x",null]}`, map[string]any{"a": []any{1.0, "x", nil}}, ""},
		{"json with charset", "application/json; charset=utf-8", 200, `[true]`, []any{true}, ""},
		{"problem json", "application/problem+json", 200, `{"t":1}`, map[string]any{"t": 1.0}, ""},
		{"undeclared json", "", 201, `{"id":"x"}`, map[string]any{"id": "x"}, ""},
		{"undeclared text", "", 200, `hello`, "hello", ""},
		{"text stays text", "text/plain", 200, `123`, "123", ""},
		{"html", "text/html", 200, `<p>hi</p>`, "<p>hi</p>", ""},
		{"empty", "", 204, ``, nil, ""},
		{"declared json that is not", "application/json", 200, `{"a":`, nil, services.KindDecode},
		{"trailing garbage", "application/json", 200, `{} x`, nil, services.KindDecode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRecorder(t, func(w http.ResponseWriter, _ *http.Request) {
				if tt.contentType != "" {
					w.Header().Set("Content-Type", tt.contentType)
				} else {
					w.Header()["Content-Type"] = nil // no sniffing
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			c := newCaller(t, services.Config{}, service(t, "s", srv.URL))
			res := c.Call(context.Background(), services.Request{Service: "s", Method: "GET", Path: "/r"})
			assert.Equal(t, tt.wantKind, res.ErrorKind, res.Error)
			assert.Equal(t, tt.status, res.StatusCode)
			assert.Equal(t, tt.wantBody, res.Body)
		})
	}
}

func TestCallHTTPErrors(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	long := strings.Repeat("é", 400)
	tests := []struct {
		name          string
		status        int
		retryAfter    string
		body          string
		wantInError   string
		wantBody      any
		wantRetry     time.Duration
		wantRetryable bool
	}{
		{"bad request", 400, "", `{"error":"blob_id missing"}`, `POST s /v: HTTP 400 Bad Request: {"error":"blob_id missing"}`, map[string]any{"error": "blob_id missing"}, 0, false},
		{"not found", 404, "", ``, "HTTP 404 Not Found", nil, 0, false},
		{"conflict", 409, "", `{}`, "HTTP 409", map[string]any{}, 0, false},
		{"server error", 500, "", `{"error":"boom"}`, "HTTP 500 Internal Server Error: {\"error\":\"boom\"}", map[string]any{"error": "boom"}, 0, true},
		{"too many requests, seconds", 429, "7", `{}`, "HTTP 429", map[string]any{}, 7 * time.Second, true},
		{"unavailable, date", 503, now.Add(90 * time.Second).Format(http.TimeFormat), `{}`, "HTTP 503", map[string]any{}, 90 * time.Second, true},
		{"unavailable, date in the past", 503, now.Add(-time.Hour).Format(http.TimeFormat), `{}`, "HTTP 503", map[string]any{}, 0, true},
		{"unavailable, garbage", 503, "soon", `{}`, "HTTP 503", map[string]any{}, 0, true},
		{"retry-after only for 429 and 503", 500, "7", `{}`, "HTTP 500", map[string]any{}, 0, true},
		{"long body is cut", 502, "", long, strings.Repeat("é", 128) + "…", long, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRecorder(t, func(w http.ResponseWriter, _ *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.Header().Set("Content-Type", "application/json")
				if !strings.HasPrefix(tt.body, "{") {
					w.Header().Set("Content-Type", "text/plain")
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			c := newCaller(t, services.Config{Now: func() time.Time { return now }}, service(t, "s", srv.URL))
			res := c.Call(context.Background(), services.Request{Service: "s", Path: "/v", Body: map[string]any{}})
			assert.Equal(t, services.KindHTTP, res.ErrorKind)
			assert.Equal(t, tt.status, res.StatusCode)
			assert.Contains(t, res.Error, tt.wantInError)
			assert.Equal(t, tt.wantBody, res.Body)
			assert.Equal(t, tt.wantRetry, res.RetryAfter)
			assert.Equal(t, tt.wantRetryable, res.Retryable())
		})
	}
}

func TestCallDoesNotFollowRedirects(t *testing.T) {
	elsewhere := newRecorder(t, jsonHandler(200, `{}`))
	srv := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusFound)
	})
	c := newCaller(t, services.Config{}, service(t, "s", srv.URL))
	res := c.Call(context.Background(), services.Request{Service: "s", Method: "GET", Path: "/go"})
	assert.Equal(t, services.KindHTTP, res.ErrorKind)
	assert.Equal(t, http.StatusFound, res.StatusCode)
	assert.Empty(t, elsewhere.requests())
}

func TestCallTimeout(t *testing.T) {
	// The handler holds the request until the client gives up or the test ends.
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hang := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}
	hangMidBody := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, `{"partial":`)
		w.(http.Flusher).Flush()
		hang(w, r)
	}
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		reqTimeout time.Duration
		svcTimeout time.Duration
		cfgTimeout time.Duration
		wantStatus int
	}{
		{"request timeout", hang, 100 * time.Millisecond, 0, 0, 0},
		{"service timeout is shorter", hang, time.Hour, time.Second / 10, 0, 0},
		{"request timeout is shorter", hang, 100 * time.Millisecond, time.Hour, 0, 0},
		{"default timeout", hang, 0, 0, 100 * time.Millisecond, 0},
		{"slow body", hangMidBody, 100 * time.Millisecond, 0, 0, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRecorder(t, tt.handler)
			svc := service(t, "s", srv.URL)
			svc.Timeout = tt.svcTimeout
			c := newCaller(t, services.Config{DefaultTimeout: tt.cfgTimeout}, svc)

			start := time.Now()
			res := c.Call(context.Background(), services.Request{Service: "s", Path: "/slow", Timeout: tt.reqTimeout})
			elapsed := time.Since(start)
			assert.Equal(t, services.KindTimeout, res.ErrorKind, res.Error)
			assert.Equal(t, tt.wantStatus, res.StatusCode)
			assert.Contains(t, res.Error, "within 100ms")
			assert.True(t, res.Retryable())
			assert.GreaterOrEqual(t, elapsed, 100*time.Millisecond)
			assert.Less(t, elapsed, 3*time.Second, "the call must end soon after its timeout")
		})
	}
}

func TestCallCanceled(t *testing.T) {
	entered := make(chan struct{})
	srv := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})
	c := newCaller(t, services.Config{}, service(t, "s", srv.URL))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-entered
		cancel()
	}()
	res := c.Call(ctx, services.Request{Service: "s", Path: "/x"})
	assert.Equal(t, services.KindCanceled, res.ErrorKind, res.Error)
	assert.False(t, res.Retryable())
}

func TestCallNetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	c := newCaller(t, services.Config{}, service(t, "s", url))
	res := c.Call(context.Background(), services.Request{Service: "s", Path: "/x", Timeout: 5 * time.Second})
	assert.Equal(t, services.KindNetwork, res.ErrorKind)
	assert.Zero(t, res.StatusCode)
	assert.Contains(t, res.Error, "POST s /x: ")
	assert.Contains(t, res.Error, "refused")
	assert.True(t, res.Retryable())
}

func TestCallSizeLimits(t *testing.T) {
	const limit = 1024
	tests := []struct {
		name     string
		respSize int
		reqSize  int
		wantKind services.ErrorKind
		wantCall bool
	}{
		{"response at the limit", limit, 10, "", true},
		{"response over the limit", limit + 1, 10, services.KindTooLarge, true},
		{"request over the limit", 10, limit, services.KindTooLarge, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A JSON string of respSize bytes, quotes included.
			srv := newRecorder(t, jsonHandler(200, `"`+strings.Repeat("x", tt.respSize-2)+`"`))
			c := newCaller(t, services.Config{MaxRequestBytes: limit, MaxResponseBytes: limit}, service(t, "s", srv.URL))
			res := c.Call(context.Background(), services.Request{Service: "s", Path: "/x", Body: strings.Repeat("y", tt.reqSize)})
			assert.Equal(t, tt.wantKind, res.ErrorKind, res.Error)
			assert.Equal(t, tt.wantCall, len(srv.requests()) == 1)
			if tt.wantKind == services.KindTooLarge {
				assert.Contains(t, res.Error, fmt.Sprint(limit))
				assert.False(t, res.Retryable())
			}
		})
	}
}

func TestCallRejectsBadRequests(t *testing.T) {
	srv := newRecorder(t, jsonHandler(200, `{}`))
	c := newCaller(t, services.Config{}, service(t, "studio", srv.URL+"/api"))
	tests := []struct {
		name string
		req  services.Request
		kind services.ErrorKind
		want string
	}{
		{"unknown service", services.Request{Service: "nope", Path: "/x"}, services.KindUnknownService, `service "nope" is not registered (registered: studio)`},
		{"empty path", services.Request{Service: "studio", Path: ""}, services.KindInvalidRequest, "must start with /"},
		{"relative path", services.Request{Service: "studio", Path: "blobs"}, services.KindInvalidRequest, "must start with /"},
		{"other host", services.Request{Service: "studio", Path: "//evil.example/x"}, services.KindInvalidRequest, "must not name a host"},
		{"absolute url", services.Request{Service: "studio", Path: "http://evil.example/x"}, services.KindInvalidRequest, "must start with /"},
		{"dot dot", services.Request{Service: "studio", Path: "/a/../../admin"}, services.KindInvalidRequest, ". or .."},
		{"escaped dot dot", services.Request{Service: "studio", Path: "/a/%2e%2e/admin"}, services.KindInvalidRequest, ". or .."},
		{"dot", services.Request{Service: "studio", Path: "/a/./b"}, services.KindInvalidRequest, ". or .."},
		{"fragment", services.Request{Service: "studio", Path: "/a#b"}, services.KindInvalidRequest, "'#'"},
		{"backslash", services.Request{Service: "studio", Path: "/a\\..\\b"}, services.KindInvalidRequest, "'\\'"},
		{"escaped backslash", services.Request{Service: "studio", Path: "/a/%5c"}, services.KindInvalidRequest, "backslash"},
		{"bad escape", services.Request{Service: "studio", Path: "/a/%zz"}, services.KindInvalidRequest, "invalid URL escape"},
		{"control character", services.Request{Service: "studio", Path: "/a\nb"}, services.KindInvalidRequest, "invalid control character"},
		{"method", services.Request{Service: "studio", Method: "TRACE", Path: "/x"}, services.KindInvalidRequest, `method "TRACE"`},
		{"unencodable body", services.Request{Service: "studio", Path: "/x", Body: map[string]any{"f": func() {}}}, services.KindInvalidRequest, "encode body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := c.Call(context.Background(), tt.req)
			assert.Equal(t, tt.kind, res.ErrorKind)
			assert.Contains(t, res.Error, tt.want)
			assert.Zero(t, res.StatusCode)
			assert.False(t, res.Retryable())
		})
	}
	assert.Empty(t, srv.requests(), "no bad request reaches the service")
}

func TestNewCallerNeedsRegistry(t *testing.T) {
	_, err := services.NewCaller(services.Config{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Registry")
}

func FuzzJoinPath(f *testing.F) {
	for _, p := range []string{"/a/b", "/a%2Fb?x=1", "//h/x", "/a/../b", "/%2e%2e", "/a#b", "/?", "/a/%zz", "/\\"} {
		f.Add(p)
	}
	base, err := services.ParseBaseURL("https://svc.example:8443/api/v1/")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, path string) {
		u, err := services.JoinPath(base, path)
		if err != nil {
			return
		}
		if u.Scheme != "https" || u.Host != "svc.example:8443" || u.User != nil || u.Fragment != "" {
			t.Fatalf("JoinPath(%q) left the service: %s", path, u)
		}
		if !strings.HasPrefix(u.EscapedPath(), "/api/v1/") {
			t.Fatalf("JoinPath(%q) left the base path: %s", path, u)
		}
		for seg := range strings.SplitSeq(u.Path, "/") {
			if seg == ".." || seg == "." {
				t.Fatalf("JoinPath(%q) kept a dot segment: %s", path, u)
			}
		}
	})
}

func ExampleCaller_Call() {
	studio := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"valid":true,"path":%q,"key":%q}`, r.URL.Path, r.Header.Get("Idempotency-Key"))
	}))
	defer studio.Close()

	reg, _ := services.FromEnv([]string{"MEMMIE_SERVICE_STUDIO_URL=" + studio.URL + "/api"})
	caller, _ := services.NewCaller(services.Config{Registry: reg})
	defer caller.Close()

	res := caller.Call(context.Background(), services.Request{
		Service: "studio", Method: "POST", Path: "/blobs/validate",
		Body: map[string]any{"blob_id": "b1"}, IdempotencyKey: "e1:validate",
	})
	fmt.Println(res.StatusCode, res.ErrorKind == "", res.Body)
	// Output: 200 true map[key:e1:validate path:/api/blobs/validate valid:true]
}
