package services_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/services"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestParse(t *testing.T) {
	src := `
studio:
  base_url: http://localhost:3000/api/
  headers:
    Authorization: Bearer ${STUDIO_TOKEN}
    X-Tenant: ${TENANT}-${REGION}
    X-Empty: "${EMPTY}"
  timeout_seconds: 20
core:
  base_url: https://core.example.com
`
	reg, err := services.Parse([]byte(src), envMap(map[string]string{
		"STUDIO_TOKEN": "s3cret", "TENANT": "acme", "REGION": "eu", "EMPTY": "",
	}))
	require.NoError(t, err)
	assert.Equal(t, []string{"core", "studio"}, reg.Names())

	studio, ok := reg.Lookup("studio")
	require.True(t, ok)
	assert.Equal(t, "http://localhost:3000/api/", studio.BaseURL.String())
	assert.Equal(t, map[string]string{
		"Authorization": "Bearer s3cret",
		"X-Tenant":      "acme-eu",
		"X-Empty":       "",
	}, studio.Headers)
	assert.Equal(t, 20*time.Second, studio.Timeout)

	core, ok := reg.Lookup("core")
	require.True(t, ok)
	assert.Equal(t, "core.example.com", core.BaseURL.Host)
	assert.Empty(t, core.Headers)
	assert.Zero(t, core.Timeout)

	_, ok = reg.Lookup("nope")
	assert.False(t, ok)
}

