package api_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/app/api"
)

func TestContentTypes(t *testing.T) {
	eng := &cannedEngine{}
	srv, _ := newServer(t, eng)
	start := `{"workflow_id": "w"}`
	schema := `{"id": "ct", "definition": {"type": "object"}}`
	tests := []struct {
		name, method, path, contentType, body string
		status                                int
	}{
		{"JSON start", "POST", "/v1/executions", "application/json", start, 202},
		{"JSON with charset", "POST", "/v1/executions", "application/json; charset=UTF-8", start, 202},
		{"text/plain start", "POST", "/v1/executions", "text/plain", start, 415},
		{"form start", "POST", "/v1/executions", "application/x-www-form-urlencoded", start, 415},
		{"no content type", "POST", "/v1/executions", "", start, 415},
		{"another charset", "POST", "/v1/executions", "application/json; charset=latin1", start, 415},
		{"malformed content type", "POST", "/v1/executions", "application/json;;;=", start, 415},
		{"cancel with a text body", "POST", "/v1/executions/e1/cancel", "text/plain", `{"reason": "r"}`, 415},
		{"cancel with a JSON body", "POST", "/v1/executions/e1/cancel", "application/json", `{"reason": "r"}`, 202},
		{"PUT JSON", "PUT", "/v1/schemas/ct", "application/json", schema, 200},
		{"PUT YAML", "PUT", "/v1/schemas/ct", "application/yaml", "id: ct\ndefinition: {type: object}\n", 200},
		{"PUT x-yaml", "PUT", "/v1/schemas/ct", "application/x-yaml", schema, 200},
		{"PUT text/yaml", "PUT", "/v1/schemas/ct", "text/yaml; charset=utf-8", schema, 200},
		{"PUT text/plain", "PUT", "/v1/schemas/ct", "text/plain", schema, 415},
		{"PUT no content type", "PUT", "/v1/schemas/ct", "", schema, 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := doAs(t, srv, tt.method, tt.path, tt.contentType, tt.body)
			require.Equal(t, tt.status, r.Status, r.Raw)
			if tt.status == http.StatusUnsupportedMediaType {
				assert.Equal(t, "unsupported_media_type", r.errorCode())
			}
		})
	}
	// Without a body (cancel and retry take an optional one) no Content-Type is needed.
	r := doAs(t, srv, "POST", "/v1/executions/e1/retry", "", "")
	assert.Equal(t, http.StatusAccepted, r.Status, r.Raw)
}

func TestNewServerSetsEveryLimit(t *testing.T) {
	s := api.NewServer(http.NotFoundHandler(), api.ServerConfig{})
	assert.Equal(t, api.DefaultReadHeaderTimeout, s.ReadHeaderTimeout)
	assert.Equal(t, api.DefaultReadTimeout, s.ReadTimeout)
	assert.Equal(t, api.DefaultWriteTimeout, s.WriteTimeout)
	assert.Equal(t, api.DefaultIdleTimeout, s.IdleTimeout)
	assert.Equal(t, api.DefaultMaxHeaderBytes, s.MaxHeaderBytes)

	s = api.NewServer(http.NotFoundHandler(), api.ServerConfig{Addr: ":1", ReadTimeout: time.Second, MaxHeaderBytes: 1})
	assert.Equal(t, ":1", s.Addr)
	assert.Equal(t, time.Second, s.ReadTimeout)
	assert.Equal(t, 1, s.MaxHeaderBytes)
}

// serveReal serves the API with cfg's limits on a local port.
func serveReal(t *testing.T, cfg api.ServerConfig) string {
	t.Helper()
	reg := startRegistryOn(t)
	h, err := api.New(api.Config{Registry: reg, Logger: testLogger(t)})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := api.NewServer(h, cfg)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// A client that sends its headers and then dribbles (or withholds) its body is cut off after
// ReadTimeout, rather than holding the connection for ever.
func TestSlowBodyIsCutOff(t *testing.T) {
	addr := serveReal(t, api.ServerConfig{ReadTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "PUT /v1/schemas/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"id\":")
	require.NoError(t, err)
	// The server closes the connection (it may first answer the read error); either way the
	// read ends well before the test's deadline.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(20*time.Second)))
	_, err = io.Copy(io.Discard, conn)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatal("the server kept a connection whose body never came")
	}
}

// Headers over MaxHeaderBytes are refused with 431.
func TestLargeHeadersAreRefused(t *testing.T) {
	addr := serveReal(t, api.ServerConfig{})
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	_, err = fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("b", 200<<10))
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		// The server may close before reading all of it; its answer is still there.
		t.Logf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
}