func TestParseEmpty(t *testing.T) {
	for _, src := range []string{"", "# nothing\n", "~\n"} {
		reg, err := services.Parse([]byte(src), envMap(nil))
		require.NoError(t, err, "%q", src)
		assert.Zero(t, reg.Len())
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"unset variable", "studio:\n  base_url: http://h\n  headers:\n    Authorization: Bearer ${NOPE}\n", "4: studio.headers.Authorization: environment variable NOPE is not set"},
		{"two unset variables", "studio:\n  base_url: http://h\n  headers:\n    X-A: ${A}${B}\n", "variable A, B is not set"},
		{"malformed reference", "studio:\n  base_url: http://h\n  headers:\n    X-A: ${A\n", "4: studio.headers.X-A: malformed ${...}"},
		{"not http", "studio:\n  base_url: ftp://h/x\n", "2: studio.base_url: \"ftp://h/x\": must be an http or https URL"},
		{"no host", "studio:\n  base_url: http:///x\n", "2: studio.base_url: \"http:///x\": has no host"},
		{"relative", "studio:\n  base_url: /api\n", "must be an http or https URL"},
		{"query", "studio:\n  base_url: http://h/api?x=1\n", "must not have a query"},
		{"credentials", "studio:\n  base_url: http://u:p@h/api\n", "must not carry credentials"},
		{"missing base_url", "studio:\n  timeout_seconds: 3\n", "1: studio.base_url: missing"},
		{"unknown field", "studio:\n  base_url: http://h\n  timeout: 3\n", "3: studio.timeout: unknown field"},
		{"negative timeout", "studio:\n  base_url: http://h\n  timeout_seconds: -1\n", "3: studio.timeout_seconds: must be between 0 and 3600"},
		{"huge timeout", "studio:\n  base_url: http://h\n  timeout_seconds: 99999\n", "must be between 0 and 3600"},
		{"fractional timeout", "studio:\n  base_url: http://h\n  timeout_seconds: 1.5\n", "3: studio.timeout_seconds: must be a whole number"},
		{"own header", "studio:\n  base_url: http://h\n  headers:\n    Idempotency-Key: x\n", "4: studio.headers.Idempotency-Key: set by memmie"},
		{"memmie header", "studio:\n  base_url: http://h\n  headers:\n    x-memmie-step-id: x\n", "X-Memmie-* headers are set by memmie"},
		{"bad header name", "studio:\n  base_url: http://h\n  headers:\n    \"Bad Name\": x\n", "not a valid header name"},
		{"header line break", "studio:\n  base_url: http://h\n  headers:\n    X-A: \"a\\r\\nX-B: b\"\n", "line break"},
		{"header list", "studio:\n  base_url: http://h\n  headers:\n    X-A: [1]\n", "4: studio.headers.X-A: must be a string"},
		{"header twice", "studio:\n  base_url: http://h\n  headers:\n    X-A: a\n    x-a: b\n", "5: studio.headers.x-a: defined twice"},
		{"service twice", "a:\n  base_url: http://h\na:\n  base_url: http://h\n", "3: a: defined twice"},
		{"bad name", "\"my service\":\n  base_url: http://h\n", "1: my service: a service name must be"},
		{"service not a mapping", "studio: http://h\n", "1: studio: must be a mapping with base_url"},
		{"top level list", "- studio\n", "1: must be a mapping of service names"},
		{"not yaml", "studio: [\n", "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := services.Parse([]byte(tt.src), envMap(nil))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestLoadFile(t *testing.T) {
	t.Setenv("MEMMIE_TEST_TOKEN", "tok")
	path := filepath.Join(t.TempDir(), "services.yaml")
	require.NoError(t, os.WriteFile(path, []byte("studio:\n  base_url: http://h\n  headers:\n    Authorization: Bearer ${MEMMIE_TEST_TOKEN}\n"), 0o600))
	reg, err := services.LoadFile(path)
	require.NoError(t, err)
	s, _ := reg.Lookup("studio")
	assert.Equal(t, "Bearer tok", s.Headers["Authorization"])

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("studio:\n  base_url: nope\n"), 0o600))
	_, err = services.LoadFile(bad)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), bad+":2: studio.base_url:"), err.Error())

	_, err = services.LoadFile(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestFromEnv(t *testing.T) {
	reg, err := services.FromEnv([]string{
		"MEMMIE_SERVICE_STUDIO_URL=http://studio:3000/api",
		"MEMMIE_SERVICE_BLOB_STORE_URL=https://blobs.example.com",
		"MEMMIE_SERVICES=services.yaml",       // the --services flag, not a service
		"MEMMIE_SERVICE_STUDIO_TOKEN=x",       // not a URL variable
		"MEMMIE_SERVICE__URL=http://nameless", // no name: ignored
		"PATH=/usr/bin",
		"NOEQUALS",
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"blob_store", "studio"}, reg.Names())
	s, _ := reg.Lookup("studio")
	assert.Equal(t, "http://studio:3000/api", s.BaseURL.String())
	assert.Empty(t, s.Headers)
	assert.Zero(t, s.Timeout)
}

func TestFromEnvErrors(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    string
	}{
		{"bad url", []string{"MEMMIE_SERVICE_STUDIO_URL=studio:3000"}, "MEMMIE_SERVICE_STUDIO_URL: \"studio:3000\": must be an http or https URL"},
		{"empty", []string{"MEMMIE_SERVICE_STUDIO_URL="}, "MEMMIE_SERVICE_STUDIO_URL: empty"},
		{"same name twice", []string{"MEMMIE_SERVICE_STUDIO_URL=http://a", "MEMMIE_SERVICE_Studio_URL=http://b"}, "both name service \"studio\""},
		{"bad name", []string{"MEMMIE_SERVICE_A.B_URL=http://a"}, "service \"a.b\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := services.FromEnv(tt.environ)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestMerge(t *testing.T) {
	file, err := services.Parse([]byte(`
studio:
  base_url: http://file-studio/api
  headers: {Authorization: Bearer t}
  timeout_seconds: 10
core:
  base_url: http://file-core
`), envMap(nil))
	require.NoError(t, err)
	env, err := services.FromEnv([]string{"MEMMIE_SERVICE_STUDIO_URL=http://env-studio/v2", "MEMMIE_SERVICE_EXTRA_URL=http://extra"})
	require.NoError(t, err)

	reg := services.Merge(file, env)
	assert.Equal(t, []string{"core", "extra", "studio"}, reg.Names())
	studio, _ := reg.Lookup("studio")
	assert.Equal(t, "http://env-studio/v2", studio.BaseURL.String(), "the environment moves the service")
	assert.Equal(t, map[string]string{"Authorization": "Bearer t"}, studio.Headers, "and keeps the file's headers")
	assert.Equal(t, 10*time.Second, studio.Timeout, "and timeout")
	core, _ := reg.Lookup("core")
	assert.Equal(t, "http://file-core", core.BaseURL.String())

	// The inputs are untouched.
	s, _ := file.Lookup("studio")
	assert.Equal(t, "http://file-studio/api", s.BaseURL.String())

	assert.Equal(t, []string{"core", "studio"}, services.Merge(file, nil).Names())
	assert.Equal(t, []string{"extra", "studio"}, services.Merge(nil, env).Names())
	assert.Zero(t, services.Merge(nil, nil).Len())
}

func FuzzParse(f *testing.F) {
	f.Add("studio:\n  base_url: http://h/api\n  headers:\n    A: ${X}\n  timeout_seconds: 3\n")
	f.Add("a: {base_url: 'https://x:1', headers: {B: '${'}}\n")
	f.Add("- 1\n")
	f.Fuzz(func(t *testing.T, src string) {
		reg, err := services.Parse([]byte(src), envMap(map[string]string{"X": "x"}))
		if err != nil {
			return
		}
		for _, name := range reg.Names() {
			s, ok := reg.Lookup(name)
			if !ok || s.BaseURL == nil || (s.BaseURL.Scheme != "http" && s.BaseURL.Scheme != "https") || s.BaseURL.Host == "" {
				t.Fatalf("accepted a bad service %q: %+v", name, s)
			}
		}
	})
}
